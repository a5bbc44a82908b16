# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`nnr_unit()` framing, aggregate units, and reading and writing sequences of units.

ISO/IEC 15938-17 clause 7.3: a unit is `nnr_unit_size()`, `nnr_unit_header()` and
`nnr_unit_payload()`; the size counts the whole unit including the size field, in 15 bits when
the unit is shorter than 32768 bytes and in 31 bits otherwise.

The reader checks every declared size against the bytes that are really there, that each unit's
syntax ends exactly where its size says, and the unit order (start unit first, an MPS before any
NDU). Errors carry the index of the top-level unit and the byte offset of the problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Self, TypeAlias

from nnrconv.core._errors import BitstreamError, UnsupportedError
from nnrconv.nnc._bitio import BitReader, BitWriter
from nnrconv.nnc._enums import NnrUnitType
from nnrconv.nnc._mps import LayerParameterSet, ModelParameterSet
from nnrconv.nnc._ndu import CompressedDataUnit
from nnrconv.nnc._units import NnrUnit, NnrUnitHeader, QuantizationUnit, StartUnit, TopologyUnit, UnitContext

__all__ = [
    "MAX_UNIT_SIZE",
    "AggregateUnit",
    "ParsedUnit",
    "Unit",
    "advance_context",
    "encode_unit",
    "frame_unit",
    "looks_like_nnr",
    "read_units",
    "unit_size_field",
    "with_source",
    "write_units",
]

MAX_UNIT_SIZE = (1 << 31) - 1
"""Largest `nnr_unit_size` (31 bits), size field included."""

_SHORT_SIZE_LIMIT = 1 << 15


# ISO/IEC 15938-17, nnr_aggregate_unit_header() / nnr_aggregate_unit_payload().
@dataclass(frozen=True, slots=True)
class AggregateUnit(NnrUnit):
    """NNR_AGG: a group of complete NNR units, carried as one unit.

    The aggregate header has no fields here: the fact sheet documents none (NNCodec raises on
    aggregates), so the payload directly follows the common unit header.

    Attributes:
        units: the member units, each framed with its own size on the wire.
    """

    nnr_unit_type: ClassVar[NnrUnitType] = NnrUnitType.NNR_AGG

    units: tuple[Unit, ...] = ()

    def _write_body(self, w: BitWriter, ctx: UnitContext) -> None:
        for unit in self.units:
            w.raw_bytes(encode_unit(unit, ctx))
            ctx = advance_context(ctx, unit)

    @classmethod
    def read(cls, r: BitReader, ctx: UnitContext, header: NnrUnitHeader) -> Self:
        # Called directly (not through read_units), offsets are relative to the aggregate's payload.
        view = r.rest()
        order = _OrderCheck.after_parameter_sets()
        members = _SequenceReader(view, ctx, order, nested=True).read_members(0, len(view))
        return cls(tuple(m.unit for m in members), **cls._common_from(header))  # type: ignore[arg-type]


Unit: TypeAlias = (
    StartUnit
    | ModelParameterSet
    | LayerParameterSet
    | TopologyUnit
    | QuantizationUnit
    | CompressedDataUnit
    | AggregateUnit
)

_UNIT_CLASSES: dict[int, type[NnrUnit]] = {
    cls.nnr_unit_type: cls
    for cls in (
        StartUnit,
        ModelParameterSet,
        LayerParameterSet,
        TopologyUnit,
        QuantizationUnit,
        CompressedDataUnit,
        AggregateUnit,
    )
}


@dataclass(frozen=True, slots=True)
class ParsedUnit:
    """A unit as found in a bitstream.

    Attributes:
        index: position among the top-level units (or among an aggregate's members).
        byte_offset: offset of the unit's first byte (its size field) in the input.
        size: `nnr_unit_size`, the unit's length in bytes.
        unit: the parsed unit.
        members: for an aggregate unit, its members, located likewise.
    """

    index: int
    byte_offset: int
    size: int
    unit: Unit
    members: tuple[ParsedUnit, ...] = ()


def advance_context(ctx: UnitContext, unit: NnrUnit) -> UnitContext:
    """The context for the units that follow `unit`."""
    if isinstance(unit, StartUnit):
        return ctx.replace(general_profile_idc=unit.general_profile_idc)
    if isinstance(unit, ModelParameterSet):
        return unit.context(ctx)
    if isinstance(unit, AggregateUnit):
        for member in unit.units:
            ctx = advance_context(ctx, member)
    return ctx


