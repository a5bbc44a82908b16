# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Codebook coding (`CodingOptions(codebook=True)`, NNCodec's codebook_mode 2) and `--codebook`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nnrconv
from nnrconv import nnc
from nnrconv.nnc import cabac
from nnrconv.nnc._codebook import build_codebook, choose_codebook, codebook_bits
from nnrconv.nnc._framing import read_units

EXAMPLE = Path(__file__).parents[2] / "examples" / "tiny_cnn.onnx"


def _headers(stream: bytes) -> dict[str, nnc.NduHeader]:
    out = {}
    for parsed in read_units(stream):
        header = getattr(parsed.unit, "header", None)
        if isinstance(header, nnc.NduHeader):
            out[header.topology_elem_id] = header
    return out


def _few_values(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "few.weight": (rng.integers(-3, 4, (48, 32)) * np.float32(0.05)).astype(np.float32),
        "dense.weight": rng.normal(0, 0.03, (32, 40)).astype(np.float32),
        "dense.bias": rng.normal(0, 0.1, 32).astype(np.float32),
    }


def test_codebook_of_levels_maps_back() -> None:
    levels = np.array([[-34, 0, 34], [68, -34, 0]], dtype=np.int32)
    choice = build_codebook(levels)
    cb = choice.codebook
    assert cb.codebook == (-34, 0, 34, 68)
    assert choice.indices.dtype == np.int32 and choice.indices.shape == levels.shape
    assert np.array_equal(np.asarray(cb.codebook)[choice.indices + cb.cb_zero_offset], levels)
    w = nnc.BitWriter()
    cb.write(w)
    assert codebook_bits(cb) == w.bit_position
    costs = [codebook_bits(nnc.Codebook(k, cb.codebook, cb.cb_zero_offset)) for k in range(16)]
    assert cb.codebook_egk == costs.index(min(costs))


def test_codebook_is_rejected_when_uniform_is_smaller() -> None:
    rng = np.random.default_rng(3)
    levels = np.ascontiguousarray(np.rint(rng.normal(0, 40, (64, 64))), dtype=np.int32)
    assert choose_codebook(levels, levels, False, scan_order=0, profile=1) is None
    few = np.ascontiguousarray(rng.integers(-2, 3, (64, 64)) * 17, dtype=np.int32)
    assert choose_codebook(few, few, False, scan_order=0, profile=1) is not None


@pytest.mark.parametrize("dq", [True, False])
def test_codebook_streams_round_trip_and_are_smaller(dq: bool) -> None:
    params = _few_values()
    plain = nnc.encode_model(list(params.items()), b"", 0, options=nnc.CodingOptions(qp=-38, dq=dq))
    stream = nnc.encode_model(list(params.items()), b"", 0, options=nnc.CodingOptions(qp=-38, dq=dq, codebook=True))
    headers = _headers(stream)
    cb = headers["few.weight"].codebook
    assert cb is not None and cb.codebook_size == 7 and not headers["few.weight"].dq_flag
    assert headers["dense.weight"].codebook is None and headers["dense.weight"].dq_flag == dq
    decoded = nnc.decode_model(stream).tensors
    step = cabac.step_size(-42 if dq else -38, 2)  # codebooks replace DQ by a 2^qp_density finer QP
    assert decoded["few.weight"].dtype == np.float32
    assert np.max(np.abs(decoded["few.weight"] - params["few.weight"])) <= step / 2 + 1e-7
    assert len(stream) < len(plain)
    assert len(_headers(stream)) == 3


def test_codebook_with_snr_mode_and_block_scan() -> None:
    params = _few_values(1)
    options = nnc.CodingOptions(snr_db=40, codebook=True, scan_order=2)
    stream = nnc.encode_model(list(params.items()), b"", 0, options=options)
    decoded = nnc.decode_model(stream).tensors
    assert _headers(stream)["few.weight"].codebook is not None
    assert nnc.snr_db(params["few.weight"], decoded["few.weight"]) >= 40


def test_codebook_and_lossless_are_exclusive() -> None:
    with pytest.raises(ValueError, match="codebook"):
        nnc.CodingOptions(lossless=True, codebook=True)


