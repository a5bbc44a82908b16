# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Integrity records: a CRC-32 per NNR unit and a SHA-256 over the data, checked before decoding.

Carriage. The record is an NNR topology unit (ISO/IEC 15938-17 clause 7.3, `nnr_topology_unit`)
with `topology_storage_format` NNR_TPL_UNREC (0, "unrecognised": the standard leaves the
content of such topology data to the application), `topology_compression_format` NNR_PT_RAW and
`topology_data` a NUL-free ASCII line, i.e. a valid `st(v)`. It is placed right after the model
parameter set (unit 2), before the model's own topology unit, so

- a conforming decoder, and NNCodec 2.1.3, parse it as one more topology unit whose data they
  do not interpret (NNCodec keeps the storage format of the *last* topology unit, the model's);
- the data units stay exactly as coded, so nothing changes for their decoding;
- the same record travels inside the parameter sets that `encode_parts` returns, so NNR
  embedded in ONNX, NNEF, TensorFlow or PyTorch containers is checked with no plugin change.

Content: `nnrconv-integrity/1 FORM CRCS DIGEST SELF` where FORM is `stream` (a whole `.nnr`,
CRCS one per other unit in stream order) or `parts` (parameter sets for embedding: the start
unit, the MPS, then one per data unit in coding order), CRCS the big-endian CRC-32 values in
base85 (RFC 1924 alphabet: printable ASCII without space), DIGEST the first 16 bytes of a SHA-256
(base85) and SELF the CRC-32 (8 hex digits) of every byte of the record unit before it.

Why both. A CRC-32 (zlib) per unit finds *which* unit is damaged (salvage needs that) and, being
a cyclic code, provably detects every single-bit error and every burst of up to 32 bits in its
unit; other damage escapes it with probability 2**-32. The SHA-256 over the parameter sets and
data units (data units in ascending CRC order, so the embedded form, whose containers may
reorder tensors, has the same digest) binds them together and leaves 2**-128. Four bytes per
unit keep the cost within 0.5 % + 1 KB even for models of hundreds of tiny tensors. Neither is
proof against a deliberate change (an attacker recomputes both): that is what signing is for.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from nnrconv.core._errors import BitstreamError, FormatError, NNRConvError
from nnrconv.nnc._enums import NnrUnitType

__all__ = [
    "MAGIC",
    "IntegrityRecord",
    "no_start_unit",
    "StreamCheck",
    "StreamSealer",
    "check_parts",
    "check_stream",
    "crc_of",
    "scan_frames",
    "seal_parts",
    "seal_stream",
    "split_record",
    "strip_record",
    "unit_type_of",
]

MAGIC = b"nnrconv-integrity/1"
FORM_STREAM = "stream"
FORM_PARTS = "parts"
RECORD_INDEX = 2
"""A record is the third unit: after the start unit and the model parameter set."""

_DIGEST_BYTES = 16
_HEADER_BYTE = (NnrUnitType.NNR_TPL << 2) | 0b10  # independently decodable, no partial data counter
_HEAD_SEARCH = 4096  # where a displaced record signature is looked for
_SHORT_LIMIT = 1 << 15

Frame = tuple[int, int]
"""(byte offset, nnr_unit_size) of one top-level unit."""


def crc_of(data: bytes | bytearray | memoryview) -> int:
    """The CRC-32 (zlib, ISO-HDLC) of a unit's bytes."""
    return zlib.crc32(data)


def _field_size(view: memoryview, offset: int) -> int:
    return 4 if view[offset] >> 7 else 2


def unit_type_of(view: memoryview, frame: Frame) -> int:
    """`nnr_unit_type` of a framed unit, read from its header byte."""
    offset, _ = frame
    return view[offset + _field_size(view, offset)] >> 2


def scan_frames(view: memoryview, start: int = 0, end: int | None = None) -> tuple[list[Frame], BitstreamError | None]:
    """Split a stream into units by their size fields alone, up to the first one that cannot be.

    Returns the frames found and, when the stream does not end on a unit boundary, the error
    for the unit that does not fit (located by unit index and byte offset).
    """
    end = len(view) if end is None else end
    frames: list[Frame] = []
    offset = start
    while offset < end:
        index = len(frames)
        long_form = view[offset] >> 7
        field = 4 if long_form else 2
        if end - offset < field + 1:
            return frames, BitstreamError(
                f"truncated unit: {end - offset} bytes left, too few for a size field and header",
                unit_index=index,
                byte_offset=offset,
            )
        size = int.from_bytes(view[offset : offset + field], "big") & ((1 << (8 * field - 1)) - 1)
        if size < field + 1:
            return frames, BitstreamError(
                f"nnr_unit_size {size} cannot hold its {field}-byte size field and the unit header",
                unit_index=index,
                byte_offset=offset,
            )
        if offset + size > end:
            return frames, BitstreamError(
                f"nnr_unit_size {size} runs past the end of the data ({end - offset} bytes left): "
                "the stream is truncated",
                unit_index=index,
                byte_offset=offset,
            )
        frames.append((offset, size))
        offset += size
    return frames, None


@dataclass(frozen=True, slots=True)
class IntegrityRecord:
    """The integrity data of a stream or of parts for embedding.

    Attributes:
        form: "stream" (every other unit of a bitstream, in order) or "parts" (start unit, MPS,
            then the data units, in coding order).
        crcs: one CRC-32 per covered unit.
        digest: the first 16 bytes of the SHA-256 over the covered units (see `_digest`).
    """

    form: str
    crcs: tuple[int, ...]
    digest: bytes

    def unit(self) -> bytes:
        """The complete topology unit (size field included) that carries this record."""
        packed = b"".join(c.to_bytes(4, "big") for c in self.crcs)
        text = b" ".join(
            [MAGIC, self.form.encode("ascii"), base64.b85encode(packed), base64.b85encode(self.digest), b""]
        )
        body_length = 3 + len(text) + 8 + 1  # header, two format bytes, text, SELF, terminator
        total = body_length + 2
        size = total.to_bytes(2, "big") if total < _SHORT_LIMIT else ((1 << 31) | (body_length + 4)).to_bytes(4, "big")
        head = size + bytes([_HEADER_BYTE, 0, 0]) + text
        return head + b"%08x" % crc_of(head) + b"\0"

    @classmethod
    def from_unit(cls, unit: memoryview) -> IntegrityRecord:
        """Read a record from its unit's bytes.

        Raises:
            ValueError: the unit is not an intact record; the message says what is wrong.
        """
        field = _field_size(unit, 0)
        if len(unit) < field + 3 + len(MAGIC) + 10 or bytes(unit[field : field + 3]) != bytes([_HEADER_BYTE, 0, 0]):
            raise ValueError("its unit header is not that of an integrity record (NNR_TPL, NNR_TPL_UNREC, raw)")
        if unit[-1] != 0:
            raise ValueError("it does not end with its 0x00 terminator")
        if bytes(unit[-9:-1]) != b"%08x" % crc_of(unit[:-9]):
            raise ValueError("its own CRC-32 does not match")
        parts = bytes(unit[field + 3 : -9]).split(b" ")
        if len(parts) != 5 or parts[0] != MAGIC or parts[4] != b"":
            raise ValueError("its text does not have the five fields of version 1")
        try:
            packed = base64.b85decode(parts[2])
            digest = base64.b85decode(parts[3])
        except ValueError as exc:
            raise ValueError(f"invalid base85 ({exc})") from None
        form = parts[1].decode("ascii", "replace")
        if form not in (FORM_STREAM, FORM_PARTS) or len(packed) % 4 or len(digest) != _DIGEST_BYTES:
            raise ValueError("its form, CRC list or digest is malformed")
        crcs = tuple(int.from_bytes(packed[i : i + 4], "big") for i in range(0, len(packed), 4))
        return cls(form, crcs, digest)


def has_magic(view: memoryview, frame: Frame) -> bool:
    offset, size = frame
    start = offset + _field_size(view, offset) + 3
    return size >= start - offset + len(MAGIC) and bytes(view[start : start + len(MAGIC)]) == MAGIC


def _looks_like_record_header(view: memoryview, frame: Frame) -> bool:
    """A unit framed as a record (NNR_TPL, unrecognised format, raw, long enough) whatever its text."""
    offset, size = frame
    start = offset + _field_size(view, offset)
    return size >= start - offset + 3 + len(MAGIC) and bytes(view[start : start + 3]) == bytes([_HEADER_BYTE, 0, 0])


def _digest(
    views: Sequence[memoryview | bytes],
    crcs: Sequence[int],
    types: Sequence[int],
    release: Callable[[int], None] | None = None,
) -> bytes:
    """SHA-256 (first 16 bytes) over the covered units that are not topology: parameter units in
    order, then the data units in ascending CRC order (ties by content), so that a container's
    tensor order does not matter. `release(i)` is called once unit i has been hashed."""

    def chunks(i: int) -> Iterator[memoryview | bytes]:
        yield views[i]
        if release is not None:
            release(i)

    return _digest_of(crcs, types, chunks)


def _digest_of(
    crcs: Sequence[int], types: Sequence[int], chunks: Callable[[int], Iterable[bytes | memoryview]]
) -> bytes:
    """`_digest` of units given as chunks of bytes (unit i is ``chunks(i)``, read in order)."""
    sha = hashlib.sha256()
    ndus: list[int] = []
    for i, unit_type in enumerate(types):
        if unit_type == NnrUnitType.NNR_NDU:
            ndus.append(i)
        elif unit_type != NnrUnitType.NNR_TPL:
            for chunk in chunks(i):
                sha.update(chunk)
    counts = Counter(crcs[i] for i in ndus)
    ndus.sort(key=lambda i: (crcs[i], b"".join(chunks(i)) if counts[crcs[i]] > 1 else b""))
    for i in ndus:
        for chunk in chunks(i):
            sha.update(chunk)
    return sha.digest()[:_DIGEST_BYTES]


class StreamSealer:
    """The stream record of a bitstream written unit by unit to a seekable, readable file.

    The record (unit 2) covers every unit after it, so it is known last: the writer puts
    `placeholder` (a record of the same length: its size depends only on the number of units)
    in its place, `add`s every other unit as it writes it, then `record` reads the data units
    back from the file, a chunk at a time, for the digest. The result is byte for byte the
    record `seal_stream` makes of the same units.
    """

    def __init__(self, covered: int) -> None:
        self.covered = covered
        self.placeholder = IntegrityRecord(FORM_STREAM, (0,) * covered, bytes(_DIGEST_BYTES)).unit()
        self._spans: list[tuple[int, int]] = []
        self._crcs: list[int] = []
        self._types: list[int] = []

    def add(self, offset: int, parts: Sequence[bytes | memoryview]) -> None:
        """Note the unit written at `offset` as `parts` (its bytes, in pieces)."""
        crc = 0
        size = 0
        first = b""
        for part in parts:
            crc = zlib.crc32(part, crc)
            size += len(part)
            if len(first) < 5:
                first += bytes(memoryview(part)[: 5 - len(first)])
        self._spans.append((offset, size))
        self._crcs.append(crc)
        self._types.append(_type_of_unit(first))

    def record(self, read: Callable[[int, int], Iterable[bytes]]) -> bytes:
        """The record unit; `read(offset, size)` gives a written unit's bytes in chunks.

        Raises:
            ValueError: not as many units were added as the placeholder covers.
        """
        if len(self._spans) != self.covered:
            raise ValueError(f"the record covers {self.covered} units, {len(self._spans)} were written")
        digest = _digest_of(self._crcs, self._types, lambda i: read(*self._spans[i]))
        record = IntegrityRecord(FORM_STREAM, tuple(self._crcs), digest).unit()
        assert len(record) == len(self.placeholder)
        return record


def _type_of_unit(unit: memoryview | bytes) -> int:
    view = memoryview(unit).cast("B")
    return unit_type_of(view, (0, len(view)))


def _frames_of(parameter_sets: bytes | bytearray | memoryview) -> tuple[memoryview, list[Frame]]:
    view = memoryview(parameter_sets).cast("B")
    frames, error = scan_frames(view)
    if error is not None:
        raise error
    return view, frames


def seal_stream(parameter_sets: bytes, rest: Sequence[bytes]) -> bytes:
    """A bitstream of `parameter_sets` (start unit, MPS), a stream record, then `rest` (units).

    Raises:
        BitstreamError: the parameter sets do not split into units.
    """
    view, frames = _frames_of(parameter_sets)
    head = [view[o : o + n] for o, n in frames]
    units: list[memoryview | bytes] = [*head, *rest]
    crcs = [crc_of(u) for u in units]
    types = [_type_of_unit(u) for u in units]
    record = IntegrityRecord(FORM_STREAM, tuple(crcs), _digest(units, crcs, types)).unit()
    return b"".join([*head[:RECORD_INDEX], record, *head[RECORD_INDEX:], *rest])


def seal_parts(
    parameter_sets: bytes,
    ndus: Iterable[bytes | memoryview],
    *,
    crcs: Sequence[int] | None = None,
    digest: bytes | None = None,
) -> bytes:
    """Parameter sets for embedding, with a parts record covering them and exactly these data units.

    Parameter sets that already carry a record are first checked against it (each data unit
    must be one it covers), so that a container may keep a subset of the units `encode_parts`
    coded and reseal. `crcs` (of the parameter units, then of the data units) and `digest` may
    be passed when already known (a verified stream of the same units has the same digest).

    Raises:
        BitstreamError: the parameter sets are damaged, or a data unit is not one their
            record covers.
    """
    ndus = list(ndus)
    if _has_record(parameter_sets):
        check_parts(parameter_sets, {f"#{i}": ndu for i, ndu in enumerate(ndus)}, complete=False)
        parameter_sets, _ = split_record(parameter_sets)
    view, frames = _frames_of(parameter_sets)
    head = [view[o : o + n] for o, n in frames]
    units: list[memoryview | bytes] = [*head, *ndus]
    if crcs is None or digest is None:
        crcs = [crc_of(u) for u in units]
        digest = _digest(units, crcs, [_type_of_unit(u) for u in units])
    record = IntegrityRecord(FORM_PARTS, tuple(crcs), digest).unit()
    return b"".join([*head[:RECORD_INDEX], record, *head[RECORD_INDEX:]])


def _has_record(parameter_sets: bytes | bytearray | memoryview) -> bool:
    view = memoryview(parameter_sets).cast("B")
    frames, _ = scan_frames(view)
    return len(frames) > RECORD_INDEX and has_magic(view, frames[RECORD_INDEX])


def _damaged_record(reason: str, frame: Frame) -> BitstreamError:
    return BitstreamError(
        f"the integrity record is damaged: {reason}", unit_index=RECORD_INDEX, byte_offset=frame[0]
    )


def find_record(view: memoryview, frames: list[Frame], *, parts: bool) -> IntegrityRecord | None:
    """The record at unit 2, None when the stream has none; raises when one is there but damaged.

    A single damaged bit must not make a record disappear silently, so besides a record whose
    own check fails, these count as damage: the record's signature near the start of the data
    but not where a record begins, and a unit framed like a record right after the MPS (an
    unrecognised-format topology unit of record length) that is followed by another topology
    unit (stream) or sits in parameter sets (parts) without being a record.
    """
    if len(frames) > RECORD_INDEX and has_magic(view, frames[RECORD_INDEX]):
        frame = frames[RECORD_INDEX]
        try:
            record = IntegrityRecord.from_unit(view[frame[0] : frame[0] + frame[1]])
        except ValueError as exc:
            raise _damaged_record(str(exc), frame) from None
        if record.form != (FORM_PARTS if parts else FORM_STREAM):
            raise _damaged_record(f"it is a {record.form} record where a different form belongs", frame)
        return record
    where = bytes(view[:_HEAD_SEARCH]).find(MAGIC)
    if where >= 0:
        index = next((i for i, (o, n) in enumerate(frames) if o <= where < o + n), len(frames))
        offset = frames[index][0] if index < len(frames) else sum(n for _, n in frames)
        raise BitstreamError(
            f"the unit framing is damaged: the integrity record's signature, at byte offset {where}, is not "
            "where unit 2 starts",
            unit_index=index,
            byte_offset=offset,
        )
    if len(frames) > RECORD_INDEX and _looks_like_record_header(view, frames[RECORD_INDEX]):
        frame = frames[RECORD_INDEX]
        if parts:
            raise _damaged_record("the parameter sets hold a topology unit that is not an integrity record", frame)
        if len(frames) > RECORD_INDEX + 1 and unit_type_of(view, frames[RECORD_INDEX + 1]) == NnrUnitType.NNR_TPL:
            raise _damaged_record("two topology units follow the model parameter set; the first is no record", frame)
    return None


@dataclass(frozen=True, slots=True)
class StreamCheck:
    """The outcome of `check_stream`.

    Attributes:
        verified: the stream carries a record and every unit matched it.
        record_index: the record's unit index (None without record).
        frames: every top-level unit, the record included.
        crcs: byte offset -> CRC-32 of each covered unit (verified streams only).
        digest: the record's digest (verified streams only).
    """

    verified: bool
    record_index: int | None = None
    frames: tuple[Frame, ...] = ()
    crcs: Mapping[int, int] | None = None
    digest: bytes | None = None


def _unit_name(unit_type: int) -> str:
    try:
        return NnrUnitType(unit_type).name
    except ValueError:
        return f"type-{unit_type}"


def check_stream(view: memoryview, release: Callable[[int, int], None] | None = None) -> StreamCheck:
    """Verify a bitstream against its integrity record, before any unit is parsed.

    Returns `StreamCheck(verified=False)` for a stream without record (NNCodec's, or older
    nnrconv output); framing errors of such streams are left to the parser. `release(offset,
    size)` is called each time a unit's bytes have been read (a memory-mapped file drops its
    pages there, so that checking a big file does not grow the process's memory).

    Raises:
        BitstreamError: a unit fails its CRC-32 (named by unit index and byte offset), units are
            missing or appended, the record itself is damaged, or the digest does not match.
    """
    frames, error = scan_frames(view)
    record = find_record(view, frames, parts=False)
    if record is None:
        return StreamCheck(False, frames=tuple(frames))
    covered = [(i, f) for i, f in enumerate(frames) if i != RECORD_INDEX]
    crcs: dict[int, int] = {}
    for position, (index, (offset, size)) in enumerate(covered):
        if position >= len(record.crcs):
            raise BitstreamError(
                f"the integrity record covers {len(record.crcs) + 1} units; this one and any after it were added",
                unit_index=index,
                byte_offset=offset,
            )
        crc = crc_of(view[offset : offset + size])
        if crc != record.crcs[position]:
            kind = _unit_name(unit_type_of(view, (offset, size)))
            raise BitstreamError(
                f"{kind} unit fails its integrity check (CRC-32 {crc:08x}, recorded {record.crcs[position]:08x}): "
                "it is damaged",
                unit_index=index,
                byte_offset=offset,
            )
        crcs[offset] = crc
        if release is not None:
            release(offset, size)
    if error is not None:
        raise error
    if len(covered) < len(record.crcs):
        raise BitstreamError(
            f"the stream ends after {len(frames)} units, but its integrity record covers {len(record.crcs) + 1}: "
            "it is truncated",
            unit_index=len(frames),
            byte_offset=len(view),
        )
    views = [view[o : o + n] for _, (o, n) in covered]
    types = [unit_type_of(view, f) for _, f in covered]
    done = None if release is None else (lambda i: release(*covered[i][1]))
    if _digest(views, list(crcs.values()), types, done) != record.digest:
        raise BitstreamError(
            "the data digest (SHA-256) does not match the integrity record, though every unit's CRC-32 does: "
            "the stream is damaged",
            unit_index=RECORD_INDEX,
            byte_offset=frames[RECORD_INDEX][0],
        )
    return StreamCheck(True, RECORD_INDEX, tuple(frames), crcs, record.digest)


def split_record(parameter_sets: bytes | bytearray | memoryview) -> tuple[bytes, IntegrityRecord | None]:
    """Parameter sets without their parts record, and the record (None when there is none).

    Raises:
        BitstreamError: a record is there but damaged, or the parameter units are.
    """
    view, frames = _frames_of(parameter_sets)
    record = find_record(view, frames, parts=True)
    if record is None:
        return bytes(view), None
    kept = [f for i, f in enumerate(frames) if i != RECORD_INDEX]
    for position, (offset, size) in enumerate(kept):
        if position >= len(record.crcs) or crc_of(view[offset : offset + size]) != record.crcs[position]:
            kind = _unit_name(unit_type_of(view, (offset, size)))
            raise BitstreamError(
                f"{kind} unit of the parameter sets fails its integrity check: it is damaged",
                unit_index=position if position < RECORD_INDEX else position + 1,
                byte_offset=offset,
            )
    return b"".join(bytes(view[o : o + n]) for o, n in kept), record


def check_parts(
    parameter_sets: bytes | bytearray | memoryview,
    ndus: Mapping[str, bytes | bytearray | memoryview],
    *,
    complete: bool = True,
) -> bool:
    """Verify parameter sets and data units for embedding against their parts record.

    Returns False when the parameter sets carry no record (nothing to verify). With
    `complete`, the data units must be all those the record covers (and the digest is checked);
    otherwise each must merely be one of them.

    Raises:
        BitstreamError: a damaged record or parameter unit, a data unit the record does not
            cover (named by tensor), or missing data units.
    """
    plain, record = split_record(parameter_sets)
    if record is None:
        return False
    head_view, head_frames = _frames_of(plain)
    expected = Counter(record.crcs[len(head_frames) :])
    crcs: list[int] = []
    for key, data in ndus.items():
        crc = crc_of(data)
        if expected[crc] <= 0:
            raise BitstreamError(
                f"its data unit fails its integrity check (CRC-32 {crc:08x} is not in the integrity record): "
                "it is damaged",
                tensor=key,
            )
        expected[crc] -= 1
        crcs.append(crc)
    if not complete:
        return True
    missing = sum(expected.values())
    if missing:
        raise BitstreamError(
            f"the integrity record covers {len(record.crcs) - len(head_frames)} data units; {missing} of them "
            "are missing"
        )
    head = [head_view[o : o + n] for o, n in head_frames]
    units: list[memoryview | bytes] = [*head, *(memoryview(d).cast("B") for d in ndus.values())]
    all_crcs = list(record.crcs[: len(head)]) + crcs
    if _digest(units, all_crcs, [_type_of_unit(u) for u in units]) != record.digest:
        raise BitstreamError(
            "the data digest (SHA-256) does not match the integrity record, though every unit's CRC-32 does: "
            "the parts are damaged"
        )
    return True


def strip_record(data: bytes | bytearray | memoryview) -> bytes:
    """A bitstream (or parameter sets) without its integrity record, exactly as NNCodec lays it out.

    Data without a record is returned unchanged. Nothing is verified.
    """
    view = memoryview(data).cast("B")
    frames, _ = scan_frames(view)
    if len(frames) <= RECORD_INDEX or not has_magic(view, frames[RECORD_INDEX]):
        return bytes(view)
    offset, size = frames[RECORD_INDEX]
    return bytes(view[:offset]) + bytes(view[offset + size :])


def no_start_unit(source: str, *, named_nnr: bool) -> NNRConvError:
    """The error for a file without NNR start unit: damage when its name says NNR (exit 4), else
    simply another format (exit 3)."""
    if named_nnr:
        error = BitstreamError("no NNR start unit: the bitstream is damaged (or not NNR)", unit_index=0, byte_offset=0)
        error.args = (f"{source}: {error}",)
        return error
    return FormatError(f"{source}: not an NNR bitstream (no NNR start unit at byte offset 0)")
