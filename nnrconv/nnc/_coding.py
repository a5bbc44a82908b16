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

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from nnrconv.core._tensor import TensorRole
from nnrconv.nnc import cabac
from nnrconv.nnc._enums import DecompressedDataFormat, PayloadType

__all__ = [
    "BFLOAT16_SNR_DB",
    "DEFAULT_SNR_DB",
    "CodingOptions",
    "TensorChoice",
    "TensorPlan",
    "carried_format",
    "choose_mps_qp",
    "is_weight",
    "carries",
    "plan_tensor",
    "quantize_weights",
]

DEFAULT_SNR_DB = 50.0
"""Default per-tensor weight SNR target (dB) of float32, float16 and float64 tensors; see the
README for the measurements behind it."""

BFLOAT16_SNR_DB = 40.0
"""Default weight SNR target (dB) of tensors that were bfloat16 (`CodingOptions.bfloat16_tensors`).

bfloat16 keeps 8 significant bits, and 40 dB is about the error of int8 per-tensor
round-to-nearest, which weight-only quantization studies find lossless for language models; at
50 dB a Gaussian tensor cannot go below ~8.3 bits/param (rate-distortion bound), more than the
16 bits it came in halved. The README gives the measured bits/param and output cosine."""

NONWEIGHT_SNR_BONUS_DB = 20.0
"""Extra SNR for 1-D and 0-d tensors (biases, norms): few parameters, every output depends on them."""

EXACT_BELOW_ELEMENTS = 16
"""Float tensors with fewer elements (scalars, small constants) travel exactly, in every mode.

They cost a few bytes, and a quantized constant can break a network: an attention mask built as
(one - mask) · -3.4e38 turns the error of a coded `one` into scores of ±1e34."""

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
class TensorChoice:
    """One tensor's coding, decided by a rate allocator above nnc (`CodingOptions.plan`).

    Fields left at None take the options' own rule. Only lossy float tensors use a choice: integer
    tensors stay lossless and non-finite ones raw, whatever the plan says.

    Attributes:
        qp: the tensor's QP (used as given: no non-weight offset is applied).
        dq: dependent quantization.
        lambda_scale: rate-distortion quantization for this tensor (see `CodingOptions`).
        codebook: try NNCodec's codebook mode for this tensor.
        exact: code the tensor bit-exactly (on its grid when it has one, else raw float32).
    """

    qp: int | None = None
    dq: bool | None = None
    lambda_scale: float | None = None
    codebook: bool | None = None
    exact: bool = False

    def __post_init__(self) -> None:
        if self.qp is not None and not -_QP_LIMIT <= self.qp <= _QP_LIMIT:
            raise ValueError(f"qp {self.qp!r} is outside -4095..4095")
        lam = self.lambda_scale
        if lam is not None and (
            not math.isfinite(lam) or lam < 0 or 0 < lam < _MIN_LAMBDA_SCALE or lam > _MAX_LAMBDA_SCALE
        ):
            raise ValueError(f"lambda_scale {lam!r} is not 0 or in [{_MIN_LAMBDA_SCALE:g}, {_MAX_LAMBDA_SCALE:g}]")


