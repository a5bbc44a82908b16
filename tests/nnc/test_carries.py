# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The carry decision (`nnc.can_carry`, `carries`) answers as `plan_tensor` would, without
running the QP search a second time."""

import numpy as np
import pytest

from nnrconv import nnc
from nnrconv.nnc import _coding

_RNG = np.random.default_rng(3)
_ARRAYS = {
    "float32": _RNG.normal(size=(40, 30)).astype(np.float32),
    "float16 off grid": _RNG.normal(size=(64,)).astype(np.float16),
    "float16 on grid": (np.arange(64) / 4).astype(np.float16),
    "float64": _RNG.normal(size=(50,)),
    "float64 huge": np.array([1e300, -1.0] * 20),
    "float64 tiny": np.full(32, 1e-320),
    "float32 inf": np.array([np.inf, 1.0] * 10, np.float32),
    "float16 nan": np.array([np.nan, 1.0] * 10, np.float16),
    "small float16": np.array([0.1, 0.2], np.float16),
    "empty float32": np.zeros((0, 3), np.float32),
    "empty float16": np.zeros(0, np.float16),
    "int64 fits": np.arange(100, dtype=np.int64),
    "int64 wide": np.array([1 << 40, 0], np.int64),
    "uint8": np.arange(20, dtype=np.uint8),
    "bool": np.ones(20, bool),
    "empty int32": np.zeros(0, np.int32),
}
_OPTIONS = [nnc.CodingOptions(), nnc.CodingOptions(lossless=True), nnc.CodingOptions(qp=-30)]


@pytest.mark.parametrize("name", list(_ARRAYS))
@pytest.mark.parametrize("options", _OPTIONS, ids=["snr", "lossless", "qp"])
def test_carries_agrees_with_planning(name, options):
    array = _ARRAYS[name]
    assert _coding.carries(array, options) == (nnc.plan_tensor(array, options) is not None)
    assert nnc.can_carry(array, options) == (nnc.plan_tensor(array, options) is not None)


def test_the_carry_decision_runs_no_qp_search(monkeypatch):
    monkeypatch.setattr(_coding, "_estimate_qp", lambda *a, **k: pytest.fail("QP searched for the carry decision"))
    assert nnc.can_carry(_ARRAYS["float32"], nnc.CodingOptions())
