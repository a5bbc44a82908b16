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


# ---- block rows encoded on several threads ------------------------------------------------------

ENCODE_THREADS = [2, 3, 7, 64]


def _levels_cases() -> list[tuple[str, np.ndarray, dict]]:
    rng = np.random.default_rng(23)
    gauss = np.round(rng.standard_normal((300, 70)) * 3).astype(np.int32)
    zero_rows = np.round(rng.standard_normal((203, 45)) * 2).astype(np.int32)
    zero_rows[rng.random(203) < 0.4] = 0
    zero_rows[:40] = 0  # the first block rows code (almost) nothing
    sparse = (rng.random((517, 31)) < 0.03).astype(np.int32) * rng.integers(-4, 5, (517, 31)).astype(np.int32)
    heavy = np.round(rng.standard_normal((130, 77)) * 400).astype(np.int32)
    return [
        ("gauss", gauss, {}),
        ("zero-rows", zero_rows, {"row_skip": True}),
        ("sparse", sparse, {}),
        ("heavy-tail", heavy, {}),
        # long runs of one value: highly probable bins, so carries into 0xFF runs are likely
        ("run-zero", np.zeros((260, 40), np.int32), {}),
        ("run-one", np.ones((260, 40), np.int32), {}),
        ("run-minus-one", np.full((333, 19), -1, np.int32), {"row_skip": True}),
        ("run-large", np.full((200, 33), 1000, np.int32), {}),
    ]


def _encode_levels(levels, coding, threads, prefix=None, **kwargs):
    enc = cabac.PayloadEncoder()
    if prefix is not None:
        enc.encode_qp_offset(*prefix)
    enc.encode_levels(levels, coding, threads=threads, **kwargs)
    return enc.finish()


@pytest.mark.parametrize("scan_order", [1, 2, 3, 4])
@pytest.mark.parametrize("dq", [False, True], ids=["uniform", "dq"])
def test_block_rows_encode_on_threads_to_the_same_bytes(scan_order, dq):
    for name, levels, kwargs in _levels_cases():
        coding = cabac.TensorCoding(dq_flag=dq, scan_order=scan_order)
        assert cabac.matrix_view(levels.shape)[0] > (4 << scan_order), name  # several block rows
        for prefix in (None, (-3, 2)):
            serial = _encode_levels(levels, coding, 1, prefix, **kwargs)
            for threads in ENCODE_THREADS:
                assert _encode_levels(levels, coding, threads, prefix, **kwargs) == serial, (name, prefix, threads)


@pytest.mark.parametrize("num_gtx_minus1", [0, 3])
def test_threaded_encoding_without_parameter_choice_or_with_few_flags(num_gtx_minus1):
    rng = np.random.default_rng(31)
    levels = np.round(rng.standard_normal((190, 50)) * 6).astype(np.int32)
    for dq in (False, True):
        coding = cabac.TensorCoding(dq_flag=dq, scan_order=1, cabac_unary_length_minus1=num_gtx_minus1)
        for param_opt in (False, True):
            serial = _encode_levels(levels, coding, 1, param_opt=param_opt)
            for threads in ENCODE_THREADS:
                assert _encode_levels(levels, coding, threads, param_opt=param_opt) == serial


@pytest.mark.parametrize(
    ("shape", "settings"),
    [
        ((300, 70), {"dq_flag": True, "scan_order": 1}),
        ((300, 70), {"dq_flag": False, "scan_order": 2}),
        ((129, 3, 3, 3), {"dq_flag": True, "scan_order": 3, "row_skip": True}),
        ((1000, 61), {"dq_flag": True, "scan_order": 4}),  # width not a multiple of the block
        ((203, 45), {"dq_flag": False, "scan_order": 1, "row_skip": True}),
    ],
    ids=["dq-8", "uniform-16", "dq-32-rowskip", "dq-64-ragged", "uniform-8-rowskip"],
)
def test_quantize_and_encode_on_threads_equals_one_thread(shape, settings):
    rng = np.random.default_rng(41)
    w = (rng.standard_normal(shape) * 0.02).astype(np.float32)
    if settings.get("row_skip"):
        w[rng.random(shape[0]) < 0.3] = 0
    serial = cabac.quantize_and_encode(w, -38, **settings)
    for threads in ENCODE_THREADS:
        got = cabac.quantize_and_encode(w, -38, threads=threads, **settings)
        assert got.payload == serial.payload, threads
        assert got.entry_points == serial.entry_points
    levels = cabac.decode_tensor(serial.payload, shape, serial.coding, entry_points=serial.entry_points or None)[0]
    assert np.array_equal(levels, cabac.dequantize(serial.levels, serial.qp))


@pytest.mark.parametrize(
    ("shape", "scan_order"),
    [((8, 100), 1), ((30, 20), 3), ((64, 9), 4), ((1, 500), 2), ((500, 1), 2), ((100, 70), 0)],
    ids=["one-block-row-8", "one-block-row-32", "one-block-row-64", "one-row", "one-column", "scan-0"],
)
def test_threads_do_not_matter_with_one_block_row(shape, scan_order):
    rng = np.random.default_rng(43)
    w = (rng.standard_normal(shape) * 0.02).astype(np.float32)
    serial = cabac.quantize_and_encode(w, -38, dq_flag=True, scan_order=scan_order)
    for threads in ENCODE_THREADS:
        assert cabac.quantize_and_encode(w, -38, dq_flag=True, scan_order=scan_order, threads=threads).payload == (
            serial.payload
        )


def test_model_encoding_with_jobs_equals_one_job():
    from nnrconv import nnc

    rng = np.random.default_rng(47)
    params = {
        "big": (rng.standard_normal((700, 90)) * 0.02).astype(np.float32),
        "mid": (rng.standard_normal((130, 16, 3, 3)) * 0.05).astype(np.float32),
        "small": (rng.standard_normal((40, 20)) * 0.1).astype(np.float32),
        "bias": (rng.standard_normal(90) * 0.01).astype(np.float32),
    }
    one = nnc.encode_model(list(params.items()), b"", 0, options=nnc.CodingOptions(qp=-38, scan_order=2, jobs=1))
    four = nnc.encode_model(list(params.items()), b"", 0, options=nnc.CodingOptions(qp=-38, scan_order=2, jobs=4))
    assert four == one


@pytest.mark.parametrize(("size", "zero"), [(1, 0), (7, 3), (16, 0), (16, 15)])
def test_codebook_levels_encode_on_threads_to_the_same_bytes(size, zero):
    rng = np.random.default_rng(53)
    levels = rng.integers(-zero, size - zero, (211, 37)).astype(np.int32)
    levels[rng.random(211) < 0.3] = 0
    coding = cabac.TensorCoding(scan_order=1, codebook_size=size, codebook_zero_offset=zero)
    for row_skip in (False, True):
        serial = _encode_levels(levels, coding, 1, row_skip=row_skip)
        for threads in ENCODE_THREADS:
            assert _encode_levels(levels, coding, threads, row_skip=row_skip) == serial