@dataclass(frozen=True, slots=True)
class CodingOptions:
    """How `encode_model` codes tensors.

    Attributes:
        snr_db: default mode: per-tensor weight SNR target in dB (1-D tensors get 20 dB more);
            None (the default) takes it per source dtype: BFLOAT16_SNR_DB for the tensors named
            in `bfloat16_tensors`, DEFAULT_SNR_DB for every other float tensor. A number applies
            to all.
        qp: one QP for every float tensor of two or more dimensions; 1-D and 0-d tensors get
            NNCodec's non-weight rule qp - 2·2^qp_density (a step four times finer); tensors
            under EXACT_BELOW_ELEMENTS elements travel exactly.
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
        plan: per tensor name, a `TensorChoice` overriding the mode's rule for that tensor (what
            a rate allocator decided); tensors not named follow the mode.
        output_snr_db, bits_per_param, size_bytes: a target for the rate allocator above nnc
            (`nnrconv.convert` turns it into a `plan`): output SNR on calibration inputs, bits per
            coded float parameter, or bytes of the whole bitstream. At most one; nnc itself
            codes the plan (and follows the mode for tensors the plan does not name).
        bfloat16_tensors: names of float32 tensors that are the exact view of bfloat16 ones
            (filled by the format layer, which knows what a tensor was before its carrier); they
            take BFLOAT16_SNR_DB when `snr_db` is None.
        roles: per tensor name, its `TensorRole` as the format plugin knows it from the graph:
            WEIGHT tensors are coded at `qp` / `snr_db`, biases and batch-norm tensors at the
            finer QP / higher SNR of non-weights. A tensor not named, or of role OTHER, is a
            weight when it has two dimensions or more (NNCodec's rule).
        importance: for an update (`encode_update`), per tensor name, a measured output
            improvement (`nnrconv._update_order`: the output error left when that tensor alone
            keeps its base value); data units go out in decreasing improvement per byte. Without
            it (or when it leaves a float tensor out), the relative difference energy stands in
            (`importance_order`).

    Raises:
        ValueError: an option is out of range, or `qp`, `codebook` or `lambda_scale` is given
            with `lossless`.
    """

    snr_db: float | None = None
    qp: int | None = None
    lossless: bool = False
    dq: bool = True
    scan_order: int = 0
    jobs: int | None = None
    row_skip: bool = True
    max_elements: int = cabac.DEFAULT_MAX_ELEMENTS
    codebook: bool = False
    lambda_scale: float = 0.0
    plan: Mapping[str, TensorChoice] | None = field(default=None, hash=False)
    output_snr_db: float | None = None
    bits_per_param: float | None = None
    size_bytes: int | None = None
    bfloat16_tensors: frozenset[str] = frozenset()
    roles: Mapping[str, TensorRole] | None = field(default=None, hash=False)
    importance: Mapping[str, float] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        targets = [t for t in (self.output_snr_db, self.bits_per_param, self.size_bytes) if t is not None]
        if len(targets) > 1:
            raise ValueError("output_snr_db, bits_per_param and size_bytes are exclusive targets; give one")
        if targets and (self.lossless or self.qp is not None):
            raise ValueError("a rate target chooses each tensor's QP; it excludes qp and lossless")
        if self.output_snr_db is not None and not (math.isfinite(self.output_snr_db) and 0 < self.output_snr_db <= 200):
            raise ValueError(f"output_snr_db {self.output_snr_db!r} is not in (0, 200]")
        bpp = self.bits_per_param
        if bpp is not None and not (math.isfinite(bpp) and 0 < bpp <= 32):
            raise ValueError(f"bits_per_param {self.bits_per_param!r} is not in (0, 32]")
        if self.size_bytes is not None and self.size_bytes <= 0:
            raise ValueError(f"size_bytes {self.size_bytes!r} must be positive")
        if self.plan and self.lossless:
            raise ValueError("plan and lossless are exclusive: a plan quantizes")
        if self.codebook and self.lossless:
            raise ValueError("codebook and lossless are exclusive: codebooks quantize")
        if self.qp is not None and self.lossless:
            raise ValueError("qp and lossless are exclusive: lossless chooses each tensor's grid itself")
        if self.qp is not None and not -_QP_LIMIT <= self.qp <= _QP_LIMIT:
            raise ValueError(f"qp {self.qp!r} is outside -4095..4095")
        if self.snr_db is not None and (not math.isfinite(self.snr_db) or not 0 < self.snr_db <= 200):
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
    def target(self) -> tuple[str, float] | None:
        """The rate target, as ("output_snr_db" | "bits_per_param" | "size_bytes", value)."""
        for name in ("output_snr_db", "bits_per_param", "size_bytes"):
            value = getattr(self, name)
            if value is not None:
                return name, float(value)
        return None

    def weight_snr_db(self, name: str | None = None) -> float:
        """The SNR target of the weight tensor `name` (before the non-weight bonus)."""
        if self.snr_db is not None:
            return self.snr_db
        return BFLOAT16_SNR_DB if name is not None and name in self.bfloat16_tensors else DEFAULT_SNR_DB

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
        peak: the largest magnitude, for fitting the QP into the model's offset window.
    """

    payload_type: PayloadType
    decompressed_format: DecompressedDataFormat | None = None
    qp: int | None = None
    dq_flag: bool = False
    exact: bool = False
    snr_db: float | None = None
    peak: float = 0.0
    """The tensor's largest magnitude (finite), which bounds the QPs whose levels fit int32."""


def carried_format(dtype: np.dtype) -> bool:
    """Whether tensors of this dtype can be carried at all (values permitting)."""
    return dtype in _FLOAT_FORMATS or dtype in _INT_FORMATS


def is_weight(name: str, array: np.ndarray, options: CodingOptions) -> bool:
    """Whether a tensor is coded as a weight: by its role when `options.roles` gives one (WEIGHT
    or a bias/batch-norm role), else by its number of dimensions.

    NOTE: OTHER counts as no role: plugins leave it on tensors whose use they did not classify
    (ONNX `Gather` tables, custom ops), and coding a large embedding table as a non-weight
    would cost 20 dB of SNR in bits for nothing.
    """
    role = options.roles.get(name) if options.roles else None
    if role is None or role is TensorRole.OTHER:
        return array.ndim >= 2
    return role is TensorRole.WEIGHT


