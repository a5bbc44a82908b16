# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Output comparison of `check`: SNR, errors, cosine, argmax agreement and degenerate outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nnrconv._check_compare import compare_output


def test_close_outputs() -> None:
    rng = np.random.default_rng(0)
    a = [rng.standard_normal((2, 10)).astype(np.float32) for _ in range(3)]
    b = [x + np.float32(0.001) * rng.standard_normal(x.shape).astype(np.float32) for x in a]
    report = compare_output("logits", a, b, None, None)
    assert report.feeds == 3 and report.degenerate is None and report.within_tolerance
    assert 50 < report.snr_db < 70  # type: ignore[operator]
    assert report.cosine == pytest.approx(1.0, abs=1e-5) and report.cosine <= 1.0  # type: ignore[operator]
    assert report.argmax_agreement == 1.0
    assert report.max_abs == pytest.approx(max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True)))


def test_identical_outputs_have_infinite_snr() -> None:
    a = [np.arange(6, dtype=np.float32).reshape(2, 3)]
    report = compare_output("y", a, [a[0].copy()], 0.0, 0.0)
    assert report.snr_db == math.inf and report.max_abs == 0 and report.within_tolerance and report.cosine == 1.0


@pytest.mark.parametrize(
    ("values", "kind"), [(np.zeros((1, 4, 4), np.float32), "all-zero"), (np.full((1, 8), 0.5, np.float32), "constant")]
)
def test_degenerate_outputs_get_no_snr(values: np.ndarray, kind: str) -> None:
    report = compare_output("y", [values, values], [values.copy(), values.copy()], None, None)
    assert report.degenerate == kind and report.snr_db is None
    # A reconstruction that collapses an output is degenerate too, whatever the original does.
    rng = np.random.default_rng(1)
    varied = rng.standard_normal((1, 8)).astype(np.float32)
    collapsed = compare_output("y", [varied], [np.zeros_like(varied)], None, None)
    assert collapsed.degenerate == "all-zero" and collapsed.snr_db is None and collapsed.cosine is None


def test_argmax_over_the_last_axis_of_sequences() -> None:
    a = np.zeros((1, 4, 5), np.float32)
    a[0, np.arange(4), [0, 1, 2, 3]] = 1.0
    b = a.copy()
    b[0, 3, 4] = 2.0  # one of four positions decodes another class
    report = compare_output("ctc", [a], [b], None, None)
    assert report.argmax_agreement == 0.75
    spatial = compare_output("map", [a.reshape(1, 1, 4, 5)], [b.reshape(1, 1, 4, 5)], None, None)
    assert spatial.argmax_agreement is None  # rank 4: not classifier-like


def test_tolerance_and_missing_outputs() -> None:
    a = [np.array([1.0, 2.0], np.float32)]
    b = [np.array([1.0, 2.5], np.float32)]
    assert not compare_output("y", a, b, 0.1, None).within_tolerance
    assert compare_output("y", a, b, 0.0, 0.3).within_tolerance
    missing = compare_output("y", a, [None], None, None)
    assert not missing.within_tolerance and missing.max_abs == math.inf
    nan = [np.array([np.nan, 1.0], np.float32)]
    assert compare_output("y", nan, [nan[0].copy()], 0.0, 0.0).max_abs == 0.0  # NaN where NaN was
