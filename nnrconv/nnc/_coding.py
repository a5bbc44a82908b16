# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""How each tensor is coded: options, and the per-tensor decision (payload type, QP, grid).

NOTE: one global QP (NNCodec's way) starves small-magnitude tensors, so the default mode targets a
weight SNR per tensor: the largest step whose reconstruction (verified on the quantized values,
dependent quantization included) keeps the tensor's SNR at or above `snr_db`. Integer tensors are
always coded losslessly (NNR_PT_INT). `lossless` codes float tensors only when their values lie
exactly on a QP grid (already-quantized models) and carries the rest as raw float32.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from nnrconv.nnc import cabac
from nnrconv.nnc._enums import DecompressedDataFormat, PayloadType

__all__ = [
    "DEFAULT_SNR_DB",
    "CodingOptions",
    "TensorPlan",
    "carried_format",
    "choose_mps_qp",
    "plan_tensor",
    "quantize_weights",
]

DEFAULT_SNR_DB = 50.0
"""Default per-tensor weight SNR target (dB); see the README for the measurements behind it."""

NONWEIGHT_SNR_BONUS_DB = 20.0
"""Extra SNR for 1-D and 0-d tensors (biases, norms): few parameters, every output depends on them."""

EXACT_BELOW_ELEMENTS = 16
"""In SNR mode, float tensors with fewer elements (scalars, small constants) travel exactly."""

_QP_DENSITY = 2
_MIN_LAMBDA_SCALE = 1e-9  # smaller positive values would overflow the quantizer's 2^15 / lambda
_MAX_LAMBDA_SCALE = 1e9  # far beyond "every weight zero"; keeps the float32 argument finite
RATE_MODEL_UNARY_LENGTH_MINUS1 = 10
"""The rate model's greater-than flag count: the cabac_unary_length_minus1 every NDU header carries
(NNCodec's pipeline passes that value, not the + 1 it codes with, to its quantizer)."""
_QP_LIMIT = 4095  # mps_quantization_parameter is i(13)
_INT32 = np.iinfo(np.int32)
_INT_FORMATS = {
    np.dtype(np.int8): DecompressedDataFormat.TENSOR_INT8,
    np.dtype(np.int16): DecompressedDataFormat.TENSOR_INT16,
    np.dtype(np.int32): None,  # NNR_PT_INT's default output, as NNCodec writes it
    np.dtype(np.int64): DecompressedDataFormat.TENSOR_INT64,
    # No unsigned formats exist: these come back in the smallest signed type holding them and
    # the format plugin casts them to the topology's type exactly.
    np.dtype(np.uint8): DecompressedDataFormat.TENSOR_INT16,
    np.dtype(np.uint16): None,
    np.dtype(np.uint32): None,
    np.dtype(np.uint64): DecompressedDataFormat.TENSOR_INT64,
}
_FLOAT_FORMATS = {
    np.dtype(np.float32): None,
    np.dtype(np.float16): DecompressedDataFormat.TENSOR_FLOAT16,
    np.dtype(np.float64): DecompressedDataFormat.TENSOR_FLOAT64,
}


@dataclass(frozen=True, slots=True)
class CodingOptions:
    """How `encode_model` codes tensors.

    Attributes:
        snr_db: default mode: per-tensor weight SNR target in dB (1-D tensors get 20 dB more).
        qp: one QP for every float tensor of two or more dimensions; 1-D and 0-d tensors get
            NNCodec's non-weight rule qp - 2·2^qp_density (a step four times finer).
        lossless: bit-exact: integers as NNR_PT_INT, floats on a detectable QP grid as
            NNR_PT_FLOAT on that grid, other float32 raw (float16/float64 off-grid stay outside).
        dq: dependent (trellis-coded) quantization for lossy tensors.
        scan_order: 0 row-major, 1..4 blocks of 8, 16, 32, 64 with entry points.
        jobs: coding threads (default: the number of cores): tensors are coded side by side, and
            a big tensor with block scans (scan_order > 0) also splits its block rows across them.
        row_skip: signal all-zero rows (profile 1), as NNCodec's nn/tensor pipelines do.
        max_elements: decoder cap on one tensor's element count.
        codebook: per lossy float tensor, code a codebook of its levels (uniform quantization
            without DQ; with `dq` at a QP 2^qp_density finer) when that is smaller than uniform
            coding, as NNCodec's codebook_mode 2.
        lambda_scale: rate-distortion quantization, NNCodec's `lambda_scale`: 0 chooses the
            levels of least error; above 0 the quantizer (uniform, trellis, and the codebook's)
            gives up some error for fewer estimated CABAC bits, the more so the larger it is.
            With a fixed `qp` that means smaller payloads and a lower SNR at the same step; in
            SNR mode the QP search still meets the target, by choosing a finer step.

    Raises:
        ValueError: an option is out of range, or `qp`, `codebook` or `lambda_scale` is given
            with `lossless`.
    """

    snr_db: float = DEFAULT_SNR_DB
    qp: int | None = None
    lossless: bool = False
    dq: bool = True
    scan_order: int = 0
    jobs: int | None = None
    row_skip: bool = True
    max_elements: int = cabac.DEFAULT_MAX_ELEMENTS
    codebook: bool = False
    lambda_scale: float = 0.0

    def __post_init__(self) -> None:
        if self.codebook and self.lossless:
            raise ValueError("codebook and lossless are exclusive: codebooks quantize")
        if self.qp is not None and self.lossless:
            raise ValueError("qp and lossless are exclusive: lossless chooses each tensor's grid itself")
        if self.qp is not None and not -_QP_LIMIT <= self.qp <= _QP_LIMIT:
            raise ValueError(f"qp {self.qp!r} is outside -4095..4095")
        if not math.isfinite(self.snr_db) or not 0 < self.snr_db <= 200:
            raise ValueError(f"snr_db {self.snr_db!r} is not in (0, 200]")
        if self.scan_order not in range(5):
            raise ValueError(f"scan_order {self.scan_order!r} is not in 0..4")
        if self.jobs is not None and self.jobs < 1:
            raise ValueError(f"jobs {self.jobs!r} must be at least 1")
        lam = self.lambda_scale
        if not math.isfinite(lam) or lam < 0 or 0 < lam < _MIN_LAMBDA_SCALE or lam > _MAX_LAMBDA_SCALE:
            raise ValueError(f"lambda_scale {lam!r} is not 0 or in [{_MIN_LAMBDA_SCALE:g}, {_MAX_LAMBDA_SCALE:g}]")
        if lam and self.lossless:
            raise ValueError("lambda_scale and lossless are exclusive: rate-distortion decisions quantize")

    @property
    def mode(self) -> str:
        """'lossless', 'qp' or 'snr'."""
        return "lossless" if self.lossless else ("qp" if self.qp is not None else "snr")

    @property
    def workers(self) -> int:
        """Number of coding threads."""
        return self.jobs or os.cpu_count() or 1

    @property
    def qp_density(self) -> int:
        """mps_qp_density: 2, NNCodec's value."""
        return _QP_DENSITY


@dataclass(frozen=True, slots=True)
class TensorPlan:
    """What one tensor becomes.

    Attributes:
        payload_type: NNR_PT_INT, NNR_PT_FLOAT or NNR_PT_RAW_FLOAT.
        decompressed_format: `nnr_decompressed_data_format`, None for the payload type's default.
        qp: NNR_PT_FLOAT: the QP (an estimate until `finalize`), None for an all-zero tensor.
        dq_flag: dependent quantization.
        exact: the levels must reconstruct the tensor bit-exactly (grid coding).
        snr_db: the SNR target in SNR mode, else None.
    """

    payload_type: PayloadType
    decompressed_format: DecompressedDataFormat | None = None
    qp: int | None = None
    dq_flag: bool = False
    exact: bool = False
    snr_db: float | None = None


def carried_format(dtype: np.dtype) -> bool:
    """Whether tensors of this dtype can be carried at all (values permitting)."""
    return dtype in _FLOAT_FORMATS or dtype in _INT_FORMATS


def _is_weight(array: np.ndarray) -> bool:
    return array.ndim >= 2


def plan_tensor(array: np.ndarray, options: CodingOptions) -> TensorPlan | None:
    """Decide how a tensor is coded; None when it cannot be carried (it stays in the topology)."""
    dtype = array.dtype.newbyteorder("=") if array.dtype.byteorder == ">" else array.dtype
    dtype = np.dtype(dtype)
    if dtype in _INT_FORMATS:
        if array.size == 0:
            return None
        if dtype.itemsize > 4 or dtype == np.uint32:
            lo, hi = (int(array.min()), int(array.max()))
            if lo < _INT32.min or hi > _INT32.max:
                return None
        return TensorPlan(PayloadType.NNR_PT_INT, _INT_FORMATS[dtype])
    if dtype not in _FLOAT_FORMATS:
        return None
    fmt = _FLOAT_FORMATS[dtype]
    if array.size == 0 or not (math.isfinite(float(array.min())) and math.isfinite(float(array.max()))):
        return TensorPlan(PayloadType.NNR_PT_RAW_FLOAT) if fmt is None else None
    too_big = dtype == np.float64 and max(-float(array.min()), float(array.max())) > float(np.finfo(np.float32).max)
    if too_big and not options.lossless:
        return None
    small = array.size < EXACT_BELOW_ELEMENTS and options.mode == "snr"
    if options.lossless or small:
        qp = grid_qp(array, options.qp_density)
        if qp is not None:
            return TensorPlan(PayloadType.NNR_PT_FLOAT, fmt, qp, False, exact=True)
        return TensorPlan(PayloadType.NNR_PT_RAW_FLOAT) if fmt is None else None
    if options.qp is not None:
        qp = options.qp if _is_weight(array) else options.qp - 2 * (1 << options.qp_density)
        return TensorPlan(PayloadType.NNR_PT_FLOAT, fmt, qp, options.dq)
    target = options.snr_db + (0.0 if _is_weight(array) else NONWEIGHT_SNR_BONUS_DB)
    return TensorPlan(PayloadType.NNR_PT_FLOAT, fmt, _estimate_qp(array, target, options), options.dq, snr_db=target)


# -- QP choice --------------------------------------------------------------------------------


def qp_of_step(step: float, qp_density: int = _QP_DENSITY) -> int:
    """The largest QP whose step does not exceed `step`."""
    k = 1 << qp_density
    e = math.floor(math.log2(step))
    qp = e * k + math.floor((step / 2.0**e - 1.0) * k)
    while cabac.step_size(qp, qp_density) > step:
        qp -= 1
    while cabac.step_size(qp + 1, qp_density) <= step:
        qp += 1
    return qp


_STATS_CHUNK = 1 << 21
"""Elements per float64 pass in `_power` and `snr_db`: their temporaries stay at a few times
16 MB whatever the tensor's size (a tensor of one chunk is summed exactly as before)."""


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
    return max(-_QP_LIMIT, min(_QP_LIMIT, qp_of_step(step, options.qp_density)))


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
    """`snr_db` of the weights against their dequantized levels, dequantized chunk by chunk."""
    noise = signal = 0.0
    for w, q in zip(_chunks(weights), _chunks(levels), strict=True):
        a = w.astype(np.float64, copy=False)
        diff = a - cabac.dequantize(np.ascontiguousarray(q), qp, qp_density).astype(np.float64)
        noise += float(np.dot(diff, diff))
        signal += float(np.dot(a, a))
    if noise == 0.0:
        return math.inf
    return -math.inf if signal == 0.0 else 10.0 * math.log10(signal / noise)


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
) -> cabac.QuantizedTensor:
    """Quantize at the largest QP in `qp_range` meeting the plan's SNR (checked on the real levels).

    `weights` is float32 C-contiguous; the SNR is measured against the original values
    (float64 originals are compared at their own precision by the caller's array).

    NOTE: a tensor of `SAMPLED_SEARCH_ELEMENTS` or more searches on evenly spaced whole rows
    (about 1 Mi elements) instead, then quantizes whole once at the QP found, stepping finer only
    while the whole tensor misses the target. That is deterministic and holds the target, costs
    one full quantization instead of two or more, and keeps one set of levels in memory; the
    QP may be one step finer than the whole-tensor search would find.
    """
    lo = qp_range[0]
    sample = _row_sample(weights)
    if sample is not None:
        qp = _search(sample, plan, options, qp_range).qp
        while True:  # finer until the whole tensor holds (at the finest allowed QP, take it)
            quantized = quantize_weights(weights, qp, plan.dq_flag, options)
            snr = levels_snr_db(weights, quantized.levels, quantized.qp, options.qp_density)
            if qp <= lo or snr >= plan.snr_db:  # type: ignore[operator]
                return quantized
            del quantized
            qp -= 1
    return _search(weights, plan, options, qp_range)


def _search(
    weights: np.ndarray, plan: TensorPlan, options: CodingOptions, qp_range: tuple[int, int]
) -> cabac.QuantizedTensor:
    lo, hi = qp_range
    qpd = options.qp_density

    def trial(qp: int) -> tuple[cabac.QuantizedTensor, bool]:
        q = quantize_weights(weights, qp, plan.dq_flag, options)
        ok = levels_snr_db(weights, q.levels, q.qp, qpd) >= plan.snr_db  # type: ignore[operator]
        return q, ok

    qp = min(hi, max(lo, plan.qp if plan.qp is not None else hi))
    best, ok = trial(qp)
    if ok:
        while qp < hi:  # coarser while the target holds
            q, ok = trial(qp + 1)
            if not ok:
                break
            qp, best = qp + 1, q
        return best
    while qp > lo:  # finer until it holds (at the finest allowed QP, take what it gives)
        qp -= 1
        best, ok = trial(qp)
        if ok:
            break
    return best


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
        first = qp_of_step(smallest, qp_density)
        candidates = range(first, first - 26 * k, -1)
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