def plan_tensor(
    array: np.ndarray, options: CodingOptions, *, weight: bool | None = None, name: str | None = None
) -> TensorPlan | None:
    """Decide how a tensor is coded; None when it cannot be carried (it stays in the topology).

    `name` picks the tensor's default SNR target (`CodingOptions.weight_snr_db`).

    Every finite float tensor plans: when its values do not suit the requested step (levels
    that would overflow int32, a reconstruction past float32's range, or a step that would zero
    most of it because a few sentinel values such as ±FLT_MAX dominate its power) it travels
    exactly instead: on its QP grid, else as raw float32 (float16/float64 that need raw float32
    to be exact in lossless mode stay in the topology, where they are smaller). `weight`: whether
    it is a weight (`is_weight`); None guesses from its dimensions.
    """
    if weight is None:
        weight = array.ndim >= 2
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
    if array.size == 0:
        return TensorPlan(PayloadType.NNR_PT_RAW_FLOAT) if fmt is None else None
    with np.errstate(over="ignore", invalid="ignore"):
        low, high = float(array.min()), float(array.max())
    if not (math.isfinite(low) and math.isfinite(high)):  # inf or NaN (NaN payloads kept bit for bit)
        return TensorPlan(PayloadType.NNR_PT_RAW_FLOAT) if fmt is None else None
    peak = max(-low, high)
    if not options.lossless and (peak > _FLOAT32_MAX or 0.0 < peak < _FLOAT32_TINY):
        return None  # float64 beyond float32's range: only its own type holds it
    small = array.size < EXACT_BELOW_ELEMENTS
    if options.lossless or small:
        return exact_plan(array, options, peak, lossy_raw=False)
    if options.qp is not None:
        qp = options.qp if weight else options.qp - 2 * (1 << options.qp_density)
        qp = max(QP_MIN, min(QP_MAX, qp))
        if not _step_holds(peak, qp, options.qp_density, dtype):
            return exact_plan(array, options, peak)
        return TensorPlan(PayloadType.NNR_PT_FLOAT, fmt, qp, options.dq, peak=peak)
    target = options.weight_snr_db(name) + (0.0 if weight else NONWEIGHT_SNR_BONUS_DB)
    qp = _estimate_qp(array, target, options)
    if qp is not None and (
        not _step_holds(peak, qp, options.qp_density, dtype) or _zeroes_most(array, peak, qp, options)
    ):
        return exact_plan(array, options, peak)
    return TensorPlan(PayloadType.NNR_PT_FLOAT, fmt, qp, options.dq, snr_db=target, peak=peak)


