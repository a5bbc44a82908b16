# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""DeepCABAC entropy coding and quantization of NNR tensors (ISO/IEC 15938-17 clauses 8 and 9.3).

This is the only module that imports the compiled core `nnrconv.nnc._cabac`. It is used by the NDU
layer like this: one `PayloadEncoder` / `PayloadDecoder` per NDU (one arithmetic-coder stream),
and per tensor of the NDU, in payload order, an optional QP offset followed by the tensor's levels,
with the tensor's parameters taken from the NDU header (`TensorCoding`)::

    enc = PayloadEncoder()
    enc.encode_qp_offset(qp - mps_qp, qp_density)          # NNR_PT_FLOAT / NNR_PT_BLOCK only
    enc.encode_levels(levels, TensorCoding(dq_flag=True))
    payload = enc.finish()
    eps = entry_points(payload, [TensorLayout(levels.shape, coding, qp_density)])

    dec = PayloadDecoder(payload)
    qp = mps_qp + dec.decode_qp_offset(qp_density)
    levels = dec.decode_levels(dims, coding, entry_points=header_entry_points)
    dec.finish()

The output is bit-exact with NNCodec 2.1.3 (the reference software) for the same levels and
settings, and `quantize` reproduces NNCodec's uniform and dependent (trellis) quantization, with
or without its rate-distortion decisions (`lambda_scale`).

Threading: an encoder or decoder object must not be used from two threads at once; separate
objects (one per NDU) can run in parallel, since the compiled core releases the GIL.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from nnrconv.core._errors import BitstreamError
from nnrconv.nnc import _cabac
from nnrconv.nnc._ndu_elements import EntryPoint

__all__ = [
    "DEFAULT_MAX_ELEMENTS",
    "EncodedTensor",
    "EntryPoint",
    "HdspHistory",
    "smaller_with_or_without_hdsp",
    "PayloadDecoder",
    "PayloadEncoder",
    "QuantizedTensor",
    "TensorCoding",
    "TensorLayout",
    "decode_tensor",
    "dequantize",
    "entry_points",
    "matrix_view",
    "qp_offset_bits",
    "quantize",
    "quantize_and_encode",
    "step_size",
]

DEFAULT_MAX_ELEMENTS = 1 << 31
"""Largest tensor (in elements) a decoder allocates unless told otherwise."""


@dataclass(frozen=True, slots=True)
class TensorCoding:
    """How one tensor is entropy coded; every field comes from the NDU header or the MPS.

    Attributes:
        dq_flag: dependent quantization (levels are 2k - sgn(k)·(state & 1)).
        scan_order: 0 row-major, 1..4 block scan with blocks of 8, 16, 32, 64 (forced to 0 for
            tensors with one row or one column).
        cabac_unary_length_minus1: number of greater-than flags minus 1 (NNCodec writes 10).
        general_profile_idc: 0 (1st edition syntax) or 1 (2nd edition: row skipping, codebook-aware
            binarization).
        parent_node_id_present_flag: the NDU signals a parent node; then a
            hist_dep_sig_prob_enabled_flag is coded per tensor (1 when coded with a history).
        codebook_size: size of the tensor's codebook, 0 without codebook.
        codebook_zero_offset: `CbZeroOffset` of the codebook.
    """

    dq_flag: bool = False
    scan_order: int = 0
    cabac_unary_length_minus1: int = 10
    general_profile_idc: int = 1
    parent_node_id_present_flag: bool = False
    codebook_size: int = 0
    codebook_zero_offset: int = 0

    def _kwargs(self) -> dict:
        if not 0 <= self.cabac_unary_length_minus1 <= 255:
            raise ValueError(f"cabac_unary_length_minus1 {self.cabac_unary_length_minus1!r} is not in 0..255 (u(8))")
        return {
            "dq": bool(self.dq_flag),
            "scan_order": int(self.scan_order),
            "profile": int(self.general_profile_idc),
            "num_gtx": int(self.cabac_unary_length_minus1) + 1,
            "parent_present": bool(self.parent_node_id_present_flag),
            "codebook_size": int(self.codebook_size),
            "codebook_zero_offset": int(self.codebook_zero_offset),
        }


