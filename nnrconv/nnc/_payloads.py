# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""DeepCABAC-coded NDU payloads: NNR_PT_INT and NNR_PT_FLOAT, one tensor per NDU.

ISO/IEC 15938-17 clause 7.3.6 (`nnr_compressed_data_unit_payload()`) with the per-tensor order of
the reference software: for NNR_PT_FLOAT the QP offset (6 + qp_density bypass bits, relative to
the LPS or MPS quantization_parameter), then the levels; for NNR_PT_INT the levels alone. The
2nd-edition `nnr_decompressed_data_format` tells the decoder which element type to return.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from nnrconv.core._errors import BitstreamError
from nnrconv.nnc import cabac
from nnrconv.nnc._codebook import choose_codebook
from nnrconv.nnc._coding import (
    LEVEL_LIMIT,
    CodingOptions,
    TensorPlan,
)
from nnrconv.nnc._enums import DecompressedDataFormat, ParentNodeIdType, PayloadType
from nnrconv.nnc._ndu import NduHeader, NodeId
from nnrconv.nnc._ndu_elements import Codebook, ParentNodeId
from nnrconv.nnc._snr_search import quantize_for_snr, quantize_weights, snr_db

__all__ = [
    "CodedPayload",
    "OutsideWindow",
    "PayloadSettings",
    "QuantizedPayload",
    "UpdateParent",
    "decode_levels_payload",
    "encode_payload",
    "output_dtype",
    "quantize_payload",
]

_CABAC_UNARY_LENGTH_MINUS1 = 10

_OUTPUT_DTYPES = {
    DecompressedDataFormat.TENSOR_INT32: np.dtype(np.int32),
    DecompressedDataFormat.TENSOR_FLOAT32: np.dtype(np.float32),
    DecompressedDataFormat.TENSOR_INT2: np.dtype(np.int8),
    DecompressedDataFormat.TENSOR_INT3: np.dtype(np.int8),
    DecompressedDataFormat.TENSOR_INT4: np.dtype(np.int8),
    DecompressedDataFormat.TENSOR_INT8: np.dtype(np.int8),
    DecompressedDataFormat.TENSOR_INT16: np.dtype(np.int16),
    DecompressedDataFormat.TENSOR_INT64: np.dtype(np.int64),
    DecompressedDataFormat.TENSOR_FLOAT16: np.dtype(np.float16),
    DecompressedDataFormat.TENSOR_FLOAT64: np.dtype(np.float64),
}
_INT_BITS = {
    DecompressedDataFormat.TENSOR_INT2: 2,
    DecompressedDataFormat.TENSOR_INT3: 3,
    DecompressedDataFormat.TENSOR_INT4: 4,
    DecompressedDataFormat.TENSOR_INT8: 8,
    DecompressedDataFormat.TENSOR_INT16: 16,
}
_FLOAT_OUTPUTS = frozenset(
    {
        DecompressedDataFormat.TENSOR_FLOAT32,
        DecompressedDataFormat.TENSOR_FLOAT16,
        DecompressedDataFormat.TENSOR_FLOAT64,
    }
)


class OutsideWindow(ValueError):
    """No QP of the model's offset window codes this tensor as planned; it must travel exactly."""


@dataclass(frozen=True, slots=True)
class PayloadSettings:
    """Model-wide values a tensor's coding depends on."""

    options: CodingOptions
    mps_qp: int
    qp_range: tuple[int, int]
    profile: int = 1


@dataclass(frozen=True, slots=True)
class CodedPayload:
    """The header and payload of one entropy-coded NDU, plus what `inspect` reports.

    `empty` says all levels are zero: an update NDU that changes nothing, which the encoder of an
    incremental update leaves out (as NNCodec does).
    """

    header: NduHeader
    payload: bytes
    qp: int | None
    empty: bool = False


@dataclass(frozen=True, slots=True)
class UpdateParent:
    """What coding a tensor as a difference to its parent (a base model's tensor) needs.

    Attributes:
        values: the parent's decoded tensor; the NDU codes the quantized difference to it.
        node_id: the parent NDU's node; the update's node is one level deeper.
        levels: the parent's int32 levels, for temporal context adaptation (None: no TCA).
        history: uint8 significance history for HDSP (None: no HDSP).
        payload_sha256: SHA-256 of the parent NDU's payload: the update names its parent by it
            (parent_node_id_type ICNN_NDU_PL_SHA256), binding it to that exact parent; None names
            the parent by node id (ICNN_NDU_ID).
    """

    values: np.ndarray
    node_id: NodeId
    levels: np.ndarray | None = None
    history: np.ndarray | None = None
    payload_sha256: bytes | None = None


