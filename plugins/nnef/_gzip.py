# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The gzip layer of a sealed `.nnr.tgz`: a digest of the compressed stream in the gzip header.

NOTE: the container digest (`_digest`, inside the tar) covers every byte once decompressed, and
the gzip trailer's CRC-32 the whole tar stream; neither covers the compressed bytes themselves.
Deflate has bits that decode to the same output (padding after the last block, code lengths of
unused symbols): measured, 5 of 1,923 random flips in the PP-OCR classifier's `.tgz` changed
the file but not a byte of the model. So the sealed archive's gzip header carries an extra
field (RFC 1952, FEXTRA) with subfield ``NR``: the SHA-256 of everything after the header
(compressed data and trailer) and a CRC-32 per chunk of it, so damage is refused before the
archive is unpacked and named by its byte offset and the tar member being written there.
gzip, tar and Python read the archive as any other.

Header: ``1f 8b 08 04`` (FLG = FEXTRA), MTIME 0, XFL 2, OS 255, XLEN, then ``N R``, the
subfield length, the SHA-256 (32 bytes), log2 of the chunk size (1 byte) and the CRCs
(big-endian). The first 10 bytes are recorded in the container digest, so the FEXTRA flag
cannot be lost silently; the field itself is checked against the rest of the file.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import tempfile
import zlib
from pathlib import Path
from typing import BinaryIO

from nnrconv.core import BitstreamError

__all__ = ["HEADER", "verify", "write"]

HEADER = bytes.fromhex("1f8b0804") + struct.pack("<I", 0) + bytes([2, 255])
_SUBFIELD = b"NR"
_BLOCK = 1 << 20
_MIN_CHUNK_LOG2 = 12
_MAX_FIELD = 0xFFFF - 4  # XLEN holds the subfield's id and length too
_TAR_BLOCK = 512


def _chunk_log2(size: int) -> int:
    """Chunks of 4 KiB, doubled until the CRCs take at most 0.1 % of the stream (and fit XLEN)."""
    log2 = _MIN_CHUNK_LOG2
    budget = min((_MAX_FIELD - 33) // 4, max(1, int(size * 0.001) // 4))
    while -(-size // (1 << log2)) > budget:
        log2 += 1
    return log2


def _crcs(stream: BinaryIO, log2: int) -> tuple[bytes, list[int]]:
    digest, crcs = hashlib.sha256(), []
    while chunk := stream.read(1 << log2):
        digest.update(chunk)
        crcs.append(zlib.crc32(chunk))
    return digest.digest(), crcs


def write(tar: Path, out: Path) -> None:
    """Compress the tar file `tar` into the gzip file `out`, with the digest in its header."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    crc = size = 0
    with open(tar, "rb") as source, tempfile.TemporaryFile(dir=out.parent) as body:
        while chunk := source.read(_BLOCK):
            crc, size = zlib.crc32(chunk, crc), size + len(chunk)
            body.write(compressor.compress(chunk))
        body.write(compressor.flush())
        body.write(struct.pack("<II", crc, size & 0xFFFFFFFF))
        log2 = _chunk_log2(body.tell())
        body.seek(0)
        sha, crcs = _crcs(body, log2)
        data = sha + bytes([log2]) + struct.pack(f">{len(crcs)}I", *crcs)
        extra = _SUBFIELD + struct.pack("<H", len(data)) + data
        body.seek(0)
        with open(out, "wb") as target:
            target.write(HEADER + struct.pack("<H", len(extra)) + extra)
            shutil.copyfileobj(body, target, _BLOCK)


def verify(path: Path) -> bool:
    """Check the extra field's digest against the rest of the file; False when it has none.

    Raises:
        BitstreamError: the compressed stream differs (the first differing chunk's byte offset
            named, with the tar member being written there), or the field is damaged.
    """
    with open(path, "rb") as f:
        head = f.read(16)
        if len(head) < 16 or head[:3] != HEADER[:3] or not head[3] & 0x04 or head[12:14] != _SUBFIELD:
            return False
        xlen, length = struct.unpack("<H", head[10:12])[0], struct.unpack("<H", head[14:16])[0]
        field = f.read(length)
        count = (length - 33) // 4
        if xlen != length + 4 or len(field) != length or length < 33 or (length - 33) % 4:
            raise BitstreamError(f"{path}: the gzip header's extra field (byte offsets 10-{15 + length}) is damaged")
        start, log2 = 12 + xlen, field[32]
        if not _MIN_CHUNK_LOG2 <= log2 < 48:
            raise BitstreamError(f"{path}: the gzip header's extra field (byte offset 48) is damaged")
        sha, crcs = _crcs(f, log2)
    stored = list(struct.unpack(f">{count}I", field[33:]))
    if sha == field[:32] and crcs == stored:
        return True
    if len(crcs) != len(stored):
        raise BitstreamError(f"{path}: the compressed stream's length differs from the digest in its gzip header")
    bad = next((i for i, (a, b) in enumerate(zip(crcs, stored, strict=True)) if a != b), None)
    if bad is None:
        raise BitstreamError(f"{path}: the SHA-256 in the gzip header (byte offsets 16-47) does not match")
    offset = start + (bad << log2)
    member = _member_at(path, start, offset)
    raise BitstreamError(
        f"{path}: compressed byte offset {offset}{member} differs from the digest in the gzip header "
        "(damaged or changed after nnrconv wrote it)"
    )


def _member_at(path: Path, start: int, offset: int) -> str:
    """`` (in member NAME)``: the tar member the intact stream before `offset` was writing."""
    if offset == start:
        return " (at the start of the tar stream)"
    decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
    pending, pending_start, next_header, name = bytearray(), 0, 0, ""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            left = offset - start
            while left > 0 and (chunk := f.read(min(_BLOCK, left))):
                left -= len(chunk)
                pending += decompressor.decompress(chunk)
                while next_header + _TAR_BLOCK <= pending_start + len(pending):
                    block = pending[next_header - pending_start : next_header - pending_start + _TAR_BLOCK]
                    if not any(block):
                        return f" (after the last member, {name})" if name else ""
                    name = block[:100].rstrip(b"\0").decode("utf-8", "replace")
                    size = int(block[124:136].strip(b"\0 ") or b"0", 8)
                    next_header += _TAR_BLOCK + -(-size // _TAR_BLOCK) * _TAR_BLOCK
                    drop_to = min(next_header, pending_start + len(pending))
                    del pending[: drop_to - pending_start]
                    pending_start = drop_to
    except (OSError, ValueError, zlib.error):
        return ""
    return f" (in member {name})" if name else ""
