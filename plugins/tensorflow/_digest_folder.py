# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The container digest of a `*.nnr_savedmodel` folder: every file, and which files there are.

Carriage: the file `nnr/container_digest` of the folder (next to `nnr/parameter_sets` and
`nnr/coded.json`; TensorFlow ignores files it does not know), three parts in text:

    nnrconv-container/1 sha256:HEX crc:N:S:B85      the text of `nnrconv.core.seal_digest`
    files CRC32 CHUNK                               CRC-32 (hex) of the lines below, chunk size
    [size, "relative/path"]                         one JSON line per file, sorted by path

Regions: the file list (those JSON lines), then every file of the folder in that order cut into
chunks of CHUNK bytes (a file of any size, the NNR units in the checkpoint's data file, the
checkpoint index, `saved_model.pb`, `fingerprint.pb`, `nnr/coded.json`, assets), each named by
its path with the chunk's byte offset. The list is compared first, so a file added, removed or
resized is named as such; then the digest names the first damaged chunk. Files are mapped, not
read, so a checkpoint of any size costs no memory.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import zlib
from pathlib import Path

from nnrconv.core import BitstreamError, FormatError, Region, seal_digest
from nnrconv_tensorflow import _digest_span

__all__ = ["FILE", "check", "seal"]

FILE = "nnr/container_digest"
_HEADER = "files"
_MIN_CHUNK = 1024
_MAX_CHUNKS = 1 << 16


def _files(folder: Path) -> dict[str, Path]:
    """Relative path -> file, every regular file under `folder` but the digest, sorted."""
    found = {}
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in names:
            path = Path(root, name)
            relative = path.relative_to(folder).as_posix()
            if relative != FILE:
                found[relative] = path
    return dict(sorted(found.items()))


def _listing(sizes: dict[str, int]) -> bytes:
    return "".join(json.dumps([size, name]) + "\n" for name, size in sizes.items()).encode("utf-8")


def _map(path: Path) -> bytes | memoryview:
    """The file mapped read-only (unmapped when the last region over it is dropped)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return b""
        return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))


def _regions(files: dict[str, Path], listing: bytes, chunk: int) -> list[Region]:
    regions = [Region("the file list", listing)]
    for name, path in files.items():
        data = _map(path)
        for start in range(0, max(1, len(data)), chunk):
            regions.append(Region(name, data[start : start + chunk], start))
    return regions


def _sizes(sizes: dict[str, int], listing: bytes) -> tuple[int, int]:
    """(room for the digest text, chunk size) for files of these sizes: the text within 0.5 % of
    the folder + 1 KB with the listing, at most `_MAX_CHUNKS` chunks (bounded memory)."""
    total = sum(sizes.values())
    budget = max(200, int(total * 0.004) + 900 - len(listing) - 40)
    return budget, max(_MIN_CHUNK, math.ceil(total / min(_MAX_CHUNKS, max(1, (budget - 140) // 5))))


def seal(folder: Path) -> None:
    """Write `nnr/container_digest` for the folder as it is now.

    Raises:
        FormatError: a file cannot be read, or the digest cannot be written.
    """
    try:
        files = _files(folder)
        sizes = {name: path.stat().st_size for name, path in files.items()}
        listing = _listing(sizes)
        budget, chunk = _sizes(sizes, listing)
        text = seal_digest(_regions(files, listing, chunk), budget)
        target = folder / FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(text.encode("ascii") + b"\n" + _header(listing, chunk) + b"\n" + listing)
    except OSError as exc:
        raise FormatError(f"{folder}: cannot write the container digest: {exc.strerror}") from exc


def _header(listing: bytes, chunk: int) -> bytes:
    return f"{_HEADER} {zlib.crc32(listing):08x} {chunk}".encode("ascii")


def _parse(content: bytes, source: str) -> tuple[str, int, bytes, dict[str, int]]:
    """(digest text, chunk size, listing bytes, size by path) of a digest file.

    Raises:
        BitstreamError: the file is not one nnrconv wrote, or its listing fails its CRC.
    """
    damaged = BitstreamError(f"{source}: {FILE} is damaged")
    try:
        text, header, listing = content.split(b"\n", 2)
        sizes = {}
        for line in listing.decode("utf-8").splitlines():
            size, name = json.loads(line)
            sizes[str(name)] = int(size)
        chunk = _sizes(sizes, listing)[1]
        if header != _header(listing, chunk):  # exactly as written: no lenient parse, no other chunk size
            raise damaged
        return text.decode("ascii"), chunk, listing, sizes
    except (ValueError, TypeError, UnicodeDecodeError):
        raise damaged from None


def check(folder: Path) -> bool:
    """Verify the folder against `nnr/container_digest`; True when verified, False when it has none.

    Raises:
        BitstreamError: a file is missing, added or resized, a file's chunk differs (named with
            its byte offset), or the digest file is damaged.
    """
    target, source = folder / FILE, str(folder)
    if not target.is_file():
        return False
    try:
        text, chunk, listing, sizes = _parse(target.read_bytes(), source)
        files = _files(folder)
        missing = sorted(set(sizes) - set(files))
        if missing:
            raise BitstreamError(f"{source}: file {missing[0]!r} is missing (the container digest lists it)")
        added = sorted(set(files) - set(sizes))
        if added:
            raise BitstreamError(f"{source}: file {added[0]!r} is not in the container digest (added after writing)")
        for name, path in files.items():
            if path.stat().st_size != sizes[name]:
                raise BitstreamError(
                    f"{source}: file {name!r} has {path.stat().st_size} bytes, the container digest "
                    f"recorded {sizes[name]}"
                )
        _digest_span.check_text(text, _regions(files, listing, chunk), source)
    except OSError as exc:
        raise BitstreamError(f"{source}: cannot read a file the container digest covers: {exc}") from None
    return True