def output_dtype(payload_type: PayloadType, fmt: DecompressedDataFormat | None) -> np.dtype:
    """The element type a decoded tensor is returned in."""
    if fmt is None:
        return np.dtype(np.int32) if payload_type == PayloadType.NNR_PT_INT else np.dtype(np.float32)
    return _OUTPUT_DTYPES[fmt]


def _coding(header: NduHeader, profile: int, codebook: tuple[int, int] = (0, 0)) -> cabac.TensorCoding:
    unary = header.cabac_unary_length_minus1
    return cabac.TensorCoding(
        dq_flag=header.dq_flag,
        scan_order=header.scan_order,
        cabac_unary_length_minus1=_CABAC_UNARY_LENGTH_MINUS1 if unary is None else unary,
        # Profile values other than 1 read as profile 0 everywhere (UnitContext.is_profile_1).
        general_profile_idc=1 if profile == 1 else 0,
        parent_node_id_present_flag=header.parent_node_id is not None,
        codebook_size=codebook[0],
        codebook_zero_offset=codebook[1],
    )


def _levels_and_qp(
    name: str, array: np.ndarray, plan: TensorPlan, settings: PayloadSettings
) -> tuple[np.ndarray, int | None]:
    options = settings.options
    qpd = options.qp_density
    lo, hi = settings.qp_range
    if plan.payload_type == PayloadType.NNR_PT_INT:
        return np.ascontiguousarray(array.reshape(array.shape or (1,)), dtype=np.int32), None
    qp = plan.qp if plan.qp is not None else settings.mps_qp
    if plan.exact:
        k = 1 << qpd
        while qp > hi:  # one octave finer halves the step: the values stay on the grid
            qp -= k
        if qp < lo:
            raise OutsideWindow(f"its grid QP {qp} is outside {lo}..{hi}")
        levels = _exact_levels(array, qp, qpd)
        if levels is None:
            raise OutsideWindow(f"values are not on the grid of QP {qp}")
        return levels, qp
    weights = np.ascontiguousarray(array.reshape(array.shape or (1,)), dtype=np.float32)
    if plan.snr_db is None:
        quantized = quantize_weights(weights, min(hi, max(lo, qp)), plan.dq_flag, options)
    else:
        quantized, met = quantize_for_snr(weights, plan, options, settings.qp_range)
        if not met:
            raise OutsideWindow(f"no QP in {lo}..{hi} meets its {plan.snr_db:g} dB target")
    if not lo <= quantized.qp <= hi:
        raise OutsideWindow(f"QP {quantized.qp} does not fit the offset field around {settings.mps_qp}")
    if array.dtype == np.float16 and quantized.levels.size:
        # A coarser step than planned may reconstruct past float16's range, which decodes as inf.
        largest = float(np.abs(quantized.levels).max()) * cabac.step_size(quantized.qp, qpd)
        if largest > float(np.finfo(np.float16).max):
            raise OutsideWindow(f"QP {quantized.qp} reconstructs {largest:g}, beyond float16")
    return quantized.levels, quantized.qp


def _exact_levels(array: np.ndarray, qp: int, qp_density: int) -> np.ndarray | None:
    """The int32 levels that reconstruct the values bit-exactly at this QP, or None."""
    step = cabac.step_size(qp, qp_density)
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = np.rint(array.astype(np.float64).reshape(array.shape or (1,)) / step)
    if not bool(np.all(np.abs(scaled) <= LEVEL_LIMIT)):  # also false for NaN
        return None
    levels = np.ascontiguousarray(scaled, np.int32)
    same = np.array_equal(cabac.dequantize(levels, qp, qp_density).astype(array.dtype).reshape(array.shape), array)
    return levels if same else None


