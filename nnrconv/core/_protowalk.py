# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Protobuf wire format by raw offsets, without onnx or TensorFlow: for container digests (both plugins).

NOTE: a container digest is checked before anything parses the file (a damaged file must be
refused as damaged, not as "not a GraphDef"), and importing TensorFlow's protobuf classes takes
seconds; so the digest walks the wire format itself. Only what the digest needs: the fields of
one message level with their byte ranges, and the encoding of the fields nnrconv writes.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["Field", "fields", "first_bytes", "length_field", "varint_field"]

Field = tuple[int, int, int, int]
"""(field number, start of the tag, start of the payload, end) of one field occurrence."""


def _varint(data: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ValueError(pos)
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7


def fields(data: memoryview, start: int, end: int) -> Iterator[Field]:
    """The fields of one message level between `start` and `end`.

    Raises:
        ValueError: the bytes are no well-formed message (args[0]: the offset where it breaks).
    """
    pos = start
    while pos < end:
        tag_start = pos
        tag, pos = _varint(data, pos, end)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise ValueError(tag_start)
        if wire == 0:
            _, pos = _varint(data, pos, end)
            payload = pos
        elif wire == 1 or wire == 5:
            payload, pos = pos, pos + (8 if wire == 1 else 4)
        elif wire == 2:
            length, payload = _varint(data, pos, end)
            pos = payload + length
        else:
            raise ValueError(tag_start)
        if pos > end:
            raise ValueError(tag_start)
        yield number, tag_start, payload, pos


def first_bytes(data: memoryview, start: int, end: int, number: int) -> bytes | None:
    """The payload of the first length-delimited field `number` of a message, or None (also when
    the message does not frame)."""
    try:
        for found, _, payload, stop in fields(data, start, end):
            if found == number:
                return bytes(data[payload:stop])
    except ValueError:
        return None
    return None


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def varint_field(number: int, value: int) -> bytes:
    return _encode_varint(number << 3) + _encode_varint(value)


def length_field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload
