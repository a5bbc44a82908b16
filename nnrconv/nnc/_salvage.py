# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Salvage: the units of a damaged or cut bitstream that survive, as a stream that decodes.

Each unit is framed and checked on its own, so damage costs only the units it touches. With an
integrity record a unit survives when its CRC-32 matches; a unit whose size field is damaged is
skipped by resynchronising on the next offset where a unit whose CRC the record lists begins.
Without a record (NNCodec's streams) a unit survives when it parses and, for data units, decodes.
The start unit, the model parameter set and the topology are needed by every tensor: damage
there cannot be salvaged. What is lost is described (unit index, byte offset, and the tensor
names and dimensions when the damaged unit's header still reads) so the caller can fill it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from nnrconv.core._errors import BitstreamError, NNRConvError
from nnrconv.nnc._decoding import DecodedModel, decode_model
from nnrconv.nnc._enums import NnrUnitType
from nnrconv.nnc._framing import _OrderCheck, _SequenceReader, advance_context, read_units
from nnrconv.nnc._incremental import BaseModel
from nnrconv.nnc._integrity import (
    RECORD_INDEX,
    IntegrityRecord,
    crc_of,
    find_record,
    has_magic,
    unit_type_of,
)
from nnrconv.nnc._ndu import CompressedDataUnit
from nnrconv.nnc._payloads import output_dtype
from nnrconv.nnc._units import UnitContext

__all__ = ["LostUnit", "Salvaged", "decode_salvaged", "salvage_stream"]

_RESYNC_HEADER = (NnrUnitType.NNR_NDU << 2) | 0b10  # an NDU header byte as nnrconv and NNCodec write it


@dataclass(frozen=True, slots=True)
class LostUnit:
    """A unit that did not survive.

    Attributes:
        unit_index: its index in the damaged stream (None when it is missing altogether).
        byte_offset: where it was (or where the stream ends, for missing units).
        reason: what is wrong.
        tensors: the tensor names its header still gives (empty when unknown).
        shape: their tensor_dimensions, when known.
        dtype: their decoded element type, when known.
    """

    unit_index: int | None
    byte_offset: int
    reason: str
    tensors: tuple[str, ...] = ()
    shape: tuple[int, ...] | None = None
    dtype: np.dtype | None = None


@dataclass(frozen=True, slots=True)
class Salvaged:
    """The surviving units as one bitstream (without integrity record), and what was lost.

    Attributes:
        stream: start unit, MPS, topology and every surviving data unit, in their order.
        lost: the units that did not survive, in stream order.
        verified: survivors were checked against an integrity record (else only parsed/decoded).
        notes: other things worth telling (a damaged integrity record, data after the last unit).
        kept: for each unit of `stream`, (index, byte offset, size) in the damaged stream.
    """

    stream: bytes
    lost: tuple[LostUnit, ...]
    verified: bool
    notes: tuple[str, ...] = ()
    kept: tuple[tuple[int, int, int], ...] = ()


def _frame_at(view: memoryview, offset: int) -> tuple[int, int] | None:
    if len(view) - offset < 3:
        return None
    field = 4 if view[offset] >> 7 else 2
    if len(view) - offset < field + 1:
        return None
    size = int.from_bytes(view[offset : offset + field], "big") & ((1 << (8 * field - 1)) - 1)
    if size < field + 1 or offset + size > len(view):
        return None
    return offset, size


def _candidates(view: memoryview, start: int) -> Iterator[tuple[int, int]]:
    """Frames that could begin a data unit, at offsets from `start` on (header byte of an NDU)."""
    for offset in range(start, len(view) - 2):
        field = 4 if view[offset] >> 7 else 2
        if offset + field < len(view) and view[offset + field] == _RESYNC_HEADER:
            frame = _frame_at(view, offset)
            if frame is not None:
                yield frame


def _describe(view: memoryview, frame: tuple[int, int], ctx: UnitContext, index: int | None, reason: str) -> LostUnit:
    """A lost unit, with its tensors' names and dimensions when its header still parses."""
    offset, size = frame
    try:
        parsed = _SequenceReader(view, ctx, _OrderCheck.after_parameter_sets()).read_one(offset, offset + size, 0)
    except (NNRConvError, ValueError, IndexError):
        return LostUnit(index, offset, reason)
    unit = parsed.unit
    if not isinstance(unit, CompressedDataUnit) or not all(isinstance(e, str) for e in unit.header.topology_elements):
        return LostUnit(index, offset, reason)
    header = unit.header
    dtype = output_dtype(header.nnr_compressed_data_unit_payload_type, header.nnr_decompressed_data_format)
    return LostUnit(index, offset, reason, tuple(header.topology_elements), header.tensor_dimensions, dtype)  # type: ignore[arg-type]


def _fatal(index: int, offset: int, kind: str) -> BitstreamError:
    return BitstreamError(
        f"the {kind} is damaged; every tensor depends on it, so the stream cannot be salvaged",
        unit_index=index,
        byte_offset=offset,
    )


def _head(view: memoryview) -> tuple[list[tuple[int, int]], UnitContext, int]:
    """The start unit and MPS frames (which must be intact and parse), the context after them, and
    where the next unit begins."""
    frames: list[tuple[int, int]] = []
    offset = 0
    for index, kind in enumerate(("start unit", "model parameter set")):
        frame = _frame_at(view, offset)
        if frame is None:
            raise _fatal(index, offset, kind)
        frames.append(frame)
        offset += frame[1]
    try:
        units = read_units(view[:offset], "<salvage>")
    except NNRConvError:
        raise _fatal(1, frames[1][0], "start unit or model parameter set") from None
    ctx = UnitContext()
    for parsed in units:
        ctx = advance_context(ctx, parsed.unit)
    if [unit_type_of(view, f) for f in frames] != [NnrUnitType.NNR_STR, NnrUnitType.NNR_MPS]:
        raise _fatal(0, 0, "start unit or model parameter set")
    return frames, ctx, offset


def salvage_stream(data: bytes | bytearray | memoryview) -> Salvaged:
    """The units of `data` that survive, as a decodable stream, and the units lost.

    Raises:
        BitstreamError: the start unit, model parameter set or topology unit is damaged (the
            message says so and names it), or nothing after them can be read.
    """
    view = memoryview(data).cast("B")
    head, ctx, offset = _head(view)
    notes: list[str] = []
    record: IntegrityRecord | None = None
    record_frame = _frame_at(view, offset)
    if record_frame is not None and has_magic(view, record_frame):
        try:
            record = find_record(view, [*head, record_frame], parts=False)
        except BitstreamError as exc:
            notes.append(f"unit {RECORD_INDEX}, byte offset {offset}: {exc.reason}; the units are checked by parsing")
        offset += record_frame[1]
    expected = list(record.crcs) if record is not None else []
    position = 2  # entries 0 and 1 are the start unit and the MPS
    if record is not None:
        for i, frame in enumerate(head):
            if crc_of(view[frame[0] : frame[0] + frame[1]]) != expected[i]:
                raise _fatal(i, frame[0], "start unit" if i == 0 else "model parameter set")
    kept: list[tuple[int, int, int]] = [(i, o, n) for i, (o, n) in enumerate(head)]
    lost: list[LostUnit] = []
    index = len(head) + (1 if record_frame is not None and has_magic(view, record_frame) else 0)
    while offset < len(view):
        frame = _frame_at(view, offset)
        if record is not None:
            if position >= len(expected):
                notes.append(f"{len(view) - offset} bytes after the last unit the integrity record covers are ignored")
                break
            intact = frame is not None and crc_of(view[frame[0] : frame[0] + frame[1]]) == expected[position]
        else:
            intact = frame is not None and _parses(view, frame, ctx)
        if intact:
            assert frame is not None
            kept.append((index, *frame))
            if unit_type_of(view, frame) != NnrUnitType.NNR_NDU:
                ctx = _advance(view, frame, ctx)
            offset += frame[1]
            index += 1
            position += 1
            continue
        kind = unit_type_of(view, frame) if frame is not None else None
        if kind == NnrUnitType.NNR_TPL or (record is not None and position == 2 and kind != NnrUnitType.NNR_NDU):
            raise _fatal(index, offset, "topology unit")
        reason = "damaged (integrity check failed)" if record is not None else "damaged (does not parse)"
        if frame is None:
            reason = "cut: the stream ends inside it"
        lost.append(_describe(view, frame or (offset, len(view) - offset), ctx, index, reason))
        resumed = _resync(view, offset, frame, expected, position, ctx)
        if resumed is None:
            position += 1
            break
        offset, skipped = resumed
        position += 1 + skipped
        for _ in range(skipped):
            lost.append(LostUnit(None, offset, "its framing was damaged with the unit before it"))
        index += 1 + skipped
    if record is not None and position < len(expected):
        missing = len(expected) - position
        lost.extend(LostUnit(None, len(view), "missing: the stream is cut before it") for _ in range(missing))
    stream = b"".join(bytes(view[o : o + n]) for _, o, n in kept)
    return Salvaged(stream, tuple(lost), record is not None, tuple(notes), tuple(kept))


def decode_salvaged(
    data: bytes | bytearray | memoryview,
    *,
    source: str = "<bytes>",
    jobs: int | None = None,
    base: BaseModel | None = None,
) -> tuple[DecodedModel, Salvaged]:
    """Decode what survives of `data` (see `salvage_stream`); units that parse but do not decode
    (possible only without integrity record) are lost too.

    Raises:
        BitstreamError: as `salvage_stream`, or damage that costs more than data units.
    """
    view = memoryview(data).cast("B")
    salvaged = salvage_stream(view)
    lost = list(salvaged.lost)
    kept = list(salvaged.kept)
    stream = salvaged.stream
    while True:
        try:
            decoded = decode_model(stream, source=source, jobs=jobs, base=base)
        except BitstreamError as exc:
            at = exc.unit_index
            if at is None or at < 3 or at >= len(kept) or unit_type_of(view, kept[at][1:]) != NnrUnitType.NNR_NDU:
                raise
            index, offset, size = kept.pop(at)
            head = UnitContext()
            for parsed in read_units(stream[: sum(n for _, _, n in kept[:2])], source):
                head = advance_context(head, parsed.unit)
            lost.append(_describe(view, (offset, size), head, index, f"damaged ({exc.reason})"))
            stream = b"".join(bytes(view[o : o + n]) for _, o, n in kept)
            continue
        lost.sort(key=lambda u: (u.byte_offset, u.unit_index is None))
        result = Salvaged(stream, tuple(lost), salvaged.verified, salvaged.notes, tuple(kept))
        return decoded, result


def _advance(view: memoryview, frame: tuple[int, int], ctx: UnitContext) -> UnitContext:
    parsed = _SequenceReader(view, ctx, _OrderCheck.after_parameter_sets()).read_one(frame[0], frame[0] + frame[1], 0)
    return advance_context(ctx, parsed.unit)


def _parses(view: memoryview, frame: tuple[int, int], ctx: UnitContext) -> bool:
    try:
        _SequenceReader(view, ctx, _OrderCheck.after_parameter_sets()).read_one(frame[0], frame[0] + frame[1], 0)
    except (NNRConvError, ValueError, IndexError):
        return False
    return True


def _resync(
    view: memoryview,
    offset: int,
    frame: tuple[int, int] | None,
    expected: list[int],
    position: int,
    ctx: UnitContext,
) -> tuple[int, int] | None:
    """Where reading resumes after a lost unit, and how many further units were skipped.

    First the next offset the damaged unit's own size gives; if no good unit starts there, the
    first offset where one does (a data unit whose CRC the record lists later on, or, without
    record, one that parses). None when no unit follows.
    """
    later = {crc: i for i, crc in reversed(list(enumerate(expected))) if i > position}

    def good(candidate: tuple[int, int]) -> int | None:
        if expected:
            i = later.get(crc_of(view[candidate[0] : candidate[0] + candidate[1]]))
            return None if i is None else i - position - 1
        return 0 if _parses(view, candidate, ctx) else None

    if frame is not None:
        following = _frame_at(view, frame[0] + frame[1])
        if following is not None and (skipped := good(following)) is not None:
            return following[0], skipped
    for candidate in _candidates(view, offset + 1):
        skipped = good(candidate)
        if skipped is not None:
            return candidate[0], skipped
    return None
