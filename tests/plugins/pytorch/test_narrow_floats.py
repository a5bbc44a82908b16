# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""bfloat16, float16 and float8 state dicts: coded as NDUs and returned in their own type.

Lossy modes quantize a bfloat16 tensor's float32 view and round the result back to bfloat16 (to
nearest, ties to even); `--lossless` sends 16/8-bit patterns as NNR_PT_INT, exactly and in no
more bytes than the patterns themselves. NNCodec 2.1.3 decodes the same streams: float32 values
for lossy bfloat16, the int16 patterns for lossless ones.
"""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import torch

import nnrconv
from nnrconv import nnc
from nnrconv._check import check
from nnrconv.core import DType
from nnrconv.core._narrow import bfloat16_bits, bfloat16_values, restore_narrow

LOSSLESS = nnc.CodingOptions(lossless=True)


def _state_dict(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    state = {
        "layer.weight": (torch.randn(192, 160) * 0.02).to(torch.bfloat16),
        "layer.bias": (torch.randn(192) * 0.1).to(torch.bfloat16),
        "head.weight": torch.randn(64, 96).to(torch.float16),
        "fp8.weight": torch.randn(48, 40).to(torch.float8_e4m3fn),
        "fp8b.weight": torch.randn(48, 40).to(torch.float8_e5m2),
        "plain.weight": torch.randn(32, 32),
    }
    path = tmp_path / "m.pt"
    torch.save(state, path)
    source = tmp_path / "m.safetensors"
    nnrconv.convert(path, source)
    return source


def _units(data: bytes) -> dict[str, nnc.NduHeader]:
    return {
        u.unit.header.topology_elem_id: u.unit.header
        for u in nnc.read_units(data)
        if isinstance(u.unit, nnc.CompressedDataUnit)
    }


def test_bfloat16_rounding_matches_ml_dtypes() -> None:
    rng = np.random.default_rng(3)
    values = (rng.standard_normal(50_000) * 10.0 ** rng.integers(-40, 39, 50_000)).astype(np.float32)
    special = np.array([np.inf, -np.inf, 3.4e38, -3.4e38, 0.0, -0.0, 1e-45, 1.0 + 2.0**-8], np.float32)
    values = np.concatenate([values, special])
    with np.errstate(over="ignore"):
        expected = values.astype(ml_dtypes.bfloat16).view(np.uint16)
    assert np.array_equal(bfloat16_bits(values), expected)
    assert np.isnan(bfloat16_values(bfloat16_bits(np.array([np.nan], np.float32)))).all()
    patterns = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    finite = ~np.isnan(bfloat16_values(patterns))
    assert np.array_equal(bfloat16_bits(bfloat16_values(patterns))[finite], patterns[finite])


def test_restore_narrow_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="bit patterns"):
        restore_narrow(np.array([70000], np.int32), DType.BFLOAT16)
    with pytest.raises(ValueError, match="cannot become"):
        restore_narrow(np.array([0.5], np.float32), DType.FLOAT8E4M3FN)


def test_lossless_returns_every_narrow_tensor_bit_exact_in_fewer_bytes(tmp_path: Path) -> None:
    source = _state_dict(tmp_path)
    nnr, back = tmp_path / "m.nnr", tmp_path / "back.safetensors"
    nnrconv.convert(source, nnr, options=LOSSLESS)
    nnrconv.convert(nnr, back)
    assert back.read_bytes() == source.read_bytes()
    headers = _units(nnr.read_bytes())
    assert set(headers) == set(nnrconv.load(source).tensors)  # every tensor travels as an NDU
    for name in ("layer.weight", "head.weight", "fp8.weight"):
        assert headers[name].nnr_compressed_data_unit_payload_type == nnc.PayloadType.NNR_PT_INT
    original = nnrconv.load(source)
    coded_bits = sum(info.size for info in nnc.inspect_units(nnr.read_bytes()) if info.tensor) * 8
    raw_bits = sum(t.nbytes for t in original) * 8
    assert coded_bits < raw_bits


BFLOAT16_SNR = {"default": (39.0, 45.0), "snr50": (45.0, 80.0), "qp": (20.0, 80.0)}
"""Per mode, the range of a bfloat16 weight's SNR after the round trip: by default bfloat16
tensors aim at 40 dB (a little lost rounding back to bfloat16), an explicit target applies to
them too, and qp -38 is coarse for 0.02-sized weights."""


@pytest.mark.parametrize(
    "options",
    [nnc.CodingOptions(), nnc.CodingOptions(snr_db=50), nnc.CodingOptions(qp=-38)],
    ids=["default", "snr50", "qp"],
)
def test_lossy_codes_bfloat16_values_and_returns_bfloat16(
    tmp_path: Path, options: nnc.CodingOptions, request: pytest.FixtureRequest
) -> None:
    source = _state_dict(tmp_path)
    nnr, back = tmp_path / "m.nnr", tmp_path / "back.safetensors"
    nnrconv.convert(source, nnr, options=options)
    nnrconv.convert(nnr, back)
    original, restored = nnrconv.load(source), nnrconv.load(back)
    data = nnr.read_bytes()
    decoded = nnc.decode_model(data).tensors
    assert _units(data)["layer.weight"].nnr_compressed_data_unit_payload_type == nnc.PayloadType.NNR_PT_FLOAT
    for name, tensor in original.tensors.items():
        got = restored.tensors[name]
        assert (got.dtype, got.shape) == (tensor.dtype, tensor.shape)
        if tensor.dtype is DType.BFLOAT16:
            # the decoded float32 values, rounded to the nearest bfloat16
            assert np.array_equal(got.numpy(), bfloat16_bits(decoded[name]).reshape(tensor.shape))
            snr = nnc.snr_db(bfloat16_values(tensor.numpy()), bfloat16_values(got.numpy()))
            low, high = BFLOAT16_SNR[request.node.callspec.id]
            if len(tensor.shape) >= 2:
                assert low < snr < high, (name, snr)
        elif tensor.dtype is DType.FLOAT and options.qp is None:
            assert nnc.snr_db(tensor.numpy(), got.numpy()) >= nnc.DEFAULT_SNR_DB  # float32 keeps 50 dB
        elif tensor.dtype.name.startswith("FLOAT8"):
            assert np.array_equal(got.numpy(), tensor.numpy())


@pytest.mark.slow
@pytest.mark.conformance
def test_nncodec_decodes_the_narrow_float_stream(tmp_path: Path) -> None:
    try:
        from tests.nnc import _nncodec_ref as ref

        ref.import_nnc_core()
    except Exception as exc:  # pragma: no cover - depends on the environment
        pytest.skip(f"NNCodec 2.1.3 is not importable ({exc!r})")
    source = _state_dict(tmp_path)
    original = nnrconv.load(source)
    for options in (nnc.CodingOptions(qp=-38), LOSSLESS):
        data = nnrconv.encode(original, options=options)
        ours = nnc.decode_model(data).tensors
        theirs = ref.decompress(data)
        for name, array in ours.items():
            assert np.array_equal(np.asarray(theirs[name]).reshape(array.shape).astype(array.dtype), array), name
        if options.lossless:
            bits = ours["layer.weight"].view(np.uint16)
            assert np.array_equal(bits.reshape(-1), original.tensors["layer.weight"].numpy().reshape(-1))
        else:
            assert theirs["layer.weight"].dtype == np.float32


def test_check_inspect_and_diff_measure_bfloat16_by_value(tmp_path: Path) -> None:
    source = _state_dict(tmp_path)
    report = check(source)
    weight = next(t for t in report.tensors if t.name == "layer.weight")
    assert weight.dtype == "BFLOAT16" and 39 < weight.snr_db < 45 and weight.max_abs < 1e-3
    assert all(t.within_tolerance for t in report.tensors)
    nnr = tmp_path / "m.nnr"
    nnrconv.convert(source, nnr)
    snrs = {i.tensor: i.snr_db for i in nnrconv.inspect(nnr, original=source) if i.tensor}
    assert 39 < snrs["layer.weight"] < 45 and snrs["fp8.weight"] is None  # float8: bits, no SNR
    lossless = tmp_path / "exact.nnr"
    nnrconv.convert(source, lossless, options=LOSSLESS)
    assert next(i for i in nnrconv.inspect(lossless, original=source) if i.tensor == "layer.weight").snr_db == np.inf
    difference = {d.name: d for d in nnrconv.compare(nnrconv.load(source), nnrconv.load(nnr)).differences}
    assert 0 < difference["layer.weight"].max_abs < 1e-3
