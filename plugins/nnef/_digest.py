# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The container digest of a `*.nnr.nnef` folder or `.nnr.tgz`: every file of the model.

Carriage: a file `graph.nnr.digest` beside `graph.nnr` (NNEF readers read `graph.nnef`,
`graph.quant` and the `.dat` files the graph names, and ignore any other file). It is ASCII text
of two lines:

1. the text of `nnrconv.core.seal_digest` (`nnrconv-container/1 sha256:… crc:…`);
2. `{"format":"nnrconv-nnef-files/1","files":N,"gzip":"<hex of the .tgz's first 10 bytes>"|null}`:
   how many other files the folder holds and, in a `.tgz`, its gzip header.

Regions: line 2, the folder's file list (every other file's size and `/`-separated path
relative to the folder of `graph.nnef`, sorted; not stored, rebuilt from the folder), then every
file in 4 KiB chunks (larger for big models, see `chunk_size`) named by path and byte offset:
`graph.nnef`, `graph.quant`, `graph.nnr`, every `.dat` header and payload (NNR data units
included, so a flip anywhere is named by file and offset before the units are parsed). A file
added, removed, renamed or resized changes the count or the list and is refused. In a `.tgz`
the gzip trailer's CRC-32 covers the tar stream (member names and headers included; the stream
is read to its end), line 2 records the gzip header, which no CRC covers (modification time,
flags, OS byte), and the header's extra field holds the compressed stream's SHA-256 (`_gzip`).
A sealed `.tgz` unpacked by hand into a folder still verifies (the gzip header is then not
compared). The names are not stored, so the cost stays within 0.5 % + 1 KB.
"""

from __future__ import annotations

import fnmatch
import json
import mmap
import os
from pathlib import Path
from typing import Any, NamedTuple

from nnrconv.core import BitstreamError, Region, check_digest, seal_digest
from nnrconv.core._digest_parts import chunk_size, chunks, digest_budget

__all__ = ["DIGEST_FILE", "GZIP_HEADER_SIZE", "GzipHead", "check", "listing", "seal"]

DIGEST_FILE = "graph.nnr.digest"
GZIP_HEADER_SIZE = 10
_FORMAT = "nnrconv-nnef-files/1"
_MODEL_FILES = ("graph.nnef", "graph.quant", "graph.nnr")
_FEXTRA = 0x04


def listing(root: Path) -> dict[str, int]:
    """Every file under `root` but the digest (relative `/` path -> size), sorted by path."""
    found: dict[str, int] = {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in files:
            full = Path(folder) / name
            relative = full.relative_to(root).as_posix()
            if relative != DIGEST_FILE:
                found[relative] = full.lstat().st_size
    return dict(sorted(found.items()))


def _content(path: Path) -> bytes | memoryview:
    """The file's bytes, memory-mapped (read-only) when not empty."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return b""
        return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))


def _regions(root: Path, header: bytes, header_offset: int, files: dict[str, int]) -> list[Region]:
    """Line 2 of the digest file, the folder's file list (names and sizes), then every file."""
    names = "".join(f"{size} {name}\n" for name, size in files.items()).encode("utf-8", "surrogateescape")
    contents = {name: _content(root / name) for name in files}
    size = chunk_size(len(names) + sum(len(c) for c in contents.values()))
    regions = [
        Region(f"{DIGEST_FILE} (line 2)", header, header_offset),
        Region("the folder's file list (names and sizes)", names),
    ]
    for name, content in contents.items():
        regions += chunks(name, content, size)
    return regions


def seal(root: Path, gzip_header: bytes | None = None) -> None:
    """Write `graph.nnr.digest` into the model folder `root` (the `.tgz`'s gzip header when one)."""
    files = listing(root)
    record = {"format": _FORMAT, "files": len(files), "gzip": gzip_header.hex() if gzip_header else None}
    header = json.dumps(record, separators=(",", ":")).encode("ascii")
    regions = _regions(root, header, 0, files)
    covered = sum(len(r.data) for r in regions)
    seal_line = seal_digest(regions, digest_budget(covered) - 100).encode("ascii")
    (root / DIGEST_FILE).write_bytes(seal_line + b"\n" + header + b"\n")


def _parse(raw: bytes, source: str) -> tuple[str, bytes, dict[str, Any]]:
    where = f"{source}: {DIGEST_FILE}"
    lines = raw.split(b"\n")
    if len(lines) != 3 or lines[2]:
        raise BitstreamError(f"{where}: the container digest is damaged (not two lines)")
    try:
        seal_line = lines[0].decode("ascii")
        record = json.loads(lines[1].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise BitstreamError(f"{where}: the container digest is damaged (its line 2 does not parse)") from None
    ok = (
        isinstance(record, dict)
        and record.get("format") == _FORMAT
        and isinstance(record.get("files"), int)
        and (record.get("gzip") is None or isinstance(record.get("gzip"), str))
    )
    if not ok:
        raise BitstreamError(f"{where}: the container digest is damaged (its line 2 is malformed)")
    return seal_line, lines[1], record


def _unexpected(files: dict[str, int]) -> str:
    """Files no NNEF model written by nnrconv has, to name them in an error."""
    odd = [name for name in files if not fnmatch.fnmatchcase(name, "*.dat") and name not in _MODEL_FILES]
    return f" ({', '.join(odd[:3])} not a file of the model)" if odd else ""


class GzipHead(NamedTuple):
    """What a `.tgz` reader saw of its gzip header: the first 10 bytes, and whether the extra
    field holding the compressed stream's digest (`_gzip`) was there and matched."""

    header: bytes
    sealed: bool


def check(root: Path, source: str, gzip: GzipHead | None = None) -> bool:
    """Verify the model folder `root` against its `graph.nnr.digest`; False when it has none.

    Args:
        root: the folder holding `graph.nnef` (a `.tgz` unpacked).
        source: the model's path, for errors.
        gzip: the gzip header of the `.tgz`, compared with the recorded one.

    Raises:
        BitstreamError: a file differs (named with its byte offset), is missing or unexpected,
            or the digest itself is damaged.
    """
    digest_path = root / DIGEST_FILE
    if not digest_path.is_file():
        return False
    raw = digest_path.read_bytes()
    seal_line, header, record = _parse(raw, source)
    files = listing(root)
    if len(files) != record["files"]:
        raise BitstreamError(
            f"{source}: the folder holds {len(files)} files besides {DIGEST_FILE}, the container digest lists "
            f"{record['files']} (a file added or removed after nnrconv wrote it, or damage){_unexpected(files)}"
        )
    check_digest(seal_line, _regions(root, header, len(seal_line) + 1, files), source)
    recorded = record.get("gzip")
    if gzip is not None and recorded is not None:
        if gzip.header.hex() != recorded:
            raise BitstreamError(f"{source}: the gzip header (byte offsets 0-9) differs from the container digest")
        if bytes.fromhex(recorded)[3] & _FEXTRA and not gzip.sealed:
            raise BitstreamError(f"{source}: the gzip header's extra field (byte offsets 10-15) is damaged")
    return True
