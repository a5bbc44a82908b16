# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Output probes (what the allocator measures) and calibration feeds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nnrconv._rate._feeds import batched, calibration_feeds, parse_input_shapes
from nnrconv._rate._measure import _is_probability, _Margins, snr_of
from nnrconv.core import DType, FormatError, InputSpec


def test_probability_outputs_are_recognised():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    assert _is_probability(p)
    assert not _is_probability(p * 2) and not _is_probability(np.array([[0.5, -0.1, 0.6]], np.float32))


def test_margins_weigh_near_ties_more():
    ref = np.array([[0.51, 0.49], [0.99, 0.01]], np.float32)
    margins = _Margins(ref)
    near_tie_moved = np.array([[0.49, 0.51], [0.99, 0.01]], np.float32)
    confident_moved = np.array([[0.51, 0.49], [0.97, 0.03]], np.float32)
    assert margins.noise(ref)[0] == 0.0
    assert margins.noise(near_tie_moved)[0] > 10 * margins.noise(confident_moved)[0]


def test_snr_of_takes_the_worst_output():
    assert math.isclose(snr_of({"a": 1e-3, "b": 1e-2}), 20.0)
    assert snr_of({"a": 0.0}) == math.inf


def test_input_shapes_parse_and_refuse_garbage():
    assert parse_input_shapes(["x:1,3,48,192", "ids:2,7"]) == {"x": (1, 3, 48, 192), "ids": (2, 7)}
    for bad in ("x", "x:", "x:0,3", "x:a,b", ":1,2"):
        with pytest.raises(ValueError, match="--input-shape"):
            parse_input_shapes([bad])


def test_calibration_feeds_from_npz_folder_and_synthesis(tmp_path):
    specs = [InputSpec("x", DType.FLOAT, (1, 4))]
    np.savez(tmp_path / "one.npz", x=np.ones((16, 4), np.float32))
    feeds, real = calibration_feeds(tmp_path / "one.npz", specs)
    assert real and len(feeds) == 1 and feeds[0]["x"].shape == (16, 4)
    folder = tmp_path / "feeds"
    folder.mkdir()
    for i in range(3):
        np.savez(folder / f"{i}.npz", x=np.full((1, 4), i, np.float32))
    feeds, real = calibration_feeds(folder, specs)
    assert real and [f["x"][0, 0] for f in feeds] == [0, 1, 2]
    assert batched(feeds)[0]["x"].shape == (3, 4)
    np.savez(tmp_path / "bad.npz", y=np.ones(3))
    with pytest.raises(FormatError, match="missing \\['x'\\]"):
        calibration_feeds(tmp_path / "bad.npz", specs)
    first, real = calibration_feeds(None, specs, shapes={"x": (2, 4)}, seed=3)
    again, _ = calibration_feeds(None, specs, shapes={"x": (2, 4)}, seed=3)
    assert not real and all(np.array_equal(a["x"], b["x"]) for a, b in zip(first, again, strict=True))
    assert first[0]["x"].shape == (2, 4)