def _difference_levels(
    name: str, array: np.ndarray, plan: TensorPlan, settings: PayloadSettings, parent: UpdateParent
) -> tuple[np.ndarray, int]:
    """Levels of (tensor - parent) at the QP a full coding of the tensor would use, so that the
    restored tensor (parent + difference) is as close to the tensor as a full coding."""
    _, qp = _levels_and_qp(name, array, plan, settings)
    assert qp is not None
    dims = array.shape or (1,)
    diff = np.ascontiguousarray(array.astype(np.float32).reshape(dims) - parent.values.reshape(dims), np.float32)
    quantized = quantize_weights(diff, qp, plan.dq_flag, settings.options)
    lo, hi = settings.qp_range
    if not lo <= quantized.qp <= hi:
        raise OutsideWindow(f"QP {quantized.qp} does not fit the offset field around {settings.mps_qp}")
    return quantized.levels, quantized.qp


def encode_payload(
    name: str,
    array: np.ndarray,
    plan: TensorPlan,
    settings: PayloadSettings,
    index: int | NodeId,
    parent: UpdateParent | None = None,
    threads: int = 1,
) -> CodedPayload:
    """Quantize (as planned) and entropy-code one tensor as an NNR_PT_INT or NNR_PT_FLOAT NDU.

    With `parent` (a lossy NNR_PT_FLOAT plan) the NDU is a differential update of the parent
    tensor: it codes the quantized difference, with temporal context adaptation on the parent's
    levels and HDSP where that codes smaller (NNCodec's compress_differences with tca and
    hdsp_tool).  With a scan order, the block rows are coded on up to `threads` threads (the
    payload is the same; updates with a parent stay on one).
    """
    return quantize_payload(name, array, plan, settings, index, parent, threads).entropy_code()


@dataclass(slots=True)
class QuantizedPayload:
    """A tensor quantized and its NDU header chosen, not yet entropy-coded.

    Holds the levels but not the weights, so that a caller who owns the weights can drop them
    before CABAC: coding a big tensor then never holds its float32 values, its levels and its
    payload at once (what bounds a streaming encoder's memory).
    """

    header: NduHeader
    levels: np.ndarray
    qp: int | None
    mps_qp: int
    qp_density: int
    coding: cabac.TensorCoding
    row_skip: bool
    base: np.ndarray | None
    history: np.ndarray | None
    threads: int
    update: bool

    def entropy_code(self) -> CodedPayload:
        """CABAC-code the levels (with and without HDSP when there is a history: the smaller)."""
        levels, qp, qpd = self.levels, self.qp, self.qp_density

        def code(use_history: bool) -> bytes:
            enc = cabac.PayloadEncoder()
            if qp is not None:
                enc.encode_qp_offset(qp - self.mps_qp, qpd)
            enc.encode_levels(
                levels,
                self.coding,
                row_skip=self.row_skip,
                base=self.base,
                history=self.history if use_history else None,
                threads=self.threads,
            )
            return enc.finish()

        if self.history is not None:
            payload, used_history = cabac.smaller_with_or_without_hdsp(code)
        else:
            payload, used_history = code(False), False
        header = self.header
        if header.scan_order and header.num_block_rows_minus1() > 0:
            dims = header.tensor_dimensions or (1,)
            history = self.history if used_history else None
            qpd_or_none = qpd if qp is not None else None
            layout = cabac.TensorLayout(dims, self.coding, qpd_or_none, base=self.base, history=history)
            (eps,) = cabac.entry_points(payload, [layout])
            header = _with_entry_points(header, eps)
        return CodedPayload(header, payload, qp, empty=self.update and not levels.any())