def unit_size_field(body_length: int) -> bytes:
    """`nnr_unit_size()` for a unit whose header and payload take `body_length` bytes.

    The short form (flag 0, 15 bits) is used whenever the whole unit stays below 32768 bytes, as
    NNCodec does; the size counts the size field itself.

    Raises:
        UnsupportedError: the unit would exceed 2**31 - 1 bytes.
    """
    total = body_length + 2
    if total < _SHORT_SIZE_LIMIT:
        return total.to_bytes(2, "big")
    total = body_length + 4
    if total > MAX_UNIT_SIZE:
        raise UnsupportedError(f"an NNR unit of {total} bytes exceeds the nnr_unit_size limit of {MAX_UNIT_SIZE}")
    return ((1 << 31) | total).to_bytes(4, "big")


def frame_unit(body: bytes | bytearray | memoryview) -> bytes:
    """Prefix a unit's header and payload with `nnr_unit_size()`.

    Raises:
        UnsupportedError: the unit would exceed 2**31 - 1 bytes.
    """
    return unit_size_field(len(body)) + bytes(body)


def encode_unit(unit: NnrUnit, ctx: UnitContext) -> bytes:
    """One complete unit (size, header, payload) in the given context.

    Raises:
        ValueError: the unit's fields do not fit the syntax or contradict `ctx`.
        UnsupportedError: the unit is too large or uses syntax nnrconv cannot write.
    """
    w = BitWriter()
    unit.write(w, ctx)
    return frame_unit(w.getvalue())


def write_units(units: Sequence[Unit]) -> bytes:
    """Serialise a whole bitstream.

    Raises:
        ValueError: the first unit is not a start unit, an NDU precedes the MPS, or a unit is invalid.
        UnsupportedError: a unit is too large or uses syntax nnrconv cannot write.
    """
    order = _OrderCheck()
    parts = []
    ctx = UnitContext()
    for index, unit in enumerate(units):
        problem = order.visit(unit.nnr_unit_type, top_level=True)
        if problem:
            raise ValueError(f"unit {index}: {problem}")
        if isinstance(unit, AggregateUnit):
            _check_members(order, unit, index)
        parts.append(encode_unit(unit, ctx))
        ctx = advance_context(ctx, unit)
    return b"".join(parts)


def _check_members(order: _OrderCheck, unit: AggregateUnit, index: int) -> None:
    for member in unit.units:
        problem = order.visit(member.nnr_unit_type, top_level=False)
        if problem:
            raise ValueError(f"unit {index} (aggregate member): {problem}")
        if isinstance(member, AggregateUnit):
            _check_members(order, member, index)


def looks_like_nnr(head: bytes | bytearray | memoryview) -> bool:
    """Whether the first bytes of a file can open an NNR bitstream (a start unit's frame).

    Four bytes suffice for the usual short-form start unit (`00 04 0x ..` with type 0).
    """
    head = bytes(head[:6])
    if len(head) >= 3 and head[0] >> 7 == 0:
        return int.from_bytes(head[:2], "big") == 4 and head[2] >> 2 == NnrUnitType.NNR_STR
    if len(head) >= 4 and head[0] >> 7 == 1:
        ok = int.from_bytes(head[:4], "big") & MAX_UNIT_SIZE == 6
        return ok and (len(head) < 5 or head[4] >> 2 == NnrUnitType.NNR_STR)
    return False


class _OrderCheck:
    """Unit order rules: a start unit first and only there, an MPS before any NDU."""

    __slots__ = ("_count", "_seen_mps")

    def __init__(self) -> None:
        self._count = 0
        self._seen_mps = False

    @classmethod
    def after_parameter_sets(cls) -> _OrderCheck:
        """A check for units that follow a start unit and an MPS."""
        check = cls()
        check._count = 1
        check._seen_mps = True
        return check

    def visit(self, unit_type: int, *, top_level: bool) -> str | None:
        """Record the next unit; return what is wrong with it being here, if anything."""
        first = self._count == 0
        self._count += 1
        if first and (unit_type != NnrUnitType.NNR_STR or not top_level):
            return f"a bitstream must start with a start unit (NNR_STR), found nnr_unit_type {unit_type}"
        if not first and unit_type == NnrUnitType.NNR_STR:
            return "a start unit (NNR_STR) may only be the first unit"
        if unit_type == NnrUnitType.NNR_MPS:
            self._seen_mps = True
        if unit_type == NnrUnitType.NNR_NDU and not self._seen_mps:
            return "a compressed data unit (NNR_NDU) precedes the model parameter set (NNR_MPS)"
        return None


