# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The compressed data unit (NDU): header syntax and payload carriage (ISO/IEC 15938-17 clause 7.3).

The header is parsed completely here, for both profiles; the payload is kept as bytes. Turning a
payload into tensors (raw float32, or DeepCABAC for the other payload types) is the container's job.

NOTE: two header conditions need facts that the NDU itself does not carry, and are refused with
`UnsupportedError` instead of being guessed: dimensions supplied out of band (no
`tensor_dimensions_list`, so `count_tensor_dimensions` is unknown), and the entry-point count of a
non-block NDU with decomposed (NNR_CPT_DC) data, which depends on whether it holds G or H.
`topology_tensor_dimension_mapping()` is refused likewise: the fact sheet gives no syntax for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar, Self

from nnrconv.core._errors import UnsupportedError
from nnrconv.nnc._bitio import BitReader, BitWriter
from nnrconv.nnc._enums import (
    CompressedParameterTypes,
    DecompressedDataFormat,
    NnrUnitType,
    PayloadType,
)
from nnrconv.nnc._ndu_elements import (
    Codebook,
    EntryPoint,
    NodeId,
    ParentNodeId,
    enum_value,
    read_entry_points,
    write_entry_points,
)
from nnrconv.nnc._units import NnrUnit, NnrUnitHeader, UnitContext

__all__ = [
    "Codebook",
    "CompressedDataUnit",
    "EntryPoint",
    "NduHeader",
    "NodeId",
    "ParentNodeId",
    "decode_reference_list",
    "encode_reference_list",
]

_NO_TYPES = CompressedParameterTypes(0)
_CODEBOOK_PAYLOADS = frozenset({PayloadType.NNR_PT_FLOAT, PayloadType.NNR_PT_BLOCK})
_DQ_PAYLOADS = frozenset({PayloadType.NNR_PT_INT, PayloadType.NNR_PT_FLOAT, PayloadType.NNR_PT_BLOCK})


# ISO/IEC 15938-17, topology_elements_ids_list().
def _write_ids_list(w: BitWriter, ids: Sequence[str] | Sequence[int], indexed: bool) -> None:
    if len(ids) < 2:
        raise ValueError(f"topology_elements_ids_list() holds at least 2 elements, got {len(ids)}")
    w.ue(7, len(ids) - 2)  # count_topology_elements_minus2
    if indexed:
        for index in ids:
            w.ue(7, index)  # type: ignore[arg-type]
        w.byte_alignment()
    else:
        w.byte_alignment()
        for name in ids:
            w.st(name)  # type: ignore[arg-type]


def _read_ids_list(r: BitReader, indexed: bool) -> tuple[str, ...] | tuple[int, ...]:
    count = r.ue(7) + 2
    r.require_bits(count * 8, f"a list of {count} topology elements")
    if indexed:
        indices = tuple(r.ue(7) for _ in range(count))
        r.byte_alignment()
        return indices
    r.byte_alignment()
    return tuple(r.st() for _ in range(count))


def encode_reference_list(names: Sequence[str]) -> bytes:
    """The `topology_data` of an NNR_TPL_REFLIST unit naming `names` (index i = `names[i]`).

    The list's syntax ends with the last name's 0x00, which doubles as the TPL payload terminator,
    so it is not part of the returned bytes.

    Raises:
        ValueError: fewer than two names, or a name containing NUL.
    """
    w = BitWriter()
    _write_ids_list(w, list(names), indexed=False)
    return w.getvalue()[:-1]


def decode_reference_list(topology_data: bytes) -> tuple[str, ...]:
    """The names of an NNR_TPL_REFLIST unit's `topology_data`.

    Raises:
        BitstreamError: the data is not a complete `topology_elements_ids_list()`.
    """
    data = bytes(topology_data) + b"\0"
    r = BitReader(data)
    names = _read_ids_list(r, indexed=False)
    if r.bits_left:
        raise r.error(f"{r.bytes_left} bytes follow the reference list")
    return names  # type: ignore[return-value]


def _block_rows_minus1(rows: int, scan_order: int) -> int:
    """NumBlockRowsMinus1 of a matrix with `rows` rows under a block scan (blocks of 4 << scan_order)."""
    return ((rows + (4 << scan_order) - 1) >> (2 + scan_order)) - 1


