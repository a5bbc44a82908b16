# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The C coder releases the GIL: many tensors coded at once must equal coding them one by one."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from nnrconv.core._errors import BitstreamError
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


@pytest.mark.parametrize(
    ("shape", "settings"),
    [
        ((300, 70), {"dq_flag": True, "scan_order": 1}),
        ((300, 70), {"dq_flag": False, "scan_order": 2}),
        ((129, 3, 3, 3), {"dq_flag": True, "scan_order": 3, "row_skip": True}),  # rows fit one block
        ((1000, 64), {"dq_flag": True, "scan_order": 4}),
    ],
    ids=["dq-8", "uniform-16", "dq-32-rowskip", "dq-64"],
)
def test_block_rows_decode_on_threads_to_the_same_levels(shape, settings):
    rng = np.random.default_rng(5)
    w = (rng.laplace(size=shape) * 0.03).astype(np.float32)
    if settings.get("row_skip"):
        w[::3] = 0  # rows to skip
    e = cabac.quantize_and_encode(w, -36, **settings)
    assert len(e.entry_points) > 2
    for threads in (1, 2, 3, len(e.entry_points) + 1, 64):
        _, levels, _ = cabac.decode_tensor(e.payload, shape, e.coding, entry_points=e.entry_points, threads=threads)
        assert np.array_equal(levels, e.levels), threads


def test_threaded_block_rows_report_corruption_of_any_span():
    rng = np.random.default_rng(6)
    w = (rng.standard_normal((256, 40)) * 0.05).astype(np.float32)
    e = cabac.quantize_and_encode(w, -38, scan_order=1)
    tail = e.entry_points[-1].bit_offset // 8
    # Entry points past the payload, and a payload cut inside the last span: errors, never a crash.
    far = [*e.entry_points[:-1], cabac.EntryPoint(10**7, 0, 0)]
    with pytest.raises(BitstreamError):
        cabac.decode_tensor(e.payload, w.shape, e.coding, entry_points=far, threads=4)
    with pytest.raises(BitstreamError):
        cabac.decode_tensor(e.payload[: tail + 2], w.shape, e.coding, entry_points=e.entry_points, threads=4)
    garbled = bytearray(e.payload)
    for i in range(tail, len(garbled) - 1):
        garbled[i] ^= 0x5A
    try:
        _, levels, _ = cabac.decode_tensor(bytes(garbled), w.shape, e.coding, entry_points=e.entry_points, threads=4)
    except BitstreamError:
        return
    # A garbled last span can still decode to something; the spans before it are intact.
    assert np.array_equal(levels[:200], e.levels[:200])
    assert not np.array_equal(levels, e.levels)
