# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The C coder releases the GIL: many tensors coded at once must equal coding them one by one."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from nnrconv.nnc import cabac

SETTINGS = [
    {"dq_flag": True, "scan_order": 0},
    {"dq_flag": False, "scan_order": 2},
    {"dq_flag": True, "scan_order": 1, "row_skip": True},
]


def _tensors(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    shapes = [(64, 3, 3, 3), (257, 33), (17,), (128, 128), (9, 1000)]
    return [(rng.standard_normal(shapes[i % len(shapes)]) * 0.05).astype(np.float32) for i in range(count)]


@pytest.mark.parametrize("settings", SETTINGS, ids=["dq", "uniform-blocks", "dq-blocks-rowskip"])
def test_parallel_coding_equals_serial(settings):
    tensors = _tensors(24)

    def encode(w):
        return cabac.quantize_and_encode(w, -38, **settings)

    serial = [encode(w) for w in tensors]
    for _ in range(3):
        with ThreadPoolExecutor(max_workers=8) as pool:
            parallel = list(pool.map(encode, tensors))
        assert [e.payload for e in parallel] == [e.payload for e in serial]

    def decode(pair):
        w, e = pair
        return cabac.decode_tensor(e.payload, w.shape, e.coding, entry_points=e.entry_points or None)[0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        decoded = list(pool.map(decode, zip(tensors, serial, strict=True)))
    for got, e in zip(decoded, serial, strict=True):
        assert np.array_equal(got, cabac.dequantize(e.levels, e.qp))
