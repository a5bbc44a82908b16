# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The common NNR unit header, the decoding context, and the simple unit types.

ISO/IEC 15938-17 clause 7.3 (NNR unit syntax). Each syntax structure is one frozen dataclass
whose fields carry the standard's names. A presence flag that only says whether an optional
value follows is not stored: the value is `None` when absent and the flag is a read-only property,
so an object cannot claim a field it does not have.

NOTE: units are written by a `write(w, ctx)` method and read by a separate `read(r, ctx, header)`
classmethod. Everything a structure's syntax depends on from *other* units (the profile from the
start unit, the MPS flags) comes in explicitly as a `UnitContext`; nothing is kept in hidden state.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Self

from nnrconv.core._errors import BitstreamError
from nnrconv.nnc._bitio import BitReader, BitWriter
from nnrconv.nnc._enums import (
    NnrUnitType,
    TopologyCompressionFormat,
    TopologyStorageFormat,
)

__all__ = [
    "NnrUnit",
    "NnrUnitHeader",
    "QuantizationUnit",
    "StartUnit",
    "TopologyUnit",
    "UnitContext",
]

# Storage formats whose payload is opaque to us rather than a terminated byte string: the pruning
# topology container has a syntax of its own, and reserved codes may mean anything.
_TERMINATED_TOPOLOGY_FORMATS = frozenset(TopologyStorageFormat) - {TopologyStorageFormat.NNR_TPL_PRUN}