@dataclass(frozen=True, slots=True)
class TensorLayout:
    """One tensor of an NDU payload, for `entry_points`.

    Attributes:
        dims: tensor dimensions.
        coding: its coding parameters.
        qp_density: when not None, a QP offset of 6 + qp_density bits precedes the levels
            (NNR_PT_FLOAT / NNR_PT_BLOCK).
        base, history: as for `PayloadDecoder.decode_levels` (incremental coding).
    """

    dims: tuple[int, ...]
    coding: TensorCoding
    qp_density: int | None = None
    base: np.ndarray | None = None
    history: np.ndarray | None = None


def matrix_view(dims: Sequence[int]) -> tuple[int, int]:
    """The (rows, columns) matrix DeepCABAC scans: dims[0] x prod(dims[1:]); a scalar is [1]."""
    dims = tuple(int(d) for d in dims) or (1,)
    if any(d <= 0 for d in dims):
        raise ValueError(f"tensor dimensions must be positive, got {dims!r}")
    return dims[0], math.prod(dims[1:])


def qp_offset_bits(qp_density: int) -> int:
    """Width of the bypass-coded QP offset field: 6 + qp_density."""
    if not 0 <= qp_density <= 7:
        raise ValueError(f"qp_density {qp_density!r} is not in 0..7 (u(3))")
    return 6 + qp_density


def _levels_array(levels: np.ndarray) -> np.ndarray:
    if not isinstance(levels, np.ndarray):
        raise TypeError(f"levels must be a numpy int32 array, got {type(levels).__name__}")
    if levels.dtype != np.int32:
        raise TypeError(f"levels must have dtype int32, got {levels.dtype}; convert with levels.astype(np.int32)")
    if not levels.flags.c_contiguous:
        raise ValueError("levels must be C-contiguous; pass np.ascontiguousarray(levels)")
    return levels


class HdspHistory:
    """Significance history of history-dependent significance probability (HDSP).

    Per tensor name, one uint8 per element: 1 if the element's level was non-zero in any update
    decoded so far.  Encoder and decoder must keep identical histories (NNCodec's `HdspTool`):
    after coding or decoding an update, call `add` with the update's levels.  A tensor without
    history codes its hist_dep_sig_prob_enabled_flag as 0.
    """

    __slots__ = ("_hist",)

    def __init__(self) -> None:
        self._hist: dict[str, np.ndarray] = {}

    def get(self, name: str) -> np.ndarray | None:
        """The tensor's history (uint8, tensor shape), or None before its first update."""
        return self._hist.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._hist

    def add(self, name: str, levels: np.ndarray) -> None:
        """Mark the non-zero positions of an update's levels.

        Raises:
            ValueError: the shape differs from the tensor's earlier updates.
        """
        nonzero = np.asarray(levels) != 0
        hist = self._hist.get(name)
        if hist is None:
            self._hist[name] = nonzero.astype(np.uint8)
        elif hist.shape != nonzero.shape:
            raise ValueError(f"tensor {name!r}: update shape {nonzero.shape} differs from its history {hist.shape}")
        else:
            hist[nonzero] = 1


def smaller_with_or_without_hdsp(encode: Callable[[bool], bytes]) -> tuple[bytes, bool]:
    """NNCodec's HDSP decision: code a payload without and with the history, keep the smaller.

    `encode(use_history)` returns the complete payload; ties keep the one without HDSP (NNCodec's
    argmin over [off, on]).  Returns (payload, whether HDSP was used).
    """
    off = encode(False)
    on = encode(True)
    return (on, True) if len(on) < len(off) else (off, False)


def _side_array(array: np.ndarray | None, shape: tuple[int, ...], dtype: type, what: str) -> np.ndarray | None:
    """Check a base / history array against the tensor it goes with (same element count)."""
    if array is None:
        return None
    if not isinstance(array, np.ndarray) or array.dtype != dtype:
        raise TypeError(f"{what} must be a numpy {np.dtype(dtype).name} array")
    if array.size != math.prod(shape or (1,)):
        raise ValueError(f"{what} has {array.size} elements, the tensor has shape {shape}")
    return np.ascontiguousarray(array)