def _few_valued_onnx(path: Path) -> None:
    """tiny_cnn with its float weights snapped to seven levels (an already-quantized model)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(EXAMPLE))
    for i, tensor in enumerate(model.graph.initializer):
        value = numpy_helper.to_array(tensor)
        if value.dtype == np.float32 and value.ndim >= 2:
            scale = np.float32(max(float(np.abs(value).max()), 1e-3) / 3)
            snapped = (np.clip(np.rint(value / scale), -3, 3) * scale).astype(np.float32)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(snapped, tensor.name))
    onnx.save(model, str(path))


def test_convert_round_trip_with_codebook(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    import onnx
    from onnx import numpy_helper

    source = tmp_path / "few.onnx"
    _few_valued_onnx(source)
    target, plain = tmp_path / "m.nnr", tmp_path / "plain.nnr"
    nnrconv.convert(source, target, options=nnc.CodingOptions(qp=-38, codebook=True))
    nnrconv.convert(source, plain, options=nnc.CodingOptions(qp=-38))
    stream = target.read_bytes()
    assert any(h.codebook is not None for h in _headers(stream).values())
    assert len(stream) < len(plain.read_bytes())
    decoded = nnc.decode_model(stream).tensors
    back = tmp_path / "back.onnx"
    nnrconv.convert(target, back)
    restored = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(back)).graph.initializer}
    for name, value in decoded.items():
        assert np.array_equal(restored[name].reshape(value.shape), value), name


def test_cli_codebook_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnx")
    from nnrconv.cli import main

    source, plain, coded = tmp_path / "few.onnx", tmp_path / "p.nnr", tmp_path / "c.nnr"
    _few_valued_onnx(source)
    assert main([str(source), str(plain), "--qp", "-38", "-q"]) == 0
    assert main([str(source), str(coded), "--qp", "-38", "--codebook", "-q"]) == 0
    assert len(coded.read_bytes()) < len(plain.read_bytes())
    assert main([str(EXAMPLE), str(tmp_path / "x.nnr"), "--codebook", "-q"]) == 0  # with the default --snr
    assert main([str(EXAMPLE), str(tmp_path / "y.nnr"), "--lossless", "--codebook"]) == 2
    assert "--codebook" in capsys.readouterr().err


# -- conformance with NNCodec 2.1.3 (approx_method 'codebook', codebook_mode 2) -------------------

CONFORMANCE = [(-38, True, 0, False), (-38, False, 0, True), (-30, True, 2, True), (-44, False, 3, False)]


def _conformance_params(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "few.weight": (rng.integers(-3, 4, (16, 24)) * np.float32(0.05)).astype(np.float32),
        "dense.weight": rng.normal(0, 0.02, (8, 12)).astype(np.float32),
        "conv.weight": rng.normal(0, 0.02, (64, 3, 3, 3)).astype(np.float32),
        "skew.weight": (rng.integers(0, 3, (40, 30)) * np.float32(0.01) - np.float32(0.01)).astype(np.float32),
        "pos.weight": (rng.integers(0, 5, (30, 20)) * np.float32(0.02)).astype(np.float32),
        "neg.weight": (-rng.integers(0, 5, (30, 20)) * np.float32(0.02)).astype(np.float32),
        "dense.bias": rng.normal(0, 0.1, 16).astype(np.float32),
        "few.bias": (rng.integers(-2, 3, 50) * np.float32(0.125)).astype(np.float32),
    }


def _ref():  # type: ignore[no-untyped-def]
    try:
        from tests.nnc import _nncodec_ref as ref

        ref.import_nnc_core()
    except Exception as exc:  # pragma: no cover - depends on the environment
        pytest.skip(f"NNCodec 2.1.3 is not importable ({exc!r})")
    return ref


def _same_float32(expected: dict[str, np.ndarray], ours: dict[str, np.ndarray]) -> None:
    # NNCodec's codebook reconstruction (codebook · Δ in numpy) returns float64; its values are
    # the float32 products nnrconv returns.
    assert set(expected) == set(ours)
    for name, value in ours.items():
        theirs = np.asarray(expected[name])
        assert theirs.dtype in (np.float32, np.float64), name
        converted = theirs.astype(np.float32)
        assert np.array_equal(converted.astype(theirs.dtype), theirs), name
        assert np.array_equal(converted.view(np.uint32), value.view(np.uint32)), name


@pytest.mark.conformance
@pytest.mark.parametrize(("qp", "dq", "scan_order", "row_skip"), CONFORMANCE)
def test_nncodec_codebook_streams_decode_exactly(qp: int, dq: bool, scan_order: int, row_skip: bool) -> None:
    ref = _ref()
    params = _conformance_params(-qp)
    stream = ref.compress(
        params, qp=qp, nonweight_qp=qp - 8, use_dq=dq, scan_order=scan_order, row_skipping=row_skip, codebook_mode=2
    )
    assert any(h.codebook is not None for h in _headers(stream).values())
    _same_float32(ref.decompress(stream), nnc.decode_model(stream).tensors)


@pytest.mark.conformance
@pytest.mark.parametrize(("qp", "dq", "scan_order", "row_skip"), CONFORMANCE)
def test_nnrconv_codebook_streams_decode_in_nncodec_and_match_its_choices(
    qp: int, dq: bool, scan_order: int, row_skip: bool
) -> None:
    ref = _ref()
    params = _conformance_params(-qp)
    options = nnc.CodingOptions(qp=qp, dq=dq, scan_order=scan_order, row_skip=row_skip, codebook=True, jobs=2)
    stream = nnc.encode_model(list(params.items()), b"", nnc.TopologyStorageFormat.NNR_TPL_UNREC, options=options)
    ours = nnc.decode_model(stream).tensors
    _same_float32(ref.decompress(stream), ours)
    theirs = ref.compress(
        params, qp=qp, nonweight_qp=qp - 8, use_dq=dq, scan_order=scan_order, row_skipping=row_skip, codebook_mode=2
    )
    mine, nncodec = _headers(stream), _headers(theirs)
    assert sum(h.codebook is not None for h in mine.values()) >= 2
    for name, header in nncodec.items():  # same codebook decisions, entries, zero offsets, egk and DQ
        assert mine[name].codebook == header.codebook, name
        assert mine[name].dq_flag == header.dq_flag, name
    assert len(nnc.strip_record(stream)) == len(theirs)  # the integrity record is ours alone


@pytest.mark.conformance
@pytest.mark.parametrize(("qp", "dq", "scan_order", "row_skip"), CONFORMANCE)
def test_codebook_payloads_are_byte_identical_to_nncodec(qp: int, dq: bool, scan_order: int, row_skip: bool) -> None:
    """With NNCodec's MPS quantization_parameter (the QP offset bits), every NDU payload matches."""
    from nnrconv.nnc._coding import plan_tensor
    from nnrconv.nnc._payloads import PayloadSettings, encode_payload

    ref = _ref()
    params = _conformance_params(-qp)
    theirs = ref.compress(
        params, qp=qp, nonweight_qp=qp - 8, use_dq=dq, scan_order=scan_order, row_skipping=row_skip, codebook_mode=2
    )
    units = [p.unit for p in read_units(theirs)]
    mps = next(u for u in units if isinstance(u, nnc.ModelParameterSet))
    mps_qp = mps.mps_quantization_parameter
    half = 1 << (5 + mps.mps_qp_density)
    options = nnc.CodingOptions(qp=qp, dq=dq, scan_order=scan_order, row_skip=row_skip, codebook=True)
    settings = PayloadSettings(options, mps_qp, (mps_qp - half, mps_qp + half - 1))
    ndus = [u for u in units if isinstance(u, nnc.CompressedDataUnit)]
    assert len(ndus) == len(params)
    for index, ndu in enumerate(ndus):
        name = ndu.header.topology_elem_id
        array = params[name]
        coded = encode_payload(name, array, plan_tensor(array, options), settings, index)
        assert coded.header.codebook == ndu.header.codebook, name
        assert coded.payload == bytes(ndu.payload), name


def test_large_codebooks_search_offsets_near_the_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    from nnrconv.nnc import _codebook

    rng = np.random.default_rng(5)
    levels = np.ascontiguousarray(rng.integers(-2, 3, (64, 64)) * 9 + 40, dtype=np.int32)
    exhaustive = build_codebook(levels)
    monkeypatch.setattr(_codebook, "EXHAUSTIVE_BUDGET", 0)
    windowed = build_codebook(levels)
    assert windowed.codebook.codebook == exhaustive.codebook.codebook
    cb = windowed.codebook
    assert np.array_equal(np.asarray(cb.codebook)[windowed.indices + cb.cb_zero_offset], levels)
    params = {"few.weight": (levels * np.float32(2**-9)).astype(np.float32)}
    stream = nnc.encode_model(list(params.items()), b"", 0, options=nnc.CodingOptions(qp=-38, codebook=True))
    assert _headers(stream)["few.weight"].codebook is not None
    decoded = nnc.decode_model(stream).tensors["few.weight"]
    assert np.max(np.abs(decoded - params["few.weight"])) <= cabac.step_size(-42, 2) / 2