class _SequenceReader:
    """Parses consecutive units of one buffer, carrying the context and the order check."""

    __slots__ = ("_ctx", "_nested", "_order", "_view")

    def __init__(self, view: memoryview, ctx: UnitContext, order: _OrderCheck, *, nested: bool = False) -> None:
        # Offsets taken and reported are offsets in `view` (the whole input, for read_units).
        self._view = view
        self._ctx = ctx
        self._order = order
        self._nested = nested

    def read_members(self, start: int, end: int) -> list[ParsedUnit]:
        """Read units from absolute offset `start` until exactly `end`."""
        units: list[ParsedUnit] = []
        offset = start
        while offset < end:
            parsed = self.read_one(offset, end, len(units))
            units.append(parsed)
            offset += parsed.size
        return units

    def read_one(self, offset: int, end: int, index: int) -> ParsedUnit:
        """Read the unit at absolute `offset`; it must end by `end`."""
        r = BitReader(self._view, offset, end)
        if r.bits_left < 16:
            raise BitstreamError(f"truncated nnr_unit_size: {r.bytes_left} bytes left", byte_offset=offset)
        long_form = r.u(1)
        if long_form and r.bits_left < 31:
            raise BitstreamError(f"truncated 31-bit nnr_unit_size: {end - offset} bytes left", byte_offset=offset)
        size = r.u(15 + 16 * long_form)
        field = 4 if long_form else 2
        if size < field + 1:
            raise BitstreamError(
                f"nnr_unit_size {size} cannot hold its {field}-byte size field and the unit header",
                byte_offset=offset,
            )
        if offset + size > end:
            where = "the enclosing aggregate unit" if self._nested else "the data"
            raise BitstreamError(
                f"nnr_unit_size {size} runs past the end of {where} ({end - offset} bytes left)",
                byte_offset=offset,
            )
        r = BitReader(self._view, offset + field, offset + size)
        header = NnrUnitHeader.read(r)
        problem = self._order.visit(header.nnr_unit_type, top_level=not self._nested)
        if problem:
            raise BitstreamError(problem, byte_offset=offset)
        cls = _UNIT_CLASSES.get(header.nnr_unit_type)
        if cls is None:
            raise BitstreamError(f"nnr_unit_type {header.nnr_unit_type} is reserved", byte_offset=offset)
        name = NnrUnitType(header.nnr_unit_type).name
        members: tuple[ParsedUnit, ...] = ()
        try:
            if cls is AggregateUnit:
                inner = _SequenceReader(self._view, self._ctx, self._order, nested=True)
                members = tuple(inner.read_members(r.byte_position, offset + size))
                unit: Unit = AggregateUnit(tuple(m.unit for m in members), **NnrUnit._common_from(header))  # type: ignore[arg-type]
            else:
                unit = cls.read(r, self._ctx, header)  # type: ignore[assignment]
                if r.bits_left:
                    raise BitstreamError(
                        f"{name} unit syntax ends {r.bits_left // 8} bytes before its declared nnr_unit_size {size}",
                        byte_offset=r.byte_position,
                    )
        except ValueError as exc:  # a value read correctly that the structure cannot hold
            raise BitstreamError(f"invalid {name} unit: {exc}", byte_offset=offset) from exc
        self._ctx = advance_context(self._ctx, unit)
        return ParsedUnit(index, offset, size, unit, members)


def read_units(data: bytes | bytearray | memoryview, source: str = "<bytes>") -> list[ParsedUnit]:
    """Parse a whole bitstream into units.

    Args:
        data: the bitstream; a memoryview is not copied (NDU payloads stay views into it).
        source: file name (or other label) put in front of error messages.

    Raises:
        BitstreamError: the stream is truncated, corrupt, or its units are out of order; the
            message names `source`, the unit index and the byte offset.
        UnsupportedError: a unit uses syntax nnrconv cannot read; named likewise.
    """
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    reader = _SequenceReader(view, UnitContext(), _OrderCheck())
    units: list[ParsedUnit] = []
    offset = 0
    while offset < len(view):
        index = len(units)
        try:
            parsed = reader.read_one(offset, len(view), index)
        except BitstreamError as exc:
            raise with_source(exc.located(unit_index=index, byte_offset=offset), source) from exc
        except UnsupportedError as exc:
            raise UnsupportedError(f"{source}: unit {index}, byte offset {offset}: {exc}") from exc
        units.append(parsed)
        offset += parsed.size
    if not units:
        raise with_source(BitstreamError("empty bitstream: no start unit", byte_offset=0), source)
    return units


def with_source(exc: BitstreamError, source: str) -> BitstreamError:
    """A copy of `exc` whose message starts with the file name, keeping the location fields."""
    located = BitstreamError(exc.reason, unit_index=exc.unit_index, byte_offset=exc.byte_offset, tensor=exc.tensor)
    located.args = (f"{source}: {located}",)
    return located