class PayloadEncoder:
    """The DeepCABAC arithmetic-coder stream of one NDU payload."""

    __slots__ = ("_enc",)

    def __init__(self) -> None:
        self._enc = _cabac.Encoder()

    def encode_qp_offset(self, qp_offset: int, qp_density: int) -> None:
        """Code the tensor's QP relative to the MPS/LPS quantization_parameter (FLOAT/BLOCK NDUs).

        Raises:
            ValueError: the offset does not fit in 6 + qp_density bits (two's complement).
        """
        bits = qp_offset_bits(qp_density)
        if not -(1 << (bits - 1)) <= qp_offset < (1 << (bits - 1)):
            raise ValueError(
                f"QP offset {qp_offset!r} does not fit in {bits} bits; "
                "move the MPS/LPS quantization_parameter closer to the tensor QPs"
            )
        self._enc.encode_bypass(qp_offset, bits)

    def encode_levels(
        self,
        levels: np.ndarray,
        coding: TensorCoding,
        *,
        row_skip: bool = False,
        param_opt: bool = True,
        base: np.ndarray | None = None,
        history: np.ndarray | None = None,
        threads: int = 1,
    ) -> None:
        """Code one tensor's integer levels.

        Args:
            levels: C-contiguous int32 array with the tensor's shape (0-d is coded as [1]).
            coding: parameters from the NDU header.
            row_skip: profile 1: signal all-zero rows and skip them (row_skip_enabled_flag).
            param_opt: choose the cheapest context parameter set per context (NNCodec's default).
            base: the parent tensor's int32 levels (same size): temporal context adaptation
                (temporal_context_modeling_flag = 1; needs parent_node_id_present_flag in
                profile 1).  The decoder must be given the same base.
            history: uint8 significance history (`HdspHistory.get`): codes
                hist_dep_sig_prob_enabled_flag = 1 where the flag is present (profile 1, parent
                signalled, a matrix).  NNCodec codes the payload with and without the history and
                keeps the smaller: see `smaller_with_or_without_hdsp`.
            threads: with scan_order 1..4 and several block rows (and neither base nor history),
                work on the block rows on up to this many threads; the payload is the same.

        Raises:
            TypeError: levels is not an int32 array.
            ValueError: levels is strided or a parameter is out of range.
        """
        levels = _levels_array(levels)
        rows, width = matrix_view(levels.shape)
        self._enc.encode_levels(
            levels,
            rows,
            width,
            param_opt=param_opt,
            row_skip=row_skip,
            base=_side_array(base, levels.shape, np.int32, "base"),
            hist=_side_array(history, levels.shape, np.uint8, "history"),
            threads=max(1, int(threads)),
            **_encoder_kwargs(coding),
        )

    def finish(self) -> bytes:
        """Code the terminating bin, flush, and return the payload."""
        return self._enc.finish()


def _encoder_kwargs(coding: TensorCoding) -> dict:
    return coding._kwargs()


