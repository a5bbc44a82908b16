# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Entropy-coded NDUs: coding modes, dtypes, encode_parts/decode_parts, and hostile payloads."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import pytest

from nnrconv import nnc
from nnrconv.core._errors import BitstreamError, UnsupportedError
from nnrconv.nnc import _coding, _decoding, _snr_search, cabac
from nnrconv.nnc._framing import read_units
from nnrconv.nnc._ndu import CompressedDataUnit

LOSSLESS = nnc.CodingOptions(lossless=True)


def _snr(a: np.ndarray, b: np.ndarray) -> float:
    return _snr_search.snr_db(a.astype(np.float64), b.astype(np.float64))


def _model(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "big.weight": rng.normal(0, 0.05, (64, 32, 3, 3)).astype(np.float32),
        "tiny.weight": rng.normal(0, 1e-4, (16, 8)).astype(np.float32),  # starved by one global QP
        "huge.weight": rng.normal(0, 30.0, (8, 8)).astype(np.float32),
        "bias": rng.normal(0, 0.1, 64).astype(np.float32),
        "scalar": np.array(0.007, np.float32),
        "half": rng.normal(0, 1, (12, 12)).astype(np.float16),
        "double": rng.normal(0, 1, (12, 12)),
        "i8": rng.integers(-128, 128, (7, 9)).astype(np.int8),
        "i16": rng.integers(-30000, 30000, 40).astype(np.int16),
        "i64": rng.integers(-(2**31), 2**31 - 1, 10).astype(np.int64),
        "u8": rng.integers(0, 256, (4, 4)).astype(np.uint8),
        "u16": rng.integers(0, 65536, 9).astype(np.uint16),
    }


def _decode(tensors: dict[str, np.ndarray], options: nnc.CodingOptions) -> dict[str, np.ndarray]:
    return nnc.decode_model(nnc.encode_model(list(tensors.items()), b"", 0, options=options)).tensors


@pytest.mark.parametrize("snr", [30.0, 50.0])
@pytest.mark.parametrize("dq", [True, False])
def test_snr_mode_meets_the_target_per_tensor(snr: float, dq: bool) -> None:
    tensors = _model()
    decoded = _decode(tensors, nnc.CodingOptions(snr_db=snr, dq=dq))
    for name, array in tensors.items():
        got = decoded[name]
        assert got.shape == (array.shape or (1,)), name
        if array.dtype.kind in "iu":
            assert np.array_equal(got, array), name
        else:
            bonus = 0 if array.ndim >= 2 else _coding.NONWEIGHT_SNR_BONUS_DB
            assert _snr(array, got) >= snr + bonus, name
    # The target holds for every tensor, yet is not vastly exceeded: the step is the largest that meets it.
    assert _snr(tensors["big.weight"], decoded["big.weight"]) < snr + 3


def test_dtypes_come_back() -> None:
    decoded = _decode(_model(), nnc.CodingOptions())
    expected = {"half": np.float16, "double": np.float64, "i8": np.int8, "i16": np.int16, "i64": np.int64}
    for name, dtype in expected.items():
        assert decoded[name].dtype == dtype, name
    assert decoded["u8"].dtype == np.int16 and decoded["u16"].dtype == np.int32  # no unsigned formats
    assert decoded["big.weight"].dtype == np.float32


def test_lossless_is_bit_exact_and_codes_grids() -> None:
    rng = np.random.default_rng(3)
    tensors = _model()
    tensors["int8_model.weight"] = (rng.integers(-127, 128, (32, 32)) * np.float32(0.75 * 2**-6)).astype(np.float32)
    tensors["fp16_grid"] = (rng.integers(-50, 50, (10, 10)) * 2**-4).astype(np.float16)
    tensors["zeros"] = np.zeros((5, 5), np.float32)
    tensors["weird"] = np.array([0.0, -0.0, 1.0], np.float32)  # -0.0 is on no grid: raw
    tensors.pop("double")  # random float64 is on no grid: it would stay in the topology
    data = nnc.encode_model(list(tensors.items()), b"", 0, options=LOSSLESS)
    decoded = nnc.decode_model(data).tensors
    for name, array in tensors.items():
        assert decoded[name].tobytes() == np.ascontiguousarray(array.reshape(array.shape or (1,))).astype(
            decoded[name].dtype
        ).tobytes(), name
    kinds = {i.tensor: i.payload_type for i in nnc.inspect_units(data) if i.tensor}
    assert kinds["int8_model.weight"] == kinds["fp16_grid"] == kinds["zeros"] == "NNR_PT_FLOAT"
    assert kinds["big.weight"] == kinds["weird"] == "NNR_PT_RAW_FLOAT"
    assert kinds["i8"] == "NNR_PT_INT"
    grid = next(i for i in nnc.inspect_units(data) if i.tensor == "int8_model.weight")
    assert grid.step == 0.75 * 2**-6 and grid.bits_per_parameter < 9  # uniform random int8: ~8 bits


def test_lossless_float64_off_grid_is_not_carried() -> None:
    with pytest.raises(UnsupportedError, match="'double'"):
        nnc.encode_model([("double", np.random.default_rng(0).normal(size=5))], b"", 0, options=LOSSLESS)


def test_qp_mode_uses_nncodec_nonweight_rule() -> None:
    data = nnc.encode_model(list(_model().items()), b"", 0, options=nnc.CodingOptions(qp=-36))
    qps = {i.tensor: i.qp for i in nnc.inspect_units(data) if i.tensor}
    assert qps["big.weight"] == qps["tiny.weight"] == -36 and qps["bias"] == -44
    assert qps["i8"] is None


