# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The TensorFlow topology container: a small archive of named blobs inside NNR_TPL (format 4).

NOTE: a TensorFlow model is either one file (a frozen GraphDef) or a folder (a SavedModel with
its `variables/` checkpoint, assets and fingerprint). One NNR topology unit must hold either, so
the topology bytes are this archive, chosen over tar for being trivially specified and parsed
without trusting any path or size it declares:

    magic   8 bytes  b"NNRTF\\x00\\x01\\x00"  ("NNRTF", NUL, container version 1, reserved 0)
    count   u32 little-endian: number of entries
    entry   repeated `count` times:
              name_length u16 LE, name (UTF-8, no NUL, no "..", not absolute)
              data_length u64 LE, data

Names starting with ":" are control entries; the others are files of a SavedModel folder,
relative to its root. Entries in use (see README.md):

    :kind        b"graphdef" or b"savedmodel"
    :graph       (graphdef) the GraphDef, carried constants emptied (dtype and shape kept)
    :carried     (graphdef) JSON list of the emptied constants' keys
    :manifest    (savedmodel) JSON: the checkpoint prefix and every checkpoint entry's key,
                 TensorFlow dtype code, shape and whether an NNR data unit carries its values
    :value/<key> (savedmodel) a TensorProto holding a checkpoint entry not carried by NNR
    <path>       (savedmodel) a file of the folder: saved_model.pb, fingerprint.pb, assets/...

This module imports nothing from TensorFlow, so integration mode 2 can reuse it.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import PurePosixPath

from nnrconv.core import BitstreamError

__all__ = ["MAGIC", "is_container", "pack", "unpack", "valid_member_name"]

MAGIC = b"NNRTF\x00\x01\x00"
_MAX_ENTRIES = 1 << 20


def is_container(data: bytes) -> bool:
    """Whether `data` starts with the container magic."""
    return data[: len(MAGIC)] == MAGIC


def valid_member_name(name: str) -> bool:
    """A control name (":...") or a relative POSIX path that stays inside its folder."""
    if not name or "\x00" in name or "\\" in name:
        return False
    if name.startswith(":"):
        return True
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts and "." not in path.parts


def pack(entries: Mapping[str, bytes]) -> bytes:
    """Serialize named blobs in the given order.

    Raises:
        ValueError: a name is not a valid member name or longer than 65535 bytes.
    """
    parts = [MAGIC, struct.pack("<I", len(entries))]
    for name, data in entries.items():
        raw = name.encode("utf-8")
        if not valid_member_name(name) or len(raw) > 0xFFFF:
            raise ValueError(f"invalid container entry name {name!r}")
        parts += [struct.pack("<H", len(raw)), raw, struct.pack("<Q", len(data)), bytes(data)]
    return b"".join(parts)


def unpack(data: bytes) -> dict[str, bytes]:
    """Parse a container; every length is checked against the bytes left before slicing.

    Raises:
        BitstreamError: bad magic, a truncated entry, a bad or duplicate name, or trailing bytes.
    """
    view = memoryview(data)
    if not is_container(data):
        raise BitstreamError("the TensorFlow topology does not start with the NNRTF container magic")
    pos = len(MAGIC)

    def take(n: int, what: str) -> memoryview:
        nonlocal pos
        if n > len(view) - pos:
            raise BitstreamError(f"TensorFlow topology container truncated in {what} at byte {pos}")
        chunk = view[pos : pos + n]
        pos += n
        return chunk

    (count,) = struct.unpack("<I", take(4, "the entry count"))
    if count > _MAX_ENTRIES:
        raise BitstreamError(f"TensorFlow topology container declares {count} entries (limit {_MAX_ENTRIES})")
    entries: dict[str, bytes] = {}
    for index in range(count):
        (name_length,) = struct.unpack("<H", take(2, f"entry {index}"))
        try:
            name = bytes(take(name_length, f"entry {index}")).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BitstreamError(f"TensorFlow topology container entry {index} has a non-UTF-8 name") from exc
        if not valid_member_name(name) or name in entries:
            raise BitstreamError(f"TensorFlow topology container entry {index} has a bad or duplicate name {name!r}")
        (length,) = struct.unpack("<Q", take(8, f"entry {name!r}"))
        entries[name] = bytes(take(length, f"entry {name!r}"))
    if pos != len(view):
        raise BitstreamError(f"TensorFlow topology container has {len(view) - pos} trailing bytes")
    return entries
