# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""DeepCABAC entropy coding and quantization of NNR tensors (ISO/IEC 15938-17 clauses 8 and 9.3).

This module and its helpers (`_tensor_coding`, `_quantization`, `_hdsp`, whose public names it
re-exports) are the only ones that import the compiled core `nnrconv.nnc._cabac`. It is used by
the NDU layer like this: one `PayloadEncoder` / `PayloadDecoder` per NDU (one arithmetic-coder stream),
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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nnrconv.core._errors import BitstreamError
from nnrconv.nnc import _cabac
from nnrconv.nnc._hdsp import HdspHistory, smaller_with_or_without_hdsp
from nnrconv.nnc._ndu_elements import EntryPoint
from nnrconv.nnc._quantization import QuantizedTensor, dequantize, quantize, step_size
from nnrconv.nnc._tensor_coding import (
    TensorCoding,
    TensorLayout,
    checked_levels,
    checked_side_array,
    matrix_view,
    qp_offset_bits,
)

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
        levels = checked_levels(levels)
        rows, width = matrix_view(levels.shape)
        self._enc.encode_levels(
            levels,
            rows,
            width,
            param_opt=param_opt,
            row_skip=row_skip,
            base=checked_side_array(base, levels.shape, np.int32, "base"),
            hist=checked_side_array(history, levels.shape, np.uint8, "history"),
            threads=max(1, int(threads)),
            **coding.core_kwargs(),
        )

    def finish(self) -> bytes:
        """Code the terminating bin, flush, and return the payload."""
        return self._enc.finish()


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
        base = checked_side_array(base, dims, np.int32, "base")
        history = checked_side_array(history, dims, np.uint8, "history")
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
                **coding.core_kwargs(),
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