def quantize_payload(
    name: str,
    array: np.ndarray,
    plan: TensorPlan,
    settings: PayloadSettings,
    index: int | NodeId,
    parent: UpdateParent | None = None,
    threads: int = 1,
) -> QuantizedPayload:
    """The first half of `encode_payload`: levels, QP and header; the weights are not kept."""
    options = settings.options
    qpd = options.qp_density
    if parent is None:
        levels, qp = _levels_and_qp(name, array, plan, settings)
    else:
        levels, qp = _difference_levels(name, array, plan, settings, parent)
    dims = tuple(int(d) for d in array.shape) or (1,)
    rows, width = cabac.matrix_view(dims)
    # A single row or column is scanned row-major whatever the header says; say so in the header,
    # so that the entry-point count it implies (from dims[0]) is zero as the payload has none.
    scan_order = options.scan_order if rows > 1 and width > 1 else 0
    dq_flag = plan.dq_flag
    codebook = None
    if (
        parent is None
        and options.codebook
        and qp is not None
        and plan.payload_type == PayloadType.NNR_PT_FLOAT
        and not plan.exact
        and plan.decompressed_format is None  # decoders refuse a codebook with an output format
    ):
        chosen = _codebook_levels(array, levels, qp, plan, settings, scan_order)
        if chosen is not None:
            codebook, levels, qp = chosen
            dq_flag = False
    node_id = (index if isinstance(index, NodeId) else NodeId(0, index, 0)) if settings.profile == 1 else None
    parent_node_id = None
    if parent is not None:
        node = parent.node_id
        node_id = NodeId(node.device_id, node.parameter_id, node.put_node_depth + 1)
        tcm = parent.levels is not None
        if parent.payload_sha256 is not None:
            parent_node_id = ParentNodeId(
                ParentNodeIdType.ICNN_NDU_PL_SHA256,
                temporal_context_modeling_flag=tcm,
                parent_device_id=None,
                parent_node_payload_sha256=parent.payload_sha256,
            )
        else:
            parent_node_id = ParentNodeId(
                ParentNodeIdType.ICNN_NDU_ID, temporal_context_modeling_flag=tcm, parent_device_id=node.device_id
            )
    header = NduHeader(
        plan.payload_type,
        topology_elem_id=name,
        node_id=node_id,
        parent_node_id=parent_node_id,
        codebook=codebook,
        dq_flag=dq_flag,
        nnr_decompressed_data_format=plan.decompressed_format,
        tensor_dimensions=dims,
        cabac_unary_length_minus1=_CABAC_UNARY_LENGTH_MINUS1,
        scan_order=scan_order,
    )
    cb = (codebook.codebook_size, codebook.cb_zero_offset) if codebook is not None else (0, 0)
    return QuantizedPayload(
        header,
        levels,
        qp,
        settings.mps_qp,
        qpd,
        _coding(header, settings.profile, cb),
        _row_skip(options.row_skip, settings.profile, dq_flag, scan_order, levels.reshape(rows, width)),
        parent.levels if parent is not None else None,
        parent.history if parent is not None else None,
        threads,
        update=parent is not None,
    )


def _row_skip(wanted: bool, profile: int, dq_flag: bool, scan_order: int, matrix: np.ndarray) -> bool:
    """Whether to signal all-zero rows.

    NOTE: the standard (and NNCodec) advance the DQ state past a skipped row segment by the whole
    row width, also when a block scan cuts the row into narrower segments, while the trellis
    chose the later levels for the state the segment itself leaves. The parity-0 transitions
    cycle with periods 1, 2 and 4 and block widths are multiples of 4, so the two states agree
    exactly when the row width is a multiple of 4; otherwise every level after a skipped segment
    would decode to another value, and row skipping stays off when there is a row to skip.
    """
    if not wanted or profile != 1:
        return False
    width = matrix.shape[1]
    if dq_flag and scan_order and width > (4 << scan_order) and width % 4:
        return bool(matrix.any(axis=1).all())
    return True


def _codebook_levels(
    array: np.ndarray, levels: np.ndarray, qp: int, plan: TensorPlan, settings: PayloadSettings, scan_order: int
) -> tuple[Codebook, np.ndarray, int] | None:
    """NNCodec's codebook_mode 2: (codebook, coded indices, QP) when the codebook codes smaller."""
    qpd = settings.options.qp_density
    cb_qp = qp - (1 << qpd) if plan.dq_flag else qp  # DQ's effective grid, without DQ
    lo, _ = settings.qp_range
    if cb_qp < lo:
        return None
    weights = np.ascontiguousarray(array.reshape(array.shape or (1,)), dtype=np.float32)
    cb_levels = quantize_weights(weights, cb_qp, False, settings.options).levels if plan.dq_flag else levels
    if cb_levels.size == 0:
        return None
    if plan.snr_db is not None and snr_db(weights, cabac.dequantize(cb_levels, cb_qp, qpd)) < plan.snr_db:
        return None  # SNR mode: the codebook's grid must keep the tensor's target too
    choice = choose_codebook(
        cb_levels,
        levels,
        plan.dq_flag,
        scan_order=scan_order,
        profile=settings.profile,
        cabac_unary_length_minus1=_CABAC_UNARY_LENGTH_MINUS1,
    )
    if choice is None:
        return None
    return choice.codebook, choice.indices, cb_qp


def _with_entry_points(header: NduHeader, eps: tuple[cabac.EntryPoint, ...]) -> NduHeader:
    return dataclasses.replace(header, cabac_entry_point_list=tuple(eps))