def carries(array: np.ndarray, options: CodingOptions) -> bool:
    """Whether `plan_tensor(array, options)` plans the tensor (is not None), without planning it.

    NOTE: the carry decision is taken for every tensor before coding; planning there too would
    run the QP search twice. Only the cases where `plan_tensor` returns None are checked here
    (the lossy paths always plan once the values are finite and in float32's range), and a
    test holds the two to the same answer.
    """
    dtype = np.dtype(array.dtype.newbyteorder("=") if array.dtype.byteorder == ">" else array.dtype)
    if dtype in _INT_FORMATS or dtype not in _FLOAT_FORMATS or array.size == 0:
        return plan_tensor(array, options) is not None  # cheap: no QP search for these
    fmt = _FLOAT_FORMATS[dtype]
    with np.errstate(over="ignore", invalid="ignore"):
        low, high = float(array.min()), float(array.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        return fmt is None
    peak = max(-low, high)
    if not options.lossless and (peak > _FLOAT32_MAX or 0.0 < peak < _FLOAT32_TINY):
        return False
    if options.lossless or array.size < EXACT_BELOW_ELEMENTS:
        return fmt is None or exact_plan(array, options, peak, lossy_raw=False) is not None
    return True


def exact_plan(array: np.ndarray, options: CodingOptions, peak: float, *, lossy_raw: bool = True) -> TensorPlan | None:
    """The tensor bit-exactly: on its QP grid when it has one, else raw float32.

    Raw float32 is exact for float32 and float16; for float64 it rounds (2^-24 relative, far
    below any SNR target), which `lossy_raw` allows. Otherwise None: the tensor stays in the
    topology.
    """
    dtype = np.dtype(array.dtype.newbyteorder("=") if array.dtype.byteorder == ">" else array.dtype)
    fmt = _FLOAT_FORMATS[dtype]
    qp = grid_qp(array, options.qp_density)
    if qp is not None:
        return TensorPlan(PayloadType.NNR_PT_FLOAT, fmt, qp, False, exact=True, peak=peak)
    if fmt is None or (lossy_raw and peak <= _FLOAT32_MAX):
        return TensorPlan(PayloadType.NNR_PT_RAW_FLOAT)
    return None


_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FLOAT32_TINY = float(np.finfo(np.float32).smallest_subnormal)
LEVEL_LIMIT = float(1 << 30)
"""Largest level magnitude a plan allows: int32 with room for the trellis' ±1 choices."""


def _step_holds(peak: float, qp: int, qp_density: int, dtype: np.dtype) -> bool:
    """Whether Δ(qp) holds values up to `peak`: levels within LEVEL_LIMIT and every reconstruction
    (a level or two beyond the peak, with DQ) finite in float32 and in the tensor's own type."""
    step = cabac.step_size(qp, qp_density)
    largest = min(_FLOAT32_MAX, float(np.finfo(dtype).max))
    return peak / step <= LEVEL_LIMIT and peak + 2.0 * step <= largest


_SENTINEL_RATIO = float(1 << 20)
"""A peak this many times the median magnitude is a sentinel, not a weight (trained weights stay
far below: a Laplacian's peak over a million draws is about 20 times its median)."""


def _zeroes_most(array: np.ndarray, peak: float, qp: int, options: CodingOptions) -> bool:
    """Whether sentinels set the step: the peak is over _SENTINEL_RATIO times the median non-zero
    magnitude and the step rounds more than half of the non-zero values to zero.

    That happens when a few extreme values (attention-mask sentinels such as -3.4e38 next to
    ordinary numbers) set the tensor's power: the SNR target is met while everything else is lost.
    Heavy-tailed weights at a low SNR target also zero most values, but they are coded as asked.
    """
    flat = array.reshape(-1)
    sample = flat if flat.size <= 4096 else flat[:: flat.size // 4096]
    magnitudes = np.abs(sample.astype(np.float64))
    magnitudes = magnitudes[magnitudes != 0]
    if magnitudes.size == 0:
        return False
    median = float(np.median(magnitudes))
    return peak > _SENTINEL_RATIO * median and median < 0.5 * cabac.step_size(qp, options.qp_density)


def _usable_qps(qp_density: int) -> tuple[int, int]:
    """QPs whose float32 step is exactly (k + r)·2^(e - qp_density): neither rounded (denormal) nor inf."""
    k = 1 << qp_density

    def exact(qp: int) -> bool:
        step = (k + (qp & (k - 1))) * 2.0 ** ((qp >> qp_density) - qp_density)
        return cabac.step_size(qp, qp_density) == step and math.isfinite(step) and step <= _FLOAT32_MAX

    lo = 0
    while exact(lo - 1):
        lo -= 1
    hi = 0
    while exact(hi + 1):
        hi += 1
    return lo, hi


QP_MIN, QP_MAX = _usable_qps(_QP_DENSITY)
"""The QPs (at qp_density 2) whose step float32 represents exactly: -588..511."""


def plan_choice(
    array: np.ndarray,
    choice: TensorChoice,
    options: CodingOptions,
    *,
    weight: bool | None = None,
    name: str | None = None,
) -> TensorPlan | None:
    """`plan_tensor` with a rate allocator's decision applied to a lossy float tensor."""
    base = plan_tensor(array, options, weight=weight, name=name)
    if base is None or base.payload_type != PayloadType.NNR_PT_FLOAT or base.exact:
        return base  # integers, raw or already exact: a choice changes nothing
    if choice.exact:
        qp = grid_qp(array, options.qp_density)
        if qp is not None:
            return TensorPlan(PayloadType.NNR_PT_FLOAT, base.decompressed_format, qp, False, exact=True)
        return TensorPlan(PayloadType.NNR_PT_RAW_FLOAT) if base.decompressed_format is None else base
    dq = base.dq_flag if choice.dq is None else choice.dq
    if choice.qp is None:
        return TensorPlan(base.payload_type, base.decompressed_format, base.qp, dq, snr_db=base.snr_db)
    return TensorPlan(PayloadType.NNR_PT_FLOAT, base.decompressed_format, choice.qp, dq)


def choice_options(choice: TensorChoice, options: CodingOptions) -> CodingOptions:
    """The options one tensor is coded with: the choice's λ and codebook over the model's."""
    changes: dict[str, object] = {}
    if choice.lambda_scale is not None and choice.lambda_scale != options.lambda_scale:
        changes["lambda_scale"] = choice.lambda_scale
    if choice.codebook is not None and choice.codebook != options.codebook:
        changes["codebook"] = choice.codebook
    return dataclasses.replace(options, plan=None, **changes) if changes else options  # type: ignore[arg-type]


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


# At the end: `_snr_search` takes the types defined above (plan_tensor, exact_plan and plan_choice
# call these only at run time).
from nnrconv.nnc._snr_search import (  # noqa: E402
    _estimate_qp,
    choose_mps_qp,
    grid_qp,
    quantize_weights,
)
