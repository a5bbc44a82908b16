# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Calibration feeds for the rate allocator: loaded from `.npz` files or synthesized, seeded.

NOTE: a thin adapter over `_check`'s input helpers until the shared `nnrconv._inputs` module
lands; the allocator only sees `Feeds` (input name -> array batched along the first axis).
"""

from __future__ import annotations

import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from nnrconv._check import random_inputs
from nnrconv.core import FormatError, InputSpec

__all__ = ["Feeds", "batched", "calibration_feeds", "parse_input_shapes"]

Feeds = list[dict[str, np.ndarray]]
"""Runs of the model: each a complete feed (input name -> array)."""

SYNTHETIC_SAMPLES = 8
"""Synthesized samples when no calibration data is given (one batch)."""


def parse_input_shapes(values: list[str] | tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """`name:1,3,224,224` strings -> {name: shape}.

    Raises:
        ValueError: a value is not `name:d1,d2,...` with positive integers.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for value in values:
        name, sep, dims = value.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.split(",") if d.strip())
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) <= 0:
            raise ValueError(f"--input-shape {value!r}: expected NAME:D1,D2,... with positive sizes")
        shapes[name] = shape
    return shapes


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise FormatError(f"{path}: cannot read calibration inputs (expected an .npz archive): {exc}") from exc


def _matching(path: Path, arrays: dict[str, np.ndarray], specs: list[InputSpec]) -> dict[str, np.ndarray]:
    wanted = {s.name for s in specs}
    missing, extra = wanted - set(arrays), set(arrays) - wanted
    if missing or extra:
        raise FormatError(
            f"{path}: inputs do not match the model: missing {sorted(missing)}, unexpected {sorted(extra)}"
        )
    return arrays


def calibration_feeds(
    path: str | Path | None,
    specs: list[InputSpec],
    *,
    shapes: dict[str, tuple[int, ...]] | None = None,
    seed: int = 0,
) -> tuple[Feeds, bool]:
    """The feeds the allocator measures on, and whether they are real data.

    A `.npz` is one batch (one array per input, first axis = samples); a folder holds one `.npz`
    per feed, arrays exactly as the model takes them. Without `path`, SYNTHETIC_SAMPLES seeded
    feeds (N(0,1) floats, small integers) shaped by `shapes` (free dimensions otherwise 1).
    """
    if path is not None:
        where = Path(path)
        if where.is_dir():
            files = sorted(where.glob("*.npz"))
            if not files:
                raise FormatError(f"{where}: the calibration folder holds no .npz file")
            return [_matching(f, _read_npz(f), specs) for f in files], True
        return [_matching(where, _read_npz(where), specs)], True
    shapes = shapes or {}
    unknown = set(shapes) - {s.name for s in specs}
    if unknown:
        raise ValueError(f"--input-shape names {sorted(unknown)}, which are not inputs of the model")
    sized = [replace(s, shape=shapes.get(s.name, s.shape)) for s in specs]
    return [random_inputs(sized, seed + i) for i in range(SYNTHETIC_SAMPLES)], False


def batched(feeds: Feeds) -> Feeds | None:
    """The feeds concatenated along the first axis into one run, when their shapes allow it."""
    if len(feeds) < 2:
        return None
    names = list(feeds[0])
    for feed in feeds:
        if list(feed) != names or any(
            feed[n].ndim == 0 or feed[n].shape[1:] != feeds[0][n].shape[1:] or feed[n].dtype != feeds[0][n].dtype
            for n in names
        ):
            return None
    return [{n: np.concatenate([f[n] for f in feeds]) for n in names}]
