# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Container digests of Keras files (`*.nnr.h5`, `*.nnr.keras`): the whole file but the digest.

NOTE: HDF5 and zip files have no place where appended bytes stay harmless, and which bytes are
structure (object headers, B-trees, zip directories) and which are data is their libraries'
business. So the digest covers every byte of the file except its own text, which sits in a
place the format provides for user data: a fixed-length string attribute `nnr_container_digest`
of the `nnr_parameter_sets` dataset (HDF5), or the archive comment (zip, the last bytes of the
file). Sealing writes a placeholder of the text's exact length there, then overwrites it in
place with the digest of the file with that span zeroed; checking finds the text (by its
magic), zeroes its span the same way and compares. The file is cut into N equal chunks (N is in
the text, chosen so the text stays within 0.5 % of the file + 1 KB), each a region with its
byte offset, named by the zip members it overlaps (HDF5 files are not parsed to name
the dataset: a damaged file is never handed to the HDF5 library).

A single damaged bit cannot hide the text: it is recognised by its magic (`nnrconv-container/1
sha256:`) or by the rest of its form (`<64 hex> crc:N:S:`), and either one damaged is reported.
"""

from __future__ import annotations

import math
import mmap
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from nnrconv.core import BitstreamError, FormatError, Region, check_digest, seal_digest
from nnrconv.core._digest import MAGIC

__all__ = ["check", "check_text", "chunk_count", "is_sealed", "placeholder", "seal"]

_MAGIC_BYTES = MAGIC.encode("ascii") + b" sha256:"
_TEXT = re.compile(re.escape(_MAGIC_BYTES) + rb"[0-9a-f]{64} crc:(\d{1,9}):(\d{1,9}):")
# The rest of the text, disjoint from `_MAGIC_BYTES`: one damaged bit leaves one of them whole.
_TAIL = re.compile(rb"[0-9a-f]{64} crc:\d{1,9}:\d{1,9}:")
_TAIL_ANCHOR = b" crc:"
_COUNT = re.compile(r" crc:(\d{1,12}):")
_UNBOUNDED = 1 << 40
_MAX_CHUNKS = 11_000  # the text stays under 64 KiB: a zip comment's and an HDF5 v1 header message's limit

Namer = Callable[[int, int], str]
"""Byte range [start, end) -> what it falls in (zip members), or "" when unknown."""


def chunk_count(size: int) -> int:
    """How many chunks (one CRC-32 each) a file of about `size` bytes gets within the size limit."""
    return max(1, min(_MAX_CHUNKS, (int(size * 0.004) + 600 - 140) // 5))


def placeholder(count: int) -> bytes:
    """Bytes of exactly the length of the digest text of `count` chunks."""
    return seal_digest([Region("", b"")] * count, _UNBOUNDED).encode("ascii")


def is_sealed(data: bytes | mmap.mmap) -> bool:
    """Whether the bytes hold a digest text, whole or with one part damaged."""
    return data.find(_MAGIC_BYTES) >= 0 or _tail(data) >= 0


def _tail(data: bytes | mmap.mmap) -> int:
    """Where the rest of a digest text (`_TAIL`) starts, or -1 (a literal scan, fast on any size)."""
    at = data.find(_TAIL_ANCHOR, 64)
    while at >= 0:
        if _TAIL.match(data, at - 64):
            return at - 64
        at = data.find(_TAIL_ANCHOR, at + 1)
    return -1


def _span(data: bytes, source: str) -> tuple[int, int, str] | None:
    """(start, end, text) of the digest text in `data`, or None when the file carries none.

    Raises:
        BitstreamError: the text is damaged or not unique.
    """
    start = data.find(_MAGIC_BYTES)
    if start < 0:
        tail = _tail(data)
        if tail < 0:
            return None
        raise BitstreamError(f"{source}: the container digest is damaged (byte offset {tail})")
    if data.find(_MAGIC_BYTES, start + 1) >= 0:
        raise BitstreamError(f"{source}: the file carries more than one container digest")
    match = _TEXT.match(data, start)
    if match is None:
        raise BitstreamError(f"{source}: the container digest is damaged (byte offset {start})")
    count, size = int(match.group(1)), int(match.group(2))
    if not 1 <= count <= _MAX_CHUNKS or size != 1:  # never written: refused before any chunk is made
        raise BitstreamError(f"{source}: the container digest is damaged (it declares {count} chunks)")
    end = match.end() + 5 * count
    return start, min(end, len(data)), data[start:end].decode("ascii", "replace")


def _chunks(data: bytes, span: tuple[int, int], count: int, namer: Namer | None) -> list[Region]:
    """`count` equal chunks of `data`, the bytes of `span` read as zeros."""
    view = memoryview(data)
    step = max(1, math.ceil(len(data) / count))
    regions = []
    for index in range(count):
        start, end = min(index * step, len(data)), min((index + 1) * step, len(data))
        chunk: bytes | memoryview = view[start:end]
        low, high = max(start, span[0]), min(end, span[1])
        if low < high:
            copy = bytearray(chunk)
            copy[low - start : high - start] = bytes(high - low)
            chunk = bytes(copy)
        where = namer(start, end) if namer is not None else ""
        regions.append(Region(f"bytes {start}-{max(start, end - 1)}" + (f" ({where})" if where else ""), chunk, start))
    return regions


def seal(path: Path) -> None:
    """Overwrite the placeholder in the file at `path` with the digest of the rest of the file.

    Raises:
        FormatError: the placeholder is not in the file exactly once, or it cannot be written.
    """
    try:
        data = path.read_bytes()
        start = data.find(_MAGIC_BYTES)
        match = _TEXT.match(data, start) if start >= 0 and data.find(_MAGIC_BYTES, start + 1) < 0 else None
        if match is None:
            raise FormatError(f"{path}: the container digest placeholder is missing or not unique")
        count = int(match.group(1))
        text = placeholder(count)
        end = start + len(text)
        regions = _chunks(data, (start, end), count, None)
        digest = seal_digest(regions, _UNBOUNDED).encode("ascii")
        assert len(digest) == len(text), "the digest text has the placeholder's length by construction"
        with open(path, "r+b") as f:
            f.seek(start)
            f.write(digest)
    except OSError as exc:
        raise FormatError(f"{path}: cannot write: {exc.strerror}") from exc


def check(data: bytes, path: Path, namer: Callable[[], Namer] | None = None) -> bool:
    """Verify the digest of the file `data`; True when verified, False when it carries none.

    Args:
        namer: makes a `Namer` for the error message; called only when a chunk differs.

    Raises:
        BitstreamError: a chunk differs (the first one named, with its byte offset and what
            holds it), or the digest is damaged.
    """
    found = _span(data, str(path))
    if found is None:
        return False
    start, end, text = found
    match = _TEXT.match(data, start)
    assert match is not None
    count = int(match.group(1))
    try:
        check_digest(text, _chunks(data, (start, end), count, None), str(path))
    except BitstreamError:
        if namer is None:
            raise
        check_digest(text, _chunks(data, (start, end), count, namer()), str(path))  # the same error, named
        raise
    return True


def check_text(text: str, regions: Sequence[Region], source: str) -> None:
    """`check_digest`, after making sure the text lists as many regions as there are.

    NOTE: `check_digest` lays out the CRC groups the text declares before it compares their
    number with the regions; a damaged or crafted count would cost memory first.

    Raises:
        BitstreamError: as `check_digest`.
    """
    match = _COUNT.search(text)
    if match is not None and int(match.group(1)) != len(regions):
        raise BitstreamError(
            f"{source}: the container's structure differs from its digest: {len(regions)} parts, the digest "
            f"lists {int(match.group(1))} (damaged or changed after nnrconv wrote it)"
        )
    check_digest(text, regions, source)
