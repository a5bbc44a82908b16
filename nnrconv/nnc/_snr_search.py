# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Weight-domain measurement and search: SNR of a reconstruction, the QP meeting an SNR target,
quantization through the codec, and the QP grid a tensor's values already sit on.

Split from `_coding` (which decides *what* a tensor's plan is) because these run the quantizer and
scan the values; `_coding` imports them at its end, after the types they take are defined.
"""

from __future__ import annotations

import math

import numpy as np

from nnrconv.nnc import cabac
from nnrconv.nnc._coding import (
    _QP_DENSITY,
    _QP_LIMIT,
    QP_MAX,
    QP_MIN,
    RATE_MODEL_UNARY_LENGTH_MINUS1,
    CodingOptions,
    TensorPlan,
    qp_of_step,
)
from nnrconv.nnc._heap import trim

_STATS_CHUNK = 1 << 21
"""Elements per float64 pass in `_power` and `snr_db`: their temporaries stay at a few times
16 MB whatever the tensor's size (a tensor of one chunk is summed exactly as before)."""
_DEQUANTIZE_SLICE = 1 << 17
"""Levels dequantized at once in `levels_snr_db` (elementwise: the sums do not depend on it)."""


def _chunks(array: np.ndarray) -> list[np.ndarray]:
    flat = array.reshape(-1)
    return [flat[i : i + _STATS_CHUNK] for i in range(0, flat.size, _STATS_CHUNK)] or [flat]


def _power(array: np.ndarray) -> float:
    total = sum(float(np.sum(np.square(c, dtype=np.float64), dtype=np.float64)) for c in _chunks(array))
    return total / array.size


def _estimate_qp(array: np.ndarray, snr_db: float, options: CodingOptions) -> int | None:
    """A QP near the answer, from noise ≈ c·Δ²/12 (c ≈ 1 uniform, ≈ 3 with DQ)."""
    power = _power(array)
    if power == 0.0:
        return None
    noise = power / 10.0 ** (snr_db / 10.0)
    factor = 3.0 if options.dq else 1.0
    step = math.sqrt(12.0 * noise / factor)
    if step < cabac.step_size(QP_MIN, options.qp_density):
        return QP_MIN
    if step >= cabac.step_size(QP_MAX, options.qp_density):
        return QP_MAX
    return qp_of_step(step, options.qp_density)


def snr_db(original: np.ndarray, reconstruction: np.ndarray) -> float:
    """10·log10(Σw² / Σ(w-ŵ)²) in float64; inf when identical."""
    noise = signal = 0.0
    for o, r in zip(_chunks(original), _chunks(reconstruction), strict=True):
        a = o.astype(np.float64, copy=False)
        diff = a - r.astype(np.float64, copy=False)
        noise += float(np.dot(diff, diff))
        signal += float(np.dot(a, a))
    if noise == 0.0:
        return math.inf
    return -math.inf if signal == 0.0 else 10.0 * math.log10(signal / noise)


def quantize_weights(weights: np.ndarray, qp: int, dq_flag: bool, options: CodingOptions) -> cabac.QuantizedTensor:
    """Quantize with the options' scan order and rate-distortion `lambda_scale`.

    The one place lossy tensors are quantized, so that the fixed-QP, SNR-search and codebook paths
    all make the same (NNCodec's) decisions for the same options.
    """
    return cabac.quantize(
        weights,
        qp,
        options.qp_density,
        dq_flag=dq_flag,
        scan_order=options.scan_order,
        lambda_scale=options.lambda_scale,
        cabac_unary_length_minus1=RATE_MODEL_UNARY_LENGTH_MINUS1,
    )


SAMPLED_SEARCH_ELEMENTS = 1 << 22
"""Tensors of at least this many elements (and two or more rows) search their QP on a sample."""
_SAMPLE_ROWS_ELEMENTS = 1 << 20


def levels_snr_db(weights: np.ndarray, levels: np.ndarray, qp: int, qp_density: int) -> float:
    """`snr_db` of the weights against their dequantized levels, dequantized chunk by chunk.

    Checking a big tensor adds one chunk's float64 copy to its weights and levels, nothing more
    (it runs while both are held: the peak of coding a big tensor)."""
    noise = signal = 0.0
    for w, q in zip(_chunks(weights), _chunks(levels), strict=True):
        chunk_signal, chunk_noise = _chunk_powers(w, q, qp, qp_density)
        signal += chunk_signal
        noise += chunk_noise
    if noise == 0.0:
        return math.inf
    return -math.inf if signal == 0.0 else 10.0 * math.log10(signal / noise)


def _chunk_powers(weights: np.ndarray, levels: np.ndarray, qp: int, qp_density: int) -> tuple[float, float]:
    """Signal and noise energy of one chunk: its float64 copy becomes the difference in place,
    dequantized a slice at a time (the same sums as subtracting the whole dequantized chunk)."""
    a = weights.astype(np.float64)
    signal = float(np.dot(a, a))
    for i in range(0, a.size, _DEQUANTIZE_SLICE):
        part = a[i : i + _DEQUANTIZE_SLICE]
        np.subtract(part, cabac.dequantize(np.ascontiguousarray(levels[i : i + len(part)]), qp, qp_density), out=part)
    return signal, float(np.dot(a, a))


def _row_sample(weights: np.ndarray) -> np.ndarray | None:
    """Evenly spaced whole rows (about 1 Mi elements) of a big tensor, or None for small ones."""
    rows, width = cabac.matrix_view(weights.shape)
    if weights.size < SAMPLED_SEARCH_ELEMENTS or rows < 2:
        return None
    take = max(1, min(rows, _SAMPLE_ROWS_ELEMENTS // max(1, width)))
    picked = np.linspace(0, rows - 1, take).round().astype(np.int64)
    return np.ascontiguousarray(weights.reshape(rows, width)[np.unique(picked)])


def quantize_for_snr(
    weights: np.ndarray, plan: TensorPlan, options: CodingOptions, qp_range: tuple[int, int]
) -> tuple[cabac.QuantizedTensor, bool]:
    """Quantize at the largest QP in `qp_range` meeting the plan's SNR (checked on the real levels).

    `weights` is float32 C-contiguous; the SNR is measured against the original values
    (float64 originals are compared at their own precision by the caller's array). Returns the
    quantized tensor and whether it meets the target (False: even the finest QP of the range,
    or every QP the levels fit, misses it; the caller then sends the tensor exactly).

    NOTE: a tensor of `SAMPLED_SEARCH_ELEMENTS` or more searches on evenly spaced whole rows
    (about 1 Mi elements) instead, then quantizes whole once at the QP found, stepping finer only
    while the whole tensor misses the target. That is deterministic and holds the target, costs
    one full quantization instead of two or more, and keeps one set of levels in memory; the
    QP may be one step finer than the whole-tensor search would find.
    """
    lo = qp_range[0]
    sample = _row_sample(weights)
    if sample is not None:
        qp = _search(sample, plan, options, qp_range)[0].qp
        del sample
        trim()  # the search's freed temporaries, before the tensor-sized levels are allocated
        while True:  # finer until the whole tensor holds (at the finest allowed QP, take it)
            quantized = quantize_weights(weights, qp, plan.dq_flag, options)
            snr = levels_snr_db(weights, quantized.levels, quantized.qp, options.qp_density)
            met = quantized.qp == qp and snr >= plan.snr_db  # type: ignore[operator]
            if met or qp <= lo or quantized.qp != qp:  # an overflow does not improve finer
                return quantized, met
            del quantized
            qp -= 1
    return _search(weights, plan, options, qp_range)


def _search(
    weights: np.ndarray, plan: TensorPlan, options: CodingOptions, qp_range: tuple[int, int]
) -> tuple[cabac.QuantizedTensor, bool]:
    lo, hi = qp_range
    qpd = options.qp_density

    def trial(qp: int) -> tuple[cabac.QuantizedTensor, bool]:
        q = quantize_weights(weights, qp, plan.dq_flag, options)
        if q.qp != qp:  # the levels overflowed int32 and the quantizer chose another step
            return q, False
        ok = levels_snr_db(weights, q.levels, q.qp, qpd) >= plan.snr_db  # type: ignore[operator]
        return q, ok

    qp = min(hi, max(lo, plan.qp if plan.qp is not None else hi))
    best, ok = trial(qp)
    if ok:
        while qp < hi:  # coarser while the target holds
            q, coarser_ok = trial(qp + 1)
            if not coarser_ok:
                break
            qp, best = qp + 1, q
        return best, True
    while qp > lo:  # finer until it holds
        qp -= 1
        best, ok = trial(qp)
        if ok:
            break
    return best, ok


def grid_qp(array: np.ndarray, qp_density: int = _QP_DENSITY) -> int | None:
    """The coarsest QP on whose grid every value lies, bit-exactly after float32 reconstruction.

    Already-quantized models store integers times a step; when that step is a QP step (k + r)·2^e
    the tensor is coded losslessly on it. Negative zeros (which reconstruct as +0) rule it out.
    Candidates come from a sample; each is verified on the whole tensor in bounded chunks.
    """
    flat = array.reshape(-1)
    sample = flat if flat.size <= 4096 else flat[:: flat.size // 4096]
    with np.errstate(over="ignore", invalid="ignore"):
        magnitudes = np.abs(sample.astype(np.float64))
    magnitudes = magnitudes[magnitudes != 0]
    if magnitudes.size == 0:
        smallest = largest = 0.0
    else:
        smallest, largest = float(magnitudes.min()), float(magnitudes.max())
    if not (math.isfinite(smallest) and math.isfinite(largest)):
        return None
    k = 1 << qp_density
    if smallest == 0.0:
        candidates: range | list[int] = [-8 * k]  # all zero so far: any grid; step 2^-8 keeps offsets small
    else:
        first = min(qp_of_step(smallest, qp_density), QP_MAX)
        candidates = range(first, max(first - 26 * k, QP_MIN - 1), -1)  # steps float32 holds exactly
    for candidate in candidates:
        step = cabac.step_size(candidate, qp_density)
        if largest / step >= _MAX_GRID_LEVEL:
            break
        if _on_grid(sample, step, candidate, qp_density) and _on_grid(flat, step, candidate, qp_density):
            return candidate
    return None


_CHUNK = 1 << 20
_MAX_GRID_LEVEL = 1 << 22
"""Grids needing larger levels than this code worse than raw float32; such tensors travel raw."""


def _on_grid(values: np.ndarray, step: float, qp: int, qp_density: int) -> bool:
    """Whether Δ·round(v/Δ) in float32 reproduces every value's bits (in chunks of 1 Mi elements)."""
    for start in range(0, values.size, _CHUNK):
        chunk = values[start : start + _CHUNK]
        with np.errstate(over="ignore", invalid="ignore"):
            levels = np.rint(chunk.astype(np.float64) / step)
        if not bool(np.all(np.abs(levels) < 2**31 - 1)):  # also false for NaN
            return False
        recon = cabac.dequantize(np.ascontiguousarray(levels, dtype=np.int32), qp, qp_density)
        if chunk.dtype == np.float32:
            same = np.array_equal(recon.view(np.uint32), np.ascontiguousarray(chunk).view(np.uint32))
        else:
            with np.errstate(over="ignore"):  # past float16's range: inf, which differs anyway
                converted = recon.astype(chunk.dtype)
            same = np.array_equal(converted, chunk) and not bool(np.any(np.signbit(chunk) & (chunk == 0)))
        if not same:
            return False
    return True


def choose_mps_qp(qps: list[int], qp_density: int = _QP_DENSITY) -> tuple[int, tuple[int, int]]:
    """mps_quantization_parameter and the QP range every tensor QP must fall in (offset field width)."""
    half = 1 << (5 + qp_density)  # offsets are 6 + qp_density bits, two's complement
    if not qps:
        return 0, (-half, half - 1)
    lo, hi = min(qps), max(qps)
    mps = (lo + hi + 1) // 2 if hi - lo <= 2 * half - 1 else lo + half
    mps = max(-_QP_LIMIT, min(_QP_LIMIT, mps))
    return mps, (mps - half, mps + half - 1)