class PayloadDecoder:
    """Decoder of one NDU payload; keeps a reference to (borrows) the payload buffer.

    Args:
        payload: the CABAC bytes (the NDU payload, nothing after it).
        max_elements: refuse tensors larger than this before allocating.
        payload_offset: position of the payload in the file, added to error offsets.
        tensor: name for error messages.
    """

    __slots__ = ("_dec", "_max_elements", "_offset", "_tensor")

    def __init__(
        self,
        payload: bytes | bytearray | memoryview,
        *,
        max_elements: int = DEFAULT_MAX_ELEMENTS,
        payload_offset: int = 0,
        tensor: str | None = None,
    ) -> None:
        self._max_elements = int(max_elements)
        self._offset = int(payload_offset)
        self._tensor = tensor
        try:
            self._dec = _cabac.Decoder(payload)
        except _cabac.CabacError as exc:
            raise self._error(exc) from exc

    def _error(self, exc: _cabac.CabacError) -> BitstreamError:
        message, offset = exc.args
        return BitstreamError(
            f"{message} (payload byte {offset})", byte_offset=self._offset + offset, tensor=self._tensor
        )

    @property
    def bytes_read(self) -> int:
        """Payload bytes consumed so far."""
        return self._dec.bytes_read

    def decode_qp_offset(self, qp_density: int) -> int:
        """Read the tensor's QP offset (6 + qp_density bypass bits, two's complement)."""
        bits = qp_offset_bits(qp_density)
        try:
            raw = self._dec.decode_bypass(bits)
        except _cabac.CabacError as exc:
            raise self._error(exc) from exc
        return raw - (1 << bits) if raw >> (bits - 1) else raw

    def decode_levels(
        self,
        dims: Sequence[int],
        coding: TensorCoding,
        *,
        entry_points: Sequence[EntryPoint] | None = None,
        tensor: str | None = None,
        threads: int = 1,
        base: np.ndarray | None = None,
        history: np.ndarray | None = None,
    ) -> np.ndarray:
        """Decode one tensor's int32 levels.

        Args:
            dims: tensor dimensions from the NDU header.
            coding: parameters from the NDU header.
            entry_points: the tensor's `cabac_entry_point_list` (bit offsets from the start of its
                level data); with them each block row starts at its entry point.
            tensor: name for error messages.
            threads: with entry points, decode the block rows on up to this many threads (each
                block row restarts its arithmetic decoder, contexts and DQ state, so spans of
                block rows are independent).
            base: the parent tensor's int32 levels when the NDU has
                temporal_context_modeling_flag = 1 (TCA).
            history: the tensor's uint8 significance history (`HdspHistory.get`), used when the
                tensor's hist_dep_sig_prob_enabled_flag is 1 (None: no position has history).

        Raises:
            BitstreamError: corrupt or truncated payload, or a tensor above `max_elements`.
        """
        levels, _ = self._decode(dims, coding, entry_points, False, tensor, base, history, threads)
        return levels

    def decode_levels_with_entry_points(
        self,
        dims: Sequence[int],
        coding: TensorCoding,
        *,
        tensor: str | None = None,
        base: np.ndarray | None = None,
        history: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[EntryPoint, ...]]:
        """Decode one tensor and report the entry points of its block rows (for the encoder)."""
        return self._decode(dims, coding, None, True, tensor, base, history)

    def _decode(self, dims, coding, eps, create, tensor, base=None, history=None, threads=1):
        dims = tuple(int(d) for d in dims) or (1,)
        rows, width = matrix_view(dims)
        base = _side_array(base, dims, np.int32, "base")
        history = _side_array(history, dims, np.uint8, "history")
        deltas = None
        if eps is not None:
            deltas, previous = [], 0
            for ep in eps:
                if ep.bit_offset < previous:
                    raise BitstreamError("CABAC entry points are not in increasing order", tensor=tensor)
                deltas.append((ep.bit_offset - previous, ep.value, ep.dq_state))
                previous = ep.bit_offset
        try:
            raw, raw_eps = self._dec.decode_levels(
                rows,
                width,
                entry_points=deltas,
                create_entry_points=create,
                max_elements=self._max_elements,
                threads=max(1, int(threads)),
                base=base,
                hist=history,
                **coding._kwargs(),
            )
        except _cabac.CabacError as exc:
            error = self._error(exc)
            raise (error.located(tensor=tensor) if tensor else error) from exc
        levels = np.frombuffer(raw, dtype=np.int32).reshape(dims)
        result: tuple[EntryPoint, ...] = ()
        if raw_eps:
            offset, points = 0, []
            for delta, value, dq_state in raw_eps:
                offset += delta
                points.append(EntryPoint(offset, value, dq_state))
            result = tuple(points)
        return levels, result

    def finish(self) -> int:
        """Decode the terminating bin and check the stop pattern; returns the bytes consumed.

        Raises:
            BitstreamError: no terminating bin, no stop pattern, or the payload was truncated.
        """
        try:
            return self._dec.finish()
        except _cabac.CabacError as exc:
            raise self._error(exc) from exc


