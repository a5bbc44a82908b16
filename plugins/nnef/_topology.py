# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The NNEF topology carried in an NNR_TPL unit (topology_storage_format 1, NNR_TPL_NNEF).

Layout::

    topology  := graph_text [ 0x00 sidecar ]
    sidecar   := "nnrconv-nnef 1\\n" record*
    record    := tag:4 bytes   name_length:u32le  name:utf-8   body_length:u64le  body
    tag       := "QUNT" (name empty; body = graph.quant)
               | "HEAD" (name = label; body = the 128-byte .dat header of a carried variable)
               | "DATA" (name = label; body = the whole .dat file of a variable not carried)

`graph_text` is `graph.nnef` byte for byte. NNEF text never contains 0x00, so the first 0x00
ends it. When there is nothing else to carry (no graph.quant, every variable carried in an NDU
with the header nnrconv would write anyway: float32, version 1.0, rank and extents as declared,
reserved words zero), the topology *is* the graph text, and any NNR decoder reading
`topology_data` as a null-terminated string (as NNCodec does) sees plain NNEF. Each NDU's
`topology_elem_id` is the variable's label.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from nnrconv.core import BitstreamError

__all__ = ["SIDECAR_MAGIC", "NnefTopology", "pack_topology", "unpack_topology"]

SIDECAR_MAGIC = b"nnrconv-nnef 1\n"
_QUANT, _HEAD, _DATA = b"QUNT", b"HEAD", b"DATA"
_NAME_LEN = struct.Struct("<I")
_BODY_LEN = struct.Struct("<Q")


@dataclass(slots=True)
class NnefTopology:
    """The parts of a carried NNEF model other than the NDU payloads."""

    graph_text: bytes
    quant_text: bytes | None = None
    headers: dict[str, bytes] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)


def pack_topology(topology: NnefTopology) -> bytes:
    """Serialise; the result is exactly `graph_text` when nothing else needs carrying.

    Raises:
        ValueError: the graph text contains 0x00.
    """
    if b"\0" in topology.graph_text:
        raise ValueError("graph.nnef contains a NUL byte; it is not NNEF text")
    records: list[bytes] = []
    if topology.quant_text is not None:
        records.append(_record(_QUANT, "", topology.quant_text))
    records += [_record(_HEAD, label, body) for label, body in topology.headers.items()]
    records += [_record(_DATA, label, body) for label, body in topology.files.items()]
    if not records:
        return topology.graph_text
    return b"".join([topology.graph_text, b"\0", SIDECAR_MAGIC, *records])


def _record(tag: bytes, name: str, body: bytes) -> bytes:
    encoded = name.encode("utf-8")
    return b"".join([tag, _NAME_LEN.pack(len(encoded)), encoded, _BODY_LEN.pack(len(body)), body])


def unpack_topology(data: bytes) -> NnefTopology:
    """Parse what `pack_topology` wrote; every length is checked against the bytes left.

    Raises:
        BitstreamError: the sidecar is malformed (bad magic, truncated record, unknown tag,
            repeated label); the message gives the byte offset in the topology.
    """
    end = data.find(b"\0")
    if end < 0:
        return NnefTopology(bytes(data))
    result = NnefTopology(bytes(data[:end]))
    pos = end + 1
    if data[pos : pos + len(SIDECAR_MAGIC)] != SIDECAR_MAGIC:
        raise BitstreamError(f"NNEF topology: unknown data after the graph text at byte {pos}")
    pos += len(SIDECAR_MAGIC)
    while pos < len(data):
        start = pos
        tag = bytes(data[pos : pos + 4])
        pos = _need(data, pos + 4, _NAME_LEN.size, start)
        (name_length,) = _NAME_LEN.unpack_from(data, pos)
        pos = _need(data, pos + _NAME_LEN.size, name_length, start)
        try:
            name = bytes(data[pos : pos + name_length]).decode("utf-8")
        except UnicodeDecodeError:
            raise BitstreamError(f"NNEF topology: record at byte {start} has a name that is not UTF-8") from None
        pos = _need(data, pos + name_length, _BODY_LEN.size, start)
        (body_length,) = _BODY_LEN.unpack_from(data, pos)
        pos = _need(data, pos + _BODY_LEN.size, body_length, start)
        body = bytes(data[pos : pos + body_length])
        pos += body_length
        if tag == _QUANT and result.quant_text is None and not name:
            result.quant_text = body
        elif tag in (_HEAD, _DATA) and name not in result.headers and name not in result.files:
            (result.headers if tag == _HEAD else result.files)[name] = body
        else:
            raise BitstreamError(f"NNEF topology: unexpected or repeated record {tag!r} {name!r} at byte {start}")
    return result


def _need(data: bytes, pos: int, count: int, start: int) -> int:
    """`pos`, after checking that `count` bytes follow it."""
    if pos + count > len(data):
        raise BitstreamError(f"NNEF topology: record at byte {start} is truncated")
    return pos