def check_dimensions(dims: tuple[int, ...], max_elements: int) -> int:
    """Element count of declared dimensions, refused above the cap before anything is allocated.

    Raises:
        BitstreamError: a zero dimension or more than `max_elements` elements.
    """
    if any(d <= 0 for d in dims):
        raise BitstreamError(f"tensor_dimensions {list(dims)} contain a zero; a coded tensor needs elements")
    count = math.prod(dims)
    if count > max_elements:
        raise BitstreamError(f"tensor_dimensions {list(dims)} declare {count} elements, above the cap {max_elements}")
    return count


def decode_levels_payload(
    header: NduHeader,
    payload: bytes | memoryview,
    *,
    profile: int,
    qp_density: int | None,
    quantization_parameter: int | None,
    max_elements: int,
    payload_offset: int,
    name: str,
    base: np.ndarray | None = None,
    history: np.ndarray | None = None,
    levels_out: list[np.ndarray] | None = None,
    threads: int = 1,
) -> tuple[np.ndarray, int | None]:
    """Decode an NNR_PT_INT / NNR_PT_FLOAT payload into the returned array and its QP.

    `base` / `history` are the parent's levels and the significance history of an update NDU
    (temporal context adaptation, HDSP); `levels_out`, when given, receives the int32 levels
    (what a later update of this tensor uses as its base). With entry points (scan orders 1-4)
    the tensor's block rows decode on up to `threads` threads.

    Raises:
        BitstreamError: corrupt or truncated payload, trailing bytes, values outside the declared
            output format, or dimensions above the cap; the message names the tensor.
    """
    payload_type = header.nnr_compressed_data_unit_payload_type
    dims = header.tensor_dimensions or (1,)
    check_dimensions(dims, max_elements)
    if header.scan_order > 4:
        raise BitstreamError(f"scan_order {header.scan_order} is reserved (0..4 are defined)", tensor=name)
    fmt = header.nnr_decompressed_data_format
    out = output_dtype(payload_type, fmt)
    is_float = payload_type == PayloadType.NNR_PT_FLOAT
    if fmt is not None and (fmt in _FLOAT_OUTPUTS) != is_float:
        raise NotImplementedError(f"nnr_decompressed_data_format {fmt.name} for an {payload_type.name} payload")
    codebook = header.codebook
    cb = (codebook.codebook_size, codebook.cb_zero_offset) if codebook is not None else (0, 0)
    dec = cabac.PayloadDecoder(payload, max_elements=max_elements, payload_offset=payload_offset, tensor=name)
    qp = None
    if is_float:
        if qp_density is None or quantization_parameter is None:
            raise BitstreamError("an NNR_PT_FLOAT NDU needs a quantization method in the MPS or LPS", tensor=name)
        qp = quantization_parameter + dec.decode_qp_offset(qp_density)
    entry_points = header.cabac_entry_point_list if header.scan_order and len(dims) > 1 else None
    levels = dec.decode_levels(
        dims,
        _coding(header, profile, cb),
        entry_points=entry_points or None,
        tensor=name,
        base=base,
        history=history,
        threads=threads,
    )
    used = dec.finish()
    if used != len(payload):
        raise BitstreamError(
            f"the CABAC payload ends at byte {used} of {len(payload)}; {len(payload) - used} bytes follow it",
            byte_offset=payload_offset + used,
            tensor=name,
        )
    if codebook is not None:
        offset = codebook.cb_zero_offset
        if levels.size and (int(levels.min()) + offset < 0 or int(levels.max()) + offset >= codebook.codebook_size):
            raise BitstreamError("a codebook index lies outside the codebook", tensor=name)
        levels += offset  # now indices, in range: no overflow
        levels = np.asarray(codebook.codebook, dtype=np.int32)[levels]
    if levels_out is not None:
        levels_out.append(levels)
    if is_float:
        assert qp is not None and qp_density is not None
        # In place when nobody keeps the levels: decoding then peaks at the decoded tensor's size.
        values = cabac.dequantize(levels, qp, qp_density, in_place=levels_out is None)
        del levels
        return (values if out == np.float32 else values.astype(out)), qp
    bits = _INT_BITS.get(fmt) if fmt is not None else None
    if bits is not None and levels.size:
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        if int(levels.min()) < lo or int(levels.max()) > hi:
            raise BitstreamError(f"a value does not fit the declared {fmt.name}", tensor=name)  # type: ignore[union-attr]
    return (levels if out == np.int32 else levels.astype(out)), None
