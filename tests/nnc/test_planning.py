# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Every valid tensor plans: extreme values travel coded where a step holds them, exactly otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from nnrconv import nnc
from nnrconv.core._errors import UnsupportedError
from nnrconv.nnc import _coding, _snr_search, cabac
from nnrconv.nnc._planning import fit_plans

F32 = np.finfo(np.float32)
_RNG = np.random.default_rng(7)
NORMAL = (_RNG.standard_normal((32, 32)) * 0.05).astype(np.float32)


def _nan_payloads() -> np.ndarray:
    bits = np.array([0x7FC01234, 0x3F800000, 0xFFA00001, 0x00000000] * 8, np.uint32)
    return bits.view(np.float32).reshape(4, 8)


def _mix() -> np.ndarray:
    values = _RNG.standard_normal(254).astype(np.float32)
    return np.concatenate([values, [F32.max, -F32.max]]).astype(np.float32).reshape(16, 16)


# name -> (array, travels exactly in every lossy mode)
CASES: dict[str, tuple[np.ndarray, bool]] = {
    "flt_max": (np.array([[0.0, -F32.max], [F32.max, 1.0]], np.float32), True),
    "mask_min": (np.full((1, 1, 8, 8), F32.min, np.float32), False),
    "causal_mask": (np.triu(np.full((16, 16), F32.min, np.float32), 1), False),
    "inf": (np.array([[np.inf, 1.0, -np.inf, 0.5]] * 4, np.float32), True),
    "nan": (np.array([[np.nan, 1.0, 2.0, 0.5]] * 4, np.float32), True),
    "nan_payloads": (_nan_payloads(), True),
    "denormals": ((np.arange(64, dtype=np.float32) * np.float32(1e-45)).reshape(8, 8), False),
    "negative_zero": (np.array([[-0.0, 1.0, -2.0, 0.25]] * 4, np.float32), False),
    "huge": ((_RNG.standard_normal((16, 16)) * 1e30).astype(np.float32), False),
    "tiny": ((_RNG.standard_normal((16, 16)) * 1e-30).astype(np.float32), False),
    "all_equal": (np.full((16, 16), 0.3, np.float32), False),
    "all_zero": (np.zeros((16, 16), np.float32), False),
    "single": (np.array([0.3], np.float32), False),
    "scalar": (np.array(-3.4e38, np.float32), True),
    "zero_elements": (np.zeros((0, 4), np.float32), True),
    "few_extremes": (_mix(), True),
    "f16_extremes": (
        np.concatenate([_RNG.standard_normal(254), [65504, -65504]]).astype(np.float16).reshape(16, 16),
        False,
    ),
    "f16_tiny": ((_RNG.standard_normal((16, 16)) * 1e-6).astype(np.float16), False),
    "f16_all_equal": (np.full((8, 8), 0.1, np.float16), False),
    "f64_tiny": (_RNG.standard_normal((16, 16)) * 1e-30, False),
    "f64_huge": (_RNG.standard_normal((16, 16)) * 1e30, False),
}

MODES = {
    "lossless": nnc.CodingOptions(lossless=True),
    "snr": nnc.CodingOptions(),
    "qp": nnc.CodingOptions(qp=-38),
    "codebook": nnc.CodingOptions(codebook=True),
    "lambda": nnc.CodingOptions(lambda_scale=1.0),
}


def _same_bits(got: np.ndarray, want: np.ndarray) -> bool:
    got = np.asarray(got).reshape(want.shape)
    if got.dtype != want.dtype:
        if not np.all(np.isfinite(want)):
            return False
        got = got.astype(want.dtype)
    return got.tobytes() == np.ascontiguousarray(want).tobytes()


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("case", list(CASES))
def test_every_tensor_plans(case: str, mode: str) -> None:
    array, exact_when_lossy = CASES[case]
    options = MODES[mode]
    if not nnc.can_carry(array, options):
        # Only float16/float64 off their grid in lossless mode stay in the topology.
        assert mode == "lossless" and array.dtype != np.float32, (case, mode)
        with pytest.raises(UnsupportedError, match=f"^tensor '{case}' has dtype"):
            nnc.encode_model([(case, array)], b"", 0, options=options)
        return
    data = nnc.encode_model([(case, array), ("normal", NORMAL)], b"", 0, options=options)
    decoded = nnc.decode_model(data).tensors
    got = decoded[case]
    unit = next(u for u in nnc.inspect_units(data) if u.tensor == case)
    if mode == "lossless" or exact_when_lossy:
        assert _same_bits(got, array), (case, mode)
    elif mode == "qp":
        # DQ's two quantizers are 2Δ apart each; the result is then rounded to the tensor's type
        # (raw float32, for float64, only that rounding).
        step = unit.step if unit.step is not None else 0.0
        error = np.abs(got.reshape(array.shape).astype(np.float64) - array.astype(np.float64))
        relative = float(np.finfo(array.dtype).eps) + 2.0**-23
        bound = 2 * step + np.abs(array.astype(np.float64)) * relative
        assert bool(np.all(error <= bound)), (case, mode)
    elif not _same_bits(got, array):
        target = options.weight_snr_db() + (0.0 if array.ndim >= 2 else _coding.NONWEIGHT_SNR_BONUS_DB)
        assert _snr_search.snr_db(array.astype(np.float64), got.reshape(array.shape)) >= target - 1e-9, (case, mode)
    # The ordinary tensor beside it keeps its own promise.
    normal = decoded["normal"]
    if mode == "lossless":
        assert _same_bits(normal, NORMAL)
    elif mode != "qp":
        assert _snr_search.snr_db(NORMAL, normal) >= options.weight_snr_db()


def test_sentinels_do_not_starve_the_weights_beside_them() -> None:
    """A mask of -FLT_MAX (the window's outlier) travels exactly; the weights keep their own QP."""
    tensors = [("mask", CASES["mask_min"][0]), ("w", NORMAL), ("w2", NORMAL * 3)]
    alone = nnc.encode_model([("w", NORMAL), ("w2", NORMAL * 3)], b"", 0)
    together = nnc.encode_model(tensors, b"", 0)
    qps = {u.tensor: u.qp for u in nnc.inspect_units(together) if u.tensor}
    assert qps == {**{u.tensor: u.qp for u in nnc.inspect_units(alone) if u.tensor}, "mask": None}


def test_window_keeps_the_midpoint_when_everything_fits() -> None:
    """Models whose QPs all fit keep NNCodec's midpoint MPS QP (their bytes do not change)."""
    plans = [(100, _coding.TensorPlan(nnc.PayloadType.NNR_PT_FLOAT, qp=q, peak=1.0)) for q in (-40, -20)]
    fitted, mps, window = fit_plans(plans, nnc.CodingOptions(qp=-38))
    assert mps == -30 and window == (-158, 97) and [p for _, p in plans] == fitted


def test_window_follows_the_most_elements() -> None:
    def plan(qp: int, peak: float) -> _coding.TensorPlan:
        return _coding.TensorPlan(nnc.PayloadType.NNR_PT_FLOAT, qp=qp, peak=peak)

    plans = [(10_000, plan(-40, 0.5)), (16, plan(400, 3e38)), (4, plan(-500, 1e-36))]
    fitted, _, (lo, hi) = fit_plans(plans, nnc.CodingOptions(qp=-38))
    assert lo <= -40 <= hi and fitted[0] is plans[0][1]
    assert fitted[1].payload_type == fitted[2].payload_type == nnc.PayloadType.NNR_PT_RAW_FLOAT


def test_an_exact_grid_moves_by_octaves_into_the_window() -> None:
    grid = (np.arange(-64, 64, dtype=np.float32) * np.float32(2.0**40)).reshape(8, 16)
    qp = _snr_search.grid_qp(grid)
    assert qp is not None
    weights = (np.arange(-512, 512, dtype=np.float32) * np.float32(2.0**-30)).reshape(32, 32)
    data = nnc.encode_model([("w", weights), ("g", grid)], b"", 0, options=MODES["lossless"])
    units = {u.tensor: u for u in nnc.inspect_units(data) if u.tensor}
    assert units["g"].payload_type == "NNR_PT_FLOAT" and (qp - units["g"].qp) % 4 == 0 and units["g"].qp < qp
    decoded = nnc.decode_model(data).tensors
    assert _same_bits(decoded["g"], grid) and _same_bits(decoded["w"], weights)


def test_qps_stay_where_float32_holds_the_step_exactly() -> None:
    assert cabac.step_size(_coding.QP_MIN) == 2.0**-147
    assert np.isfinite(cabac.step_size(_coding.QP_MAX)) and not np.isfinite(cabac.step_size(_coding.QP_MAX + 1))
    plan = _coding.plan_tensor(CASES["denormals"][0], nnc.CodingOptions(snr_db=120))
    assert plan is not None and (plan.qp is None or plan.qp >= _coding.QP_MIN)


def test_errors_name_the_tensor_once() -> None:
    with pytest.raises(UnsupportedError) as err:
        nnc.encode_model([("t", np.zeros(3, np.complex64))], b"", 0)
    assert str(err.value).count("'t'") == 1


@pytest.mark.parametrize("mode", ["snr", "lossless"])
def test_nncodec_decodes_the_fallbacks(mode: str) -> None:
    from tests.nnc._nncodec_ref import decompress

    names = ["mask_min", "nan_payloads", "few_extremes", "tiny", "all_zero"]
    tensors = [(n, CASES[n][0]) for n in names] + [("normal", NORMAL)]
    data = nnc.encode_model(tensors, b"", 0, options=MODES[mode])
    ours = nnc.decode_model(data).tensors
    theirs = decompress(data)
    for name, _ in tensors:
        assert np.asarray(theirs[name]).astype(np.float32).tobytes() == ours[name].tobytes(), name


def test_heavy_tailed_weights_at_a_low_target_are_still_coded() -> None:
    """Only sentinels send a tensor raw: heavy tails at a coarse step are coded as asked."""
    weights = (np.random.default_rng(3).standard_cauchy((64, 64)) * 0.01).astype(np.float32)
    plan = _coding.plan_tensor(weights, nnc.CodingOptions(snr_db=3))
    assert plan is not None and plan.payload_type == nnc.PayloadType.NNR_PT_FLOAT and not plan.exact
    mixed = CASES["few_extremes"][0]
    plan = _coding.plan_tensor(mixed, nnc.CodingOptions(snr_db=3))
    assert plan is not None and plan.payload_type == nnc.PayloadType.NNR_PT_RAW_FLOAT