def entry_points(payload: bytes, tensors: Sequence[TensorLayout]) -> list[tuple[EntryPoint, ...]]:
    """Entry points of every tensor of an NDU payload, found by decoding it (as NNCodec does).

    Tensors with scan_order 0 or a single block row get an empty tuple.
    """
    dec = PayloadDecoder(payload)
    result = []
    for layout in tensors:
        if layout.qp_density is not None:
            dec.decode_qp_offset(layout.qp_density)
        _, eps = dec.decode_levels_with_entry_points(
            layout.dims, layout.coding, base=layout.base, history=layout.history
        )
        result.append(eps)
    dec.finish()
    return result


# ---- quantization ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuantizedTensor:
    """Integer levels and the QP they were made with (raised if int32 would overflow)."""

    levels: np.ndarray
    qp: int


def step_size(qp: int, qp_density: int = 2) -> float:
    """Δ = (k + (qp mod k))·2^(⌊qp/k⌋ - qp_density), k = 2^qp_density, in float32 precision."""
    return _cabac.step_size(int(qp), int(qp_density))


def quantize(
    weights: np.ndarray,
    qp: int,
    qp_density: int = 2,
    *,
    dq_flag: bool = True,
    scan_order: int = 0,
    lambda_scale: float = 0.0,
    cabac_unary_length_minus1: int = 10,
) -> QuantizedTensor:
    """Quantize float32 weights to int32 levels exactly as NNCodec does.

    Uniform quantization rounds w/Δ; dependent quantization runs the 8-state trellis in scan order
    (minimum squared error) and returns the reconstruction levels 2k - sgn(k)·(state & 1).

    With `lambda_scale` > 0 the decisions also weigh an estimate of the CABAC bits (NNCodec's
    rate-distortion quantization, `lambda_scale` in its pipelines): fewer bits for more error,
    the more so the larger the value. Uniform quantization then picks, per weight in scan order,
    the cheapest of 0, max(1, r - 1) and r (r = round(|w|/Δ)); the trellis adds the rate to every
    branch. The estimate adapts contexts as levels are chosen, with `cabac_unary_length_minus1`
    greater-than flags: NNCodec's pipeline passes that value (not the + 1 it codes with), so pass
    the value the tensor's NDU header will carry to get NNCodec's levels. Ignored at lambda 0.

    Raises:
        TypeError: weights is not a float32 array.
        ValueError: weights is strided or not finite, lambda_scale is negative, not finite, or
            positive below 1e-9 (after rounding to float32, as NNCodec receives it), or
            cabac_unary_length_minus1 is outside 0..255.
    """
    if not isinstance(weights, np.ndarray):
        raise TypeError(f"weights must be a numpy float32 array, got {type(weights).__name__}")
    if weights.dtype != np.float32:
        raise TypeError(f"weights must have dtype float32, got {weights.dtype}")
    if not weights.flags.c_contiguous:
        raise ValueError("weights must be C-contiguous; pass np.ascontiguousarray(weights)")
    lam = float(lambda_scale)
    if not (math.isfinite(lam) and lam >= 0.0):
        raise ValueError(f"lambda_scale {lambda_scale!r} must be a finite number >= 0")
    if not 0 <= int(cabac_unary_length_minus1) <= 255:
        raise ValueError(f"cabac_unary_length_minus1 {cabac_unary_length_minus1!r} is not in 0..255")
    shape = weights.shape or (1,)
    rows, width = matrix_view(shape)
    raw, used_qp = _cabac.quantize(
        weights,
        rows,
        width,
        int(qp),
        int(qp_density),
        dq=bool(dq_flag),
        scan_order=int(scan_order),
        lambda_scale=lam,
        max_num_no_rem=int(cabac_unary_length_minus1),
    )
    return QuantizedTensor(np.frombuffer(raw, dtype=np.int32).reshape(shape), used_qp)


