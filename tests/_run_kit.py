# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Shared checks of `nnrconv run` / `nnrconv.session`: compressed models compute what the plain one does."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import nnrconv
from nnrconv import _inputs, _run, nnc
from nnrconv.core import get_registry

LOSSLESS = nnc.CodingOptions(lossless=True)


def plain_outputs(source: Path, npz: Path, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Synthesize one feed for `source`, save it to `npz`; return the feed and the plain model's outputs."""
    model = nnrconv.load(source)
    fmt = get_registry().get(model.source_format)
    feed = _inputs.synthesize_feeds(fmt.input_specs(model), 1, seed)[0]
    np.savez(npz, **feed)
    return feed, fmt.run(model, feed)


def compressed(source: Path, tmp_path: Path, embedded_name: str) -> list[Path]:
    """Lossless `.nnr` and embedded container of `source` (the container made from the `.nnr`)."""
    nnr, embedded = tmp_path / "m.nnr", tmp_path / embedded_name
    nnrconv.convert(source, nnr, options=LOSSLESS)
    nnrconv.convert(nnr, embedded)
    return [nnr, embedded]


def assert_same_outputs(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert list(got) == list(expected)
    for name, value in expected.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
        assert got[name].tobytes() == value.tobytes(), name


def assert_runs_like_plain(source: Path, tmp_path: Path, embedded_name: str) -> dict[str, np.ndarray]:
    """`_run.run` of the lossless `.nnr` and embedded file gives the plain model's outputs bit for bit."""
    npz = tmp_path / "inputs.npz"
    feed, expected = plain_outputs(source, npz)
    for path in compressed(source, tmp_path, embedded_name):
        assert_same_outputs(_run.run(path, npz).outputs, expected)
    return feed
