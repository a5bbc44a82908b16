# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""History-dependent significance probability (HDSP): the significance history of a tensor's updates."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class HdspHistory:
    """Significance history of history-dependent significance probability (HDSP).

    Per tensor name, one uint8 per element: 1 if the element's level was non-zero in any update
    decoded so far.  Encoder and decoder must keep identical histories (NNCodec's `HdspTool`):
    after coding or decoding an update, call `add` with the update's levels.  A tensor without
    history codes its hist_dep_sig_prob_enabled_flag as 0.
    """

    __slots__ = ("_hist",)

    def __init__(self) -> None:
        self._hist: dict[str, np.ndarray] = {}

    def get(self, name: str) -> np.ndarray | None:
        """The tensor's history (uint8, tensor shape), or None before its first update."""
        return self._hist.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._hist

    def add(self, name: str, levels: np.ndarray) -> None:
        """Mark the non-zero positions of an update's levels.

        Raises:
            ValueError: the shape differs from the tensor's earlier updates.
        """
        nonzero = np.asarray(levels) != 0
        hist = self._hist.get(name)
        if hist is None:
            self._hist[name] = nonzero.astype(np.uint8)
        elif hist.shape != nonzero.shape:
            raise ValueError(f"tensor {name!r}: update shape {nonzero.shape} differs from its history {hist.shape}")
        else:
            hist[nonzero] = 1


def smaller_with_or_without_hdsp(encode: Callable[[bool], bytes]) -> tuple[bytes, bool]:
    """NNCodec's HDSP decision: code a payload without and with the history, keep the smaller.

    `encode(use_history)` returns the complete payload; ties keep the one without HDSP (NNCodec's
    argmin over [off, on]).  Returns (payload, whether HDSP was used).
    """
    off = encode(False)
    on = encode(True)
    return (on, True) if len(on) < len(off) else (off, False)