def dequantize(levels: np.ndarray, qp: int, qp_density: int = 2, *, in_place: bool = False) -> np.ndarray:
    """Reconstruct float32 weights: Δ·level (float32 arithmetic, as the reference).

    With `in_place` the weights overwrite the levels' buffer (int32 and float32 have the same
    size) and the returned array is a float32 view of it: no second tensor-sized allocation.
    """
    levels = _levels_array(levels)
    if in_place:
        if not levels.flags.writeable:
            raise ValueError("in-place dequantization needs writable levels")
        _cabac.dequantize(levels, int(qp), int(qp_density), in_place=True)
        return levels.view(np.float32)
    raw = _cabac.dequantize(levels, int(qp), int(qp_density))
    return np.frombuffer(raw, dtype=np.float32).reshape(levels.shape)


# ---- one-tensor convenience --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EncodedTensor:
    """A tensor coded as the whole payload of an NNR_PT_FLOAT NDU.

    Attributes:
        payload: the CABAC bytes.
        entry_points: for the NDU header's cabac_entry_point_list (empty for scan_order 0).
        levels: the quantized levels that were coded.
        qp: the QP used (raised from the requested one if int32 would overflow).
        coding: the parameters to put into the NDU header.
    """

    payload: bytes
    entry_points: tuple[EntryPoint, ...]
    levels: np.ndarray
    qp: int
    coding: TensorCoding


def quantize_and_encode(
    weights: np.ndarray,
    qp: int,
    qp_density: int = 2,
    *,
    dq_flag: bool = True,
    scan_order: int = 0,
    general_profile_idc: int = 1,
    cabac_unary_length_minus1: int = 10,
    row_skip: bool = False,
    param_opt: bool = True,
    quantization_parameter: int = 0,
    parent_node_id_present_flag: bool = False,
    lambda_scale: float = 0.0,
    threads: int = 1,
) -> EncodedTensor:
    """Quantize a float32 tensor and code it as a single-tensor NNR_PT_FLOAT payload.

    `quantization_parameter` is the MPS (or LPS) QP the per-tensor QP offset is relative to.
    With scan_order 1..4 the coding after quantization runs on up to `threads` threads (the
    payload does not depend on it).
    """
    quantized = quantize(
        weights,
        qp,
        qp_density,
        dq_flag=dq_flag,
        scan_order=scan_order,
        lambda_scale=lambda_scale,
        cabac_unary_length_minus1=cabac_unary_length_minus1,
    )
    coding = TensorCoding(
        dq_flag=dq_flag,
        scan_order=scan_order,
        cabac_unary_length_minus1=cabac_unary_length_minus1,
        general_profile_idc=general_profile_idc,
        parent_node_id_present_flag=parent_node_id_present_flag,
    )
    enc = PayloadEncoder()
    enc.encode_qp_offset(quantized.qp - quantization_parameter, qp_density)
    enc.encode_levels(quantized.levels, coding, row_skip=row_skip, param_opt=param_opt, threads=threads)
    payload = enc.finish()
    eps: tuple[EntryPoint, ...] = ()
    if scan_order:
        (eps,) = entry_points(payload, [TensorLayout(quantized.levels.shape, coding, qp_density)])
    return EncodedTensor(payload, eps, quantized.levels, quantized.qp, coding)


def decode_tensor(
    payload: bytes,
    dims: Sequence[int],
    coding: TensorCoding,
    *,
    qp_density: int = 2,
    quantization_parameter: int = 0,
    entry_points: Sequence[EntryPoint] | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    threads: int = 1,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Decode a single-tensor NNR_PT_FLOAT payload: returns (float32 weights, levels, qp).

    With entry points the block rows decode on up to `threads` threads.

    Raises:
        BitstreamError: the payload is corrupt, truncated, or has bytes after its end.
    """
    dec = PayloadDecoder(payload, max_elements=max_elements)
    qp = quantization_parameter + dec.decode_qp_offset(qp_density)
    levels = dec.decode_levels(dims, coding, entry_points=entry_points, threads=threads)
    used = dec.finish()
    if used != len(payload):
        raise BitstreamError(f"CABAC payload ends at byte {used} but {len(payload)} bytes were given")
    return dequantize(levels, qp, qp_density), levels, qp
