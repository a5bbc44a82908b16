# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The container digest of a `*.nnr.nnef` folder or `.nnr.tgz`: every file of the model.

Carriage: a file `graph.nnr.digest` beside `graph.nnr` (NNEF readers read `graph.nnef`,
`graph.quant` and the `.dat` files the graph names, and ignore any other file). It is ASCII text
of two lines:

1. the text of `nnrconv.core.seal_digest` (`nnrconv-container/1 sha256:… crc:…`);
2. a JSON object `{"format": "nnrconv-nnef-files/1", "files": [[path, size], ...],
   "gzip": "<hex of the first 10 bytes of the .tgz>" | null}` listing every other file of the
   folder (sorted, `/`-separated, relative to the folder holding `graph.nnef`).

Regions: line 2 itself, then each listed file in 4 KiB chunks (larger for big models, see
`chunk_size`) named by path and byte offset: `graph.nnef`, `graph.quant`, `graph.nnr`, every
`.dat` header and payload (NNR data units included, so a flip anywhere is named by file and
offset before the units are parsed). A file not listed, or listed but missing, is refused. In a
`.tgz` the gzip trailer's CRC-32 covers the tar stream (member names and headers included; it is
read to its end), and line 2 records the gzip header, which no CRC covers (modification time,
flags, OS byte). A sealed `.tgz` unpacked by hand into a folder still verifies (the gzip header
is then not compared).
"""

from __future__ import annotations

import json
import mmap
import os
from pathlib import Path
from typing import Any

from nnrconv.core import BitstreamError, Region, check_digest, seal_digest
from nnrconv.core._digest_parts import chunk_size, chunks, digest_budget

__all__ = ["DIGEST_FILE", "GZIP_HEADER_SIZE", "check", "listing", "seal"]

DIGEST_FILE = "graph.nnr.digest"
GZIP_HEADER_SIZE = 10
_FORMAT = "nnrconv-nnef-files/1"


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


def _regions(root: Path, listing_text: bytes, names: list[str], listing_offset: int) -> list[Region]:
    contents = {name: _content(root / name) for name in names}
    size = chunk_size(len(listing_text) + sum(len(c) for c in contents.values()))
    regions = [Region(f"{DIGEST_FILE} (its file list)", listing_text, listing_offset)]
    for name, content in contents.items():
        regions += chunks(name, content, size)
    return regions


def seal(root: Path, gzip_header: bytes | None = None) -> None:
    """Write `graph.nnr.digest` into the model folder `root` (the `.tgz`'s gzip header when one)."""
    files = listing(root)
    record = {"format": _FORMAT, "files": [[name, size] for name, size in files.items()]}
    record["gzip"] = gzip_header.hex() if gzip_header is not None else None
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    regions = _regions(root, text, list(files), 0)
    covered = sum(len(r.data) for r in regions)
    seal_line = seal_digest(regions, digest_budget(covered)).encode("ascii")
    (root / DIGEST_FILE).write_bytes(seal_line + b"\n" + text + b"\n")


def _parse(raw: bytes, source: str) -> tuple[str, bytes, dict[str, Any]]:
    where = f"{source}: {DIGEST_FILE}"
    lines = raw.split(b"\n")
    if len(lines) != 3 or lines[2]:
        raise BitstreamError(f"{where}: the container digest is damaged (not two lines)")
    try:
        seal_line = lines[0].decode("ascii")
        record = json.loads(lines[1].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise BitstreamError(f"{where}: the container digest is damaged (its file list does not parse)") from None
    files = record.get("files") if isinstance(record, dict) else None
    ok = (
        isinstance(files, list)
        and record.get("format") == _FORMAT
        and all(
            isinstance(f, list) and len(f) == 2 and isinstance(f[0], str) and isinstance(f[1], int) for f in files
        )
        and (record.get("gzip") is None or isinstance(record.get("gzip"), str))
    )
    if not ok:
        raise BitstreamError(f"{where}: the container digest is damaged (its file list is malformed)")
    return seal_line, lines[1], record


def check(root: Path, source: str, gzip_header: bytes | None = None) -> bool:
    """Verify the model folder `root` against its `graph.nnr.digest`; False when it has none.

    Args:
        root: the folder holding `graph.nnef` (a `.tgz` unpacked).
        source: the model's path, for errors.
        gzip_header: the first bytes of the `.tgz`, compared with the recorded ones.

    Raises:
        BitstreamError: a file differs (named with its byte offset), is missing or unexpected,
            or the digest itself is damaged.
    """
    digest_path = root / DIGEST_FILE
    if not digest_path.is_file():
        return False
    raw = digest_path.read_bytes()
    seal_line, listing_text, record = _parse(raw, source)
    listed = {name: size for name, size in record["files"]}
    present = listing(root)
    for name in present:
        if name not in listed:
            raise BitstreamError(
                f"{source}: {name} is not in the container digest (a file added after nnrconv wrote it, or damage)"
            )
    for name, size in listed.items():
        if name not in present:
            raise BitstreamError(f"{source}: {name}, listed in the container digest, is missing")
        if present[name] != size:
            raise BitstreamError(
                f"{source}: {name} has {present[name]} bytes, the container digest lists {size} "
                "(damaged or changed after nnrconv wrote it)"
            )
    regions = _regions(root, listing_text, list(listed), len(seal_line) + 1)
    check_digest(seal_line, regions, f"{source}")
    recorded = record.get("gzip")
    if gzip_header is not None and recorded is not None and gzip_header.hex() != recorded:
        raise BitstreamError(f"{source}: the gzip header (byte offsets 0-9) differs from the container digest")
    return True

