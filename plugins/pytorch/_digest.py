# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The container digest of a coded PyTorch archive (`*.nnr.pt`, `*.nnr.pt2`): every byte of the file.

Carriage: the zip archive comment (the last field of the end-of-central-directory record, which
every zip reader, torch's included, skips): ``org.mpeg.nnr.container_digest `` followed by the
text of `nnrconv.core.seal_digest`.

Regions: every byte of the file before the comment, in 4 KiB chunks (larger for big archives),
named by the members whose local header or data the chunk holds (or "central directory", "end
of central directory") and its byte offset. Member bytes, names, local and
central headers (times, flags, extra-field padding no CRC covers), the comment's length and the
NNR units inside all belong to some chunk, so a flip anywhere is refused before the archive is
parsed. The comment is found from the end of the file by its key or by the digest text's magic,
so one flip cannot hide it: either one damaged is reported, never read as "no digest".
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

from nnrconv.core import BitstreamError, Region, check_digest, seal_digest
from nnrconv.core._digest import MAGIC
from nnrconv.core._digest_parts import DIGEST_KEY, chunk_size, chunks, digest_budget

__all__ = ["check", "has_digest", "seal"]

_KEY = DIGEST_KEY.encode("ascii") + b" "
_MAGIC = MAGIC.encode("ascii") + b" sha256:"
_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22
_MAX_COMMENT = 0xFFFF
_TAIL = _MAX_COMMENT + _EOCD_SIZE


def seal(archive: bytes) -> bytes:
    """`archive` (a zip without comment, as `_archive.write_zip` makes it) with the digest as its comment."""
    if archive[-_EOCD_SIZE : -_EOCD_SIZE + 4] != _EOCD or archive[-2:] != b"\0\0":
        raise ValueError("the archive does not end in an end-of-central-directory record without comment")
    budget = digest_budget(len(archive), _MAX_COMMENT - len(_KEY))
    # The comment's length is covered too: its text has the same length whatever it covers.
    length = len(_KEY) + len(seal_digest(_regions(archive), budget))
    body = archive[:-2] + length.to_bytes(2, "little")
    comment = _KEY + seal_digest(_regions(body), budget).encode("ascii")
    if len(comment) != length:  # cannot happen: the text's length depends only on the region count
        raise ValueError("the container digest changed length while sealing")
    return body + comment


def has_digest(path: Path) -> bool:
    """Whether the end of the file at `path` holds a container digest (or a damaged one)."""
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - _TAIL))
        tail = f.read()
    return _KEY in tail or _MAGIC in tail


def check(data: bytes, source: str) -> bool:
    """Verify the archive `data` against the digest in its comment; False when it has none.

    Raises:
        BitstreamError: a part differs (named, with its byte offset), or the digest is damaged.
    """
    tail_start = max(0, len(data) - _TAIL)
    key_at, magic_at = data.rfind(_KEY, tail_start), data.rfind(_MAGIC, tail_start)
    if key_at < 0 and magic_at < 0:
        return False
    start = key_at if key_at >= 0 else magic_at - len(_KEY)
    if start < 0 or data[start : start + len(_KEY)] != _KEY:
        raise BitstreamError(f"{source}: the container digest in the zip comment is damaged (its key)")
    text = data[start + len(_KEY) :]
    try:
        decoded = text.decode("ascii")
    except UnicodeDecodeError:
        raise BitstreamError(f"{source}: the container digest in the zip comment is damaged") from None
    check_digest(decoded, _regions(memoryview(data)[:start], data), source)
    return True


def _regions(covered: bytes | memoryview, archive: bytes | None = None) -> list[Region]:
    """`covered` in chunks, named after the parts of `archive` (when given: only errors need names)."""
    size = chunk_size(len(covered))
    regions = chunks("archive", covered, size)
    if archive is None:
        return regions
    name = _namer(archive)

    def span(region: Region) -> str:
        assert region.offset is not None
        first, last = name(region.offset), name(region.offset + max(0, len(region.data) - 1))
        return first if first == last else f"{first} … {last}"

    return [Region(span(r), r.data, r.offset) for r in regions]


def _namer(data: bytes) -> Callable[[int], str]:
    """A function naming the archive part at an offset (plain "archive bytes" if it does not parse)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = sorted((info.header_offset, info.filename) for info in archive.infolist())
            directory = archive.start_dir  # type: ignore[attr-defined]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError):
        return lambda offset: "archive bytes"  # e.g. a flipped "version needed" field
    eocd = data.rfind(_EOCD, max(0, len(data) - _TAIL))

    def name(offset: int) -> str:
        if eocd >= 0 and offset >= eocd:
            return "end of central directory"
        if offset >= directory:
            return "central directory"
        owner = next((member for start, member in reversed(members) if start <= offset), None)
        return f"member {owner}" if owner is not None else "archive bytes"

    return name