@dataclass(frozen=True, slots=True)
class UnitContext:
    """Values from earlier units that change how later units are parsed.

    Attributes:
        general_profile_idc: from the start unit; 1 switches on the 2nd-edition syntax elements.
        mps_topology_indexed_reference_flag: NDUs name tensors by index into a REFLIST topology.
        mps_parent_signalling_enabled_flag: NDU headers may reference a parent node.
        mps_qp_density: from the MPS, `None` when it signals no quantization method.
        mps_quantization_parameter: from the MPS, `None` when it signals no quantization method.
    """

    general_profile_idc: int = 1
    mps_topology_indexed_reference_flag: bool = False
    mps_parent_signalling_enabled_flag: bool = False
    mps_qp_density: int | None = None
    mps_quantization_parameter: int | None = None

    @property
    def is_profile_1(self) -> bool:
        """Whether the 2nd-edition (profile 1) syntax elements are present."""
        # NNCodec and the standard test for equality with 1, so other values behave like profile 0.
        return self.general_profile_idc == 1

    def replace(self, **changes: object) -> UnitContext:
        """A copy with some values changed (contexts are immutable)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


# ISO/IEC 15938-17, nnr_unit_header(): the part common to all unit types.
@dataclass(frozen=True, slots=True)
class NnrUnitHeader:
    """The fields of `nnr_unit_header()` that precede the type-specific header.

    Attributes:
        nnr_unit_type: the unit type code (reserved codes are kept as plain ints).
        independently_decodable_flag: the unit can be decoded without other units of its kind.
        partial_data_counter: `partial_data_counter` u(8), `None` when
            `partial_data_counter_present_flag` is 0.
    """

    nnr_unit_type: int
    independently_decodable_flag: bool = True
    partial_data_counter: int | None = None

    def write(self, w: BitWriter) -> None:
        """Write the common header fields."""
        w.u(6, self.nnr_unit_type)
        w.flag(self.independently_decodable_flag)
        w.flag(self.partial_data_counter is not None)
        if self.partial_data_counter is not None:
            w.u(8, self.partial_data_counter)

    @classmethod
    def read(cls, r: BitReader) -> NnrUnitHeader:
        """Read the common header fields."""
        nnr_unit_type = r.u(6)
        independently_decodable_flag = r.flag()
        partial_data_counter = r.u(8) if r.flag() else None
        return cls(nnr_unit_type, independently_decodable_flag, partial_data_counter)


@dataclass(frozen=True, slots=True, kw_only=True)
class NnrUnit:
    """Base of all unit dataclasses: the common header fields and the write/read protocol.

    Attributes:
        independently_decodable_flag: see `NnrUnitHeader`.
        partial_data_counter: see `NnrUnitHeader`.
    """

    nnr_unit_type: ClassVar[NnrUnitType]

    independently_decodable_flag: bool = True
    partial_data_counter: int | None = None

    def write(self, w: BitWriter, ctx: UnitContext) -> None:
        """Write `nnr_unit_header()` and `nnr_unit_payload()` (not the size, which frames them).

        Raises:
            ValueError: a field does not fit the syntax, or contradicts `ctx`.
        """
        NnrUnitHeader(self.nnr_unit_type, self.independently_decodable_flag, self.partial_data_counter).write(w)
        self._write_body(w, ctx)

    def _write_body(self, w: BitWriter, ctx: UnitContext) -> None:
        raise NotImplementedError

    @classmethod
    def read(cls, r: BitReader, ctx: UnitContext, header: NnrUnitHeader) -> Self:
        """Read the type-specific header and the payload; `r` ends at the end of the unit.

        Raises:
            BitstreamError: the unit is truncated or violates the syntax.
        """
        raise NotImplementedError

    @staticmethod
    def _common_from(header: NnrUnitHeader) -> dict[str, bool | int | None]:
        return {
            "independently_decodable_flag": header.independently_decodable_flag,
            "partial_data_counter": header.partial_data_counter,
        }


# ISO/IEC 15938-17, nnr_start_unit_header() / nnr_start_unit_payload().
@dataclass(frozen=True, slots=True)
class StartUnit(NnrUnit):
    """NNR_STR: opens a bitstream and names the profile its syntax follows.

    Attributes:
        general_profile_idc: u(8); 0 = 1st edition syntax, 1 = 2nd edition (ISO/IEC 15938-17:2024).
    """

    nnr_unit_type: ClassVar[NnrUnitType] = NnrUnitType.NNR_STR

    general_profile_idc: int = 1

    def _write_body(self, w: BitWriter, ctx: UnitContext) -> None:
        w.u(8, self.general_profile_idc)

    @classmethod
    def read(cls, r: BitReader, ctx: UnitContext, header: NnrUnitHeader) -> Self:
        return cls(r.u(8), **cls._common_from(header))  # type: ignore[arg-type]


def _write_terminated(w: BitWriter, data: bytes) -> None:
    w.raw_bytes(data)
    w.raw_bytes(b"\0")


def _read_terminated(r: BitReader, what: str) -> bytes:
    """Read a byte string that fills the rest of the unit and ends with one 0x00 terminator.

    This is `st(v)` for text and well defined for binary data (ONNX protobufs contain zeros).
    """
    rest = r.rest()
    if not rest or rest[-1] != 0:
        raise BitstreamError(
            f"{what} must end with a 0x00 terminator at the end of its unit",
            byte_offset=r.byte_position - 1 if rest else r.byte_position,
        )
    return bytes(rest[:-1])


def _known_or_int(enum_type: type[IntEnum], code: int) -> int:
    """The enum member for a code, or the bare int for a reserved code."""
    try:
        return enum_type(code)
    except ValueError:
        return code


# ISO/IEC 15938-17, nnr_topology_unit_header() / nnr_topology_unit_payload().
@dataclass(frozen=True, slots=True)
class TopologyUnit(NnrUnit):
    """NNR_TPL: the network topology, in the storage format of some framework.

    Attributes:
        topology_storage_format: u(8); reserved codes are kept as ints so the unit can be skipped.
        topology_compression_format: u(8); with NNR_DFL, `topology_data` is zlib-compressed.
        topology_data: the payload bytes as stored (still compressed with NNR_DFL), without the
            0x00 terminator that ends the payload on the wire. For NNR_TPL_PRUN and reserved
            formats the whole payload is kept verbatim and no terminator is added or required.
    """

    nnr_unit_type: ClassVar[NnrUnitType] = NnrUnitType.NNR_TPL

    topology_storage_format: TopologyStorageFormat | int = TopologyStorageFormat.NNR_TPL_UNREC
    topology_compression_format: TopologyCompressionFormat | int = TopologyCompressionFormat.NNR_PT_RAW
    topology_data: bytes = b""

    @property
    def has_terminator(self) -> bool:
        """Whether the payload on the wire is `topology_data` followed by one 0x00 byte."""
        return self.topology_storage_format in _TERMINATED_TOPOLOGY_FORMATS

    def _write_body(self, w: BitWriter, ctx: UnitContext) -> None:
        w.u(8, self.topology_storage_format)
        w.u(8, self.topology_compression_format)
        if self.has_terminator:
            _write_terminated(w, self.topology_data)
        else:
            w.raw_bytes(self.topology_data)

    @classmethod
    def read(cls, r: BitReader, ctx: UnitContext, header: NnrUnitHeader) -> Self:
        storage = _known_or_int(TopologyStorageFormat, r.u(8))
        compression = _known_or_int(TopologyCompressionFormat, r.u(8))
        terminated = storage in _TERMINATED_TOPOLOGY_FORMATS
        data = _read_terminated(r, "topology_data") if terminated else bytes(r.rest())
        return cls(storage, compression, data, **cls._common_from(header))  # type: ignore[arg-type]


# ISO/IEC 15938-17, nnr_quantization_unit_header() / nnr_quantization_unit_payload().
@dataclass(frozen=True, slots=True)
class QuantizationUnit(NnrUnit):
    """NNR_QNT: quantization information (e.g. codebooks) in some storage format.

    Attributes:
        quantization_storage_format: u(8).
        quantization_compression_format: u(8).
        quantization_data: `st(v)` on the wire; kept as bytes framed like `topology_data`
            (fills the unit, one 0x00 terminator that is not part of the value).
    """

    nnr_unit_type: ClassVar[NnrUnitType] = NnrUnitType.NNR_QNT

    quantization_storage_format: int = 0
    quantization_compression_format: int = 0
    quantization_data: bytes = b""

    def _write_body(self, w: BitWriter, ctx: UnitContext) -> None:
        w.u(8, self.quantization_storage_format)
        w.u(8, self.quantization_compression_format)
        _write_terminated(w, self.quantization_data)

    @classmethod
    def read(cls, r: BitReader, ctx: UnitContext, header: NnrUnitHeader) -> Self:
        storage = r.u(8)
        compression = r.u(8)
        data = _read_terminated(r, "quantization_data")
        return cls(storage, compression, data, **cls._common_from(header))  # type: ignore[arg-type]