def test_parallel_and_serial_streams_are_identical() -> None:
    items = list(_model().items())
    one = nnc.encode_model(items, b"", 0, options=nnc.CodingOptions(jobs=1, scan_order=2))
    many = nnc.encode_model(items, b"", 0, options=nnc.CodingOptions(jobs=4, scan_order=2))
    assert one == many
    a, b = nnc.decode_model(one, jobs=1).tensors, nnc.decode_model(one, jobs=3).tensors
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)


@pytest.mark.parametrize("scan_order", [1, 3])
def test_block_scans_with_zero_rows_decode_to_the_quantized_levels(scan_order: int) -> None:
    # DQ + row skipping + blocks narrower than the rows: the standard's skipped-segment state rule
    # would change the levels after a zero row, so such tensors must not use row skipping.
    rng = np.random.default_rng(3)
    w = rng.normal(0, 0.05, (96, 90)).astype(np.float32)
    w[5] = w[40] = w[41] = 0
    options = nnc.CodingOptions(qp=-38, scan_order=scan_order)
    got = _decode({"w": w}, options)["w"]
    expected = cabac.quantize(w, -38, dq_flag=True, scan_order=scan_order)
    assert np.array_equal(got, cabac.dequantize(expected.levels, expected.qp))


def test_one_big_tensor_decodes_its_block_rows_on_threads() -> None:
    w = np.random.default_rng(4).normal(0, 0.05, (512, 64)).astype(np.float32)
    data = nnc.encode_model([("w", w)], b"", 0, options=nnc.CodingOptions(qp=-38, scan_order=1))
    assert _decoding._thread_shares([(u, None, ()) for u in _ndus(data)], 4) == [4]
    one, four = nnc.decode_model(data, jobs=1).tensors["w"], nnc.decode_model(data, jobs=4).tensors["w"]
    assert one.tobytes() == four.tobytes()


def _ndus(data: bytes) -> list:
    return [p.unit for p in read_units(data) if isinstance(p.unit, CompressedDataUnit)]


def test_encode_parts_and_decode_parts() -> None:
    tensors = _model()
    options = nnc.CodingOptions(scan_order=1)
    parameter_sets, ndus = nnc.encode_parts(tensors, options)
    assert list(ndus) == list(tensors)
    assert nnc.looks_like_nnr(parameter_sets[:4])
    whole = nnc.decode_model(nnc.strip_record(parameter_sets + b"".join(ndus.values()))).tensors
    for name in ["tiny.weight", "i64", "half"]:  # each NDU decodes on its own
        (got,) = nnc.decode_parts(parameter_sets, {name: ndus[name]}, complete=False).values()
        assert got.tobytes() == whole[name].tobytes()
    assert all(v.tobytes() == whole[k].tobytes() for k, v in nnc.decode_parts(parameter_sets, ndus).items())
    with pytest.raises(BitstreamError, match="carries 'bias', not 'i8'"):
        nnc.decode_parts(parameter_sets, {"i8": ndus["bias"]}, complete=False)
    with pytest.raises(BitstreamError, match="integrity check"):
        nnc.decode_parts(parameter_sets, {"bias": ndus["bias"] + b"\0"}, complete=False)
    with pytest.raises(BitstreamError, match="follow the NDU"):  # the decoder's own check, without record
        nnc.decode_parts(nnc.strip_record(parameter_sets), {"bias": ndus["bias"] + b"\0"})


def _one_float_stream(shape=(20, 30)) -> bytes:
    w = np.random.default_rng(0).normal(0, 0.1, shape).astype(np.float32)
    # Without the integrity record, so that the decoder's own unit checks are what is tested.
    return nnc.strip_record(nnc.encode_model([("w", w)], b"", 0, options=nnc.CodingOptions(qp=-36)))


def test_trailing_and_truncated_payloads_are_located() -> None:
    data = _one_float_stream()
    size = int.from_bytes(data[-len(data) + 18 : -len(data) + 20], "big")
    grown = data[:18] + (size + 2).to_bytes(2, "big") + data[20:] + b"\0\0"
    with pytest.raises(BitstreamError, match=r"unit 3.*'w'.*bytes follow") as info:
        nnc.decode_model(grown, source="g.nnr")
    assert info.value.tensor == "w" and info.value.unit_index == 3
    cut = data[:18] + (size - 3).to_bytes(2, "big") + data[20:-3]
    with pytest.raises(BitstreamError, match="'w'"):
        nnc.decode_model(cut)


def test_declared_dimensions_are_capped_before_allocation() -> None:
    data = _one_float_stream()
    with pytest.raises(BitstreamError, match="above the cap"):
        nnc.decode_model(data, max_elements=100)


def test_mutated_coded_streams_raise_only_bitstream_errors() -> None:
    data = _one_float_stream((33, 17))
    rng = random.Random(11)
    for _ in range(300):
        corrupt = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            corrupt[rng.randrange(18, len(corrupt))] = rng.randrange(256)
        with contextlib.suppress(BitstreamError, UnsupportedError):
            nnc.decode_model(bytes(corrupt), max_elements=1 << 16)


def test_grid_detection() -> None:
    step = cabac.step_size(-29)
    values = (np.arange(-40, 41) * step).astype(np.float32)
    assert _snr_search.grid_qp(values) == -29
    assert _snr_search.grid_qp(np.array([0.1, 0.3], np.float32)) is None
    assert _snr_search.grid_qp(np.zeros(4, np.float32)) is not None
