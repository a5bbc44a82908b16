# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Container digests: integrity of the part of an embedded container that is not NNR data units.

NOTE: the NNR units inside a `.nnr.onnx` (or another embedded container) are checked against the
integrity record in their parameter sets; the rest of the container (the graph, attributes,
tensors left uncoded, manifests) is not NNR and needs its own check. A plugin splits that rest
into named *regions* (an ONNX top-level field, a graph node, a file of a folder) and stores the
digest text `seal` makes in a place its format allows; reading, `check` recomputes it and names
the first region that differs, so an error says *what* was damaged, not only that something was.

Text: `nnrconv-container/1 sha256:HEX crc:N:S:B85` — the SHA-256 (hex, 64 digits) of every
region in order, each preceded by its length (8 bytes, big-endian), and one CRC-32 per group of
regions (N regions in groups of S consecutive ones, big-endian, base85). A CRC-32
detects every single-bit error and every burst up to 32 bits in its group; the SHA-256 binds
everything with 2**-128. Groups keep the text within `max_bytes` (whatever the region count),
so the cost stays within the size limit (0.5 % + 1 KB) even for graphs of thousands of nodes.
Like the record, a digest proves nothing against someone who recomputes it: signing does.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from nnrconv.core._errors import BitstreamError

__all__ = ["MAGIC", "Region", "check_digest", "seal_digest"]

MAGIC = "nnrconv-container/1"
_TEXT = re.compile(rf"^{re.escape(MAGIC)} sha256:([0-9a-f]{{64}}) crc:(\d+):(\d+):(\S*)$")
_FIXED = len(MAGIC) + 8 + 64 + 5 + 24  # the text without its CRCs, generously


@dataclass(frozen=True, slots=True)
class Region:
    """A named byte range of a container; `offset` (in its file), when known, goes into errors."""

    name: str
    data: bytes | bytearray | memoryview
    offset: int | None = None
    framing: bool = False
    """Only lengths and tags around other regions: named in errors only when nothing else differs."""


def _sha256(regions: Sequence[Region]) -> str:
    digest = hashlib.sha256()
    for region in regions:
        digest.update(struct.pack(">Q", len(region.data)))
        digest.update(region.data)
    return digest.hexdigest()


def _groups(count: int, size: int) -> list[range]:
    return [range(start, min(start + size, count)) for start in range(0, count, max(1, size))]


def _crcs(regions: Sequence[Region], groups: list[range]) -> list[int]:
    result = []
    for group in groups:
        crc = 0
        for i in group:
            crc = zlib.crc32(regions[i].data, crc)
        result.append(crc)
    return result


def seal_digest(regions: Sequence[Region], max_bytes: int = 1 << 16) -> str:
    """The digest text of `regions`, at most about `max_bytes` long (regions grouped to fit)."""
    groups = max(1, min(len(regions), (max_bytes - _FIXED) * 4 // 20))
    size = max(1, math.ceil(len(regions) / groups))
    ranges = _groups(len(regions), size)
    crcs = base64.b85encode(struct.pack(f">{len(ranges)}I", *_crcs(regions, ranges))).decode("ascii")
    return f"{MAGIC} sha256:{_sha256(regions)} crc:{len(regions)}:{size}:{crcs}"


def _describe(regions: Sequence[Region], group: range) -> str:
    first = regions[group.start]
    name = first.name if len(group) == 1 else f"{first.name} … {regions[group.stop - 1].name}"
    return name + ("" if first.offset is None else f" (byte offset {first.offset})")


def check_digest(text: str, regions: Sequence[Region], source: str) -> None:
    """Recompute the digest of `regions` and compare it with `text` (what `seal_digest` wrote).

    Raises:
        BitstreamError: the text is malformed, or a region differs (the first one named, with
            its byte offset), or the regions differ in number.
    """
    match = _TEXT.match(text)
    if match is None:
        raise BitstreamError(f"{source}: the container digest is damaged ({text[:40]!r}…)")
    sha, count, size, packed = match.group(1), int(match.group(2)), int(match.group(3)), match.group(4)
    if count != len(regions) or size < 1:  # before building groups: a damaged count may be huge
        raise BitstreamError(
            f"{source}: the container's structure differs from its digest: {len(regions)} parts, the digest "
            f"lists {count} (damaged or changed after nnrconv wrote it)"
        )
    ranges = _groups(count, size)
    try:
        stored = list(struct.unpack(f">{len(ranges)}I", base64.b85decode(packed)))
    except (ValueError, struct.error):
        raise BitstreamError(f"{source}: the container digest is damaged (its CRC list does not decode)") from None
    differing = [group for group, crc, want in zip(ranges, _crcs(regions, ranges), stored, strict=True) if crc != want]
    same_sha = _sha256(regions) == sha
    if differing and same_sha:  # every part is intact, so the damage is in the CRC list itself
        raise BitstreamError(f"{source}: the container digest is damaged (its CRC list does not match intact content)")
    if differing:
        content = [group for group in differing if not all(regions[i].framing for i in group)]
        raise BitstreamError(
            f"{source}: {_describe(regions, (content or differing)[0])} differs from the container digest "
            "(damaged or changed after nnrconv wrote it)"
        )
    if not same_sha:
        raise BitstreamError(
            f"{source}: the container SHA-256 digest does not match its content (the digest or the content is damaged)"
        )