# ISO/IEC 15938-17, nnr_compressed_data_unit_header().
@dataclass(frozen=True, slots=True)
class NduHeader:
    """Every syntax element of `nnr_compressed_data_unit_header()`.

    Exactly one way of naming the tensor(s) is set: `topology_elem_id` (string) or
    `topology_elem_id_index` for one element, `topology_elem_id_list` or
    `topology_elem_id_index_list` for several; the index forms are used when the MPS sets
    `mps_topology_indexed_reference_flag`. Presence flags are properties.

    Attributes:
        nnr_compressed_data_unit_payload_type: u(5).
        topology_elem_id: st(v).
        topology_elem_id_index: ue(7).
        topology_elem_id_list: st(v) each, two or more.
        topology_elem_id_index_list: ue(7) each, two or more.
        node_id: profile 1; `None` when `node_id_present_flag` is 0.
        parent_node_id: profile 1 with MPS parent signalling; `None` when
            `parent_node_id_present_flag` is 0.
        codebook: `integer_codebook()`, payload types FLOAT and BLOCK only.
        codebook_h: the second codebook, for H of a decomposed block (BLOCK, DC and a codebook).
        dq_flag: u(1), dependent quantization; payload types INT, FLOAT and BLOCK only.
        nnr_decompressed_data_format: u(7), `None` when its present flag is 0.
        input_parameters_present_flag: u(1); when 0 the next four groups come out of band.
        compressed_parameter_types: u(4).
        decomposition_rank: ue(3), exactly when the types contain NNR_CPT_DC.
        g_number_of_rows: ue(3), likewise.
        tensor_dimensions: `tensor_dimensions_list()`: ue(1) count, then ue(7) each.
        cabac_unary_length_minus1: u(8), `None` when `cabac_unary_length_flag` is 0.
        first_tensor_dimension_shift: ue(1), profile 1 and more than one dimension.
        scan_order: u(4), more than one dimension; 0 = row-major, k > 0 = blocks of 4 << k.
        cabac_entry_point_list: one entry per block row but the first, when `scan_order` > 0.
    """

    nnr_compressed_data_unit_payload_type: PayloadType
    topology_elem_id: str | None = None
    topology_elem_id_index: int | None = None
    topology_elem_id_list: tuple[str, ...] | None = None
    topology_elem_id_index_list: tuple[int, ...] | None = None
    node_id: NodeId | None = None
    parent_node_id: ParentNodeId | None = None
    codebook: Codebook | None = None
    codebook_h: Codebook | None = None
    dq_flag: bool = False
    nnr_decompressed_data_format: DecompressedDataFormat | None = None
    input_parameters_present_flag: bool = True
    compressed_parameter_types: CompressedParameterTypes = _NO_TYPES
    decomposition_rank: int | None = None
    g_number_of_rows: int | None = None
    tensor_dimensions: tuple[int, ...] | None = None
    cabac_unary_length_minus1: int | None = None
    first_tensor_dimension_shift: int = 0
    scan_order: int = 0
    cabac_entry_point_list: tuple[EntryPoint, ...] = ()

    def __post_init__(self) -> None:
        ids = (
            self.topology_elem_id,
            self.topology_elem_id_index,
            self.topology_elem_id_list,
            self.topology_elem_id_index_list,
        )
        if sum(x is not None for x in ids) != 1:
            raise ValueError("exactly one of topology_elem_id, _index, _list and _index_list must be given")
        payload_type = self.nnr_compressed_data_unit_payload_type
        if self.codebook is not None and payload_type not in _CODEBOOK_PAYLOADS:
            raise ValueError(f"a codebook is only coded for NNR_PT_FLOAT and NNR_PT_BLOCK, not {payload_type!r}")
        has_dc = bool(self.compressed_parameter_types & CompressedParameterTypes.NNR_CPT_DC)
        wants_h = payload_type == PayloadType.NNR_PT_BLOCK and has_dc and self.codebook is not None
        if wants_h != (self.codebook_h is not None):
            raise ValueError("codebook_h is given exactly for an NNR_PT_BLOCK NDU with NNR_CPT_DC and a codebook")
        if self.dq_flag and payload_type not in _DQ_PAYLOADS:
            raise ValueError(f"dq_flag is only coded for INT, FLOAT and BLOCK payloads, not {payload_type!r}")
        if not self.input_parameters_present_flag and (
            self.tensor_dimensions is not None
            or self.cabac_unary_length_minus1 is not None
            or self.compressed_parameter_types
        ):
            raise ValueError("dimensions, cabac_unary_length_minus1 and types need input_parameters_present_flag")
        if has_dc != (self.decomposition_rank is not None) or has_dc != (self.g_number_of_rows is not None):
            raise ValueError("decomposition_rank and g_number_of_rows are given exactly with NNR_CPT_DC")
        single = self.tensor_dimensions is not None and len(self.tensor_dimensions) <= 1
        if single and (self.first_tensor_dimension_shift or self.scan_order):
            raise ValueError("first_tensor_dimension_shift and scan_order need more than one dimension")
        if not self.scan_order and self.cabac_entry_point_list:
            raise ValueError("CABAC entry points need scan_order > 0")

    # -- presence flags, derived -------------------------------------------------------------

    @property
    def nnr_multiple_topology_elements_present_flag(self) -> bool:
        """u(1): the NDU carries several topology elements (a list of ids)."""
        return self.topology_elem_id_list is not None or self.topology_elem_id_index_list is not None

    @property
    def nnr_decompressed_data_format_present_flag(self) -> bool:
        """u(1)."""
        return self.nnr_decompressed_data_format is not None

    @property
    def node_id_present_flag(self) -> bool:
        """u(1), profile 1."""
        return self.node_id is not None

    @property
    def parent_node_id_present_flag(self) -> bool:
        """u(1), profile 1 with parent signalling."""
        return self.parent_node_id is not None

    @property
    def codebook_present_flag(self) -> bool:
        """u(1), payload types FLOAT and BLOCK."""
        return self.codebook is not None

    @property
    def tensor_dimensions_flag(self) -> bool:
        """u(1), inside the input parameters."""
        return self.tensor_dimensions is not None

    @property
    def cabac_unary_length_flag(self) -> bool:
        """u(1), inside the input parameters."""
        return self.cabac_unary_length_minus1 is not None

    @property
    def count_tensor_dimensions(self) -> int | None:
        """ue(1) of `tensor_dimensions_list()`; `None` when the dimensions are not in the header."""
        return None if self.tensor_dimensions is None else len(self.tensor_dimensions)

    @property
    def topology_elements(self) -> tuple[str, ...] | tuple[int, ...]:
        """The element names (or indices into a REFLIST), one or more, in header order."""
        if self.topology_elem_id is not None:
            return (self.topology_elem_id,)
        if self.topology_elem_id_index is not None:
            return (self.topology_elem_id_index,)
        return self.topology_elem_id_list or self.topology_elem_id_index_list or ()

    def num_block_rows_minus1(self) -> int:
        """Number of `cabac_entry_point_list` entries implied by dimensions and scan order.

        Raises:
            UnsupportedError: a non-block NDU with NNR_CPT_DC, whose rows depend on whether it
                carries G or H (not signalled in the header).
        """
        if not self.scan_order or self.tensor_dimensions is None:
            return 0
        if self.compressed_parameter_types & CompressedParameterTypes.NNR_CPT_DC:
            if self.nnr_compressed_data_unit_payload_type != PayloadType.NNR_PT_BLOCK:
                raise UnsupportedError(
                    "entry points of a non-block NDU with decomposed (NNR_CPT_DC) data: their number "
                    "depends on whether it holds G or H, which the header does not say"
                )
            rows = _block_rows_minus1(self.g_number_of_rows or 0, self.scan_order)
            rows += _block_rows_minus1(self.decomposition_rank or 0, self.scan_order)
        else:
            rows = _block_rows_minus1(self.tensor_dimensions[0], self.scan_order)
        return max(rows, 0)

    # -- syntax -------------------------------------------------------------------------------

    def _check_context(self, ctx: UnitContext) -> None:
        indexed = self.topology_elem_id_index is not None or self.topology_elem_id_index_list is not None
        if indexed != ctx.mps_topology_indexed_reference_flag:
            raise ValueError("tensors are named by index exactly when the MPS sets mps_topology_indexed_reference_flag")
        if not ctx.is_profile_1 and (self.node_id is not None or self.first_tensor_dimension_shift):
            raise ValueError("node_id and first_tensor_dimension_shift exist only in profile 1")
        if self.parent_node_id is not None and not (ctx.is_profile_1 and ctx.mps_parent_signalling_enabled_flag):
            raise ValueError("parent_node_id needs profile 1 and mps_parent_signalling_enabled_flag")

    def write(self, w: BitWriter, ctx: UnitContext) -> None:
        """Write the header, ending with `byte_alignment()`.

        Raises:
            ValueError: the header contradicts `ctx` or its entry-point count is wrong.
            UnsupportedError: the syntax needs facts the header does not carry (see module note).
        """
        self._check_context(ctx)
        payload_type = self.nnr_compressed_data_unit_payload_type
        multiple = self.nnr_multiple_topology_elements_present_flag
        w.u(5, payload_type)
        w.flag(multiple)
        w.flag(self.nnr_decompressed_data_format_present_flag)
        w.flag(self.input_parameters_present_flag)
        if self.topology_elem_id_list is not None:
            _write_ids_list(w, self.topology_elem_id_list, indexed=False)
        elif self.topology_elem_id_index_list is not None:
            _write_ids_list(w, self.topology_elem_id_index_list, indexed=True)
        elif self.topology_elem_id_index is not None:
            w.ue(7, self.topology_elem_id_index)
        else:
            w.st(self.topology_elem_id or "")
        if ctx.is_profile_1:
            w.flag(self.node_id is not None)
            if self.node_id is not None:
                w.ue(1, self.node_id.device_id)
                w.ue(5, self.node_id.parameter_id)
                w.ue(4, self.node_id.put_node_depth)
            if ctx.mps_parent_signalling_enabled_flag:
                w.flag(self.parent_node_id is not None)
                if self.parent_node_id is not None:
                    self.parent_node_id.write(w, self.node_id is not None)
        if payload_type in _CODEBOOK_PAYLOADS:
            w.flag(self.codebook is not None)
            if self.codebook is not None:
                self.codebook.write(w)
        if payload_type in _DQ_PAYLOADS:
            w.flag(self.dq_flag)
        if self.nnr_decompressed_data_format is not None:
            w.u(7, self.nnr_decompressed_data_format)
        if self.input_parameters_present_flag:
            w.flag(self.tensor_dimensions is not None)
            w.flag(self.cabac_unary_length_minus1 is not None)
            w.u(4, self.compressed_parameter_types)
            if self.decomposition_rank is not None and self.g_number_of_rows is not None:
                w.ue(3, self.decomposition_rank)
                w.ue(3, self.g_number_of_rows)
            if self.tensor_dimensions is not None:
                w.ue(1, len(self.tensor_dimensions))
                for dim in self.tensor_dimensions:
                    w.ue(7, dim)
            if payload_type != PayloadType.NNR_PT_BLOCK and multiple:
                raise UnsupportedError("topology_tensor_dimension_mapping() is not supported")
            if self.cabac_unary_length_minus1 is not None:
                w.u(8, self.cabac_unary_length_minus1)
        if self.codebook_h is not None:
            self.codebook_h.write(w)
        if self.tensor_dimensions is None:
            raise UnsupportedError("an NDU header without tensor_dimensions (dimensions out of band)")
        if len(self.tensor_dimensions) > 1:
            if ctx.is_profile_1:
                w.ue(1, self.first_tensor_dimension_shift)
            w.u(4, self.scan_order)
            if self.scan_order:
                expected = self.num_block_rows_minus1()
                if len(self.cabac_entry_point_list) != expected:
                    raise ValueError(
                        f"scan_order {self.scan_order} over {self.tensor_dimensions} needs {expected} "
                        f"entry points, got {len(self.cabac_entry_point_list)}"
                    )
                write_entry_points(w, self.cabac_entry_point_list, self.dq_flag)
        w.byte_alignment()

    @classmethod
    def read(cls, r: BitReader, ctx: UnitContext) -> Self:
        """Read the header, including its final `byte_alignment()`.

        Raises:
            BitstreamError: truncated, or a reserved code.
            UnsupportedError: the syntax needs facts the header does not carry (see module note).
        """
        payload_type = enum_value(PayloadType, r.u(5), "nnr_compressed_data_unit_payload_type", r)
        multiple = r.flag()
        format_present = r.flag()
        input_parameters = r.flag()
        ids: dict[str, object] = {}
        indexed = ctx.mps_topology_indexed_reference_flag
        if multiple:
            ids["topology_elem_id_index_list" if indexed else "topology_elem_id_list"] = _read_ids_list(r, indexed)
        elif indexed:
            ids["topology_elem_id_index"] = r.ue(7)
        else:
            ids["topology_elem_id"] = r.st()
        node_id = parent = None
        if ctx.is_profile_1:
            if r.flag():
                node_id = NodeId(r.ue(1), r.ue(5), r.ue(4))
            if ctx.mps_parent_signalling_enabled_flag and r.flag():
                parent = ParentNodeId.read(r, node_id is not None)
        codebook = codebook_h = None
        if payload_type in _CODEBOOK_PAYLOADS and r.flag():
            codebook = Codebook.read(r)
        dq_flag = payload_type in _DQ_PAYLOADS and r.flag()
        data_format = None
        if format_present:
            data_format = enum_value(DecompressedDataFormat, r.u(7), "nnr_decompressed_data_format", r)
        types = CompressedParameterTypes(0)
        rank = g_rows = dims = unary = None
        if input_parameters:
            dims_flag, unary_flag = r.flag(), r.flag()
            types = CompressedParameterTypes(r.u(4))
            if types & CompressedParameterTypes.NNR_CPT_DC:
                rank, g_rows = r.ue(3), r.ue(3)
            if dims_flag:
                count = r.ue(1)
                r.require_bits(count * 8, f"{count} tensor dimensions")
                dims = tuple(r.ue(7) for _ in range(count))
            if payload_type != PayloadType.NNR_PT_BLOCK and multiple:
                raise UnsupportedError("topology_tensor_dimension_mapping() is not supported")
            if unary_flag:
                unary = r.u(8)
        has_dc = bool(types & CompressedParameterTypes.NNR_CPT_DC)
        if payload_type == PayloadType.NNR_PT_BLOCK and has_dc and codebook is not None:
            codebook_h = Codebook.read(r)
        if dims is None:
            raise UnsupportedError(
                "NDU header without tensor_dimensions: its dimensions would come out of band, which "
                "nnrconv does not support"
            )
        shift = scan_order = 0
        entry_points: tuple[EntryPoint, ...] = ()
        if len(dims) > 1:
            if ctx.is_profile_1:
                shift = r.ue(1)
            scan_order = r.u(4)
        header_so_far = dict(
            nnr_compressed_data_unit_payload_type=payload_type,
            **ids,
            node_id=node_id,
            parent_node_id=parent,
            codebook=codebook,
            codebook_h=codebook_h,
            dq_flag=dq_flag,
            nnr_decompressed_data_format=data_format,
            input_parameters_present_flag=input_parameters,
            compressed_parameter_types=types,
            decomposition_rank=rank,
            g_number_of_rows=g_rows,
            tensor_dimensions=dims,
            cabac_unary_length_minus1=unary,
            first_tensor_dimension_shift=shift,
            scan_order=scan_order,
        )
        header = cls(**header_so_far)  # type: ignore[arg-type]
        if scan_order:
            entry_points = read_entry_points(r, header.num_block_rows_minus1(), dq_flag)
            header = replace(header, cabac_entry_point_list=entry_points)
        r.byte_alignment()
        return header


# ISO/IEC 15938-17, nnr_compressed_data_unit_header() / nnr_compressed_data_unit_payload().
@dataclass(frozen=True, slots=True)
class CompressedDataUnit(NnrUnit):
    """NNR_NDU: one or more tensors (or a block) and the header describing them.

    Attributes:
        header: the NDU header.
        payload: the rest of the unit: raw little-endian float32 for NNR_PT_RAW_FLOAT, else one
            DeepCABAC stream. After reading, a view into the input buffer (not a copy).
    """

    nnr_unit_type: ClassVar[NnrUnitType] = NnrUnitType.NNR_NDU

    header: NduHeader
    payload: bytes | memoryview = b""

    def _write_body(self, w: BitWriter, ctx: UnitContext) -> None:
        self.header.write(w, ctx)
        w.raw_bytes(self.payload)

    @classmethod
    def read(cls, r: BitReader, ctx: UnitContext, header: NnrUnitHeader) -> Self:
        ndu_header = NduHeader.read(r, ctx)
        return cls(ndu_header, r.rest(), **cls._common_from(header))  # type: ignore[arg-type]
