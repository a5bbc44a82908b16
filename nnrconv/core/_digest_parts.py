# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Helpers for container digests over files and archives (NNEF folders, zip archives).

NOTE: `seal_digest`/`check_digest` (in `_digest`) work on named regions. A region per file or
per member would name the damaged part but not where in it; cutting each into fixed chunks
(`chunks`) gives the byte offset too, at no cost in digest size (`seal_digest` groups regions
to fit its byte budget). The status strings are the plugin-neutral answer of
`FormatPlugin.container_digest_status`, shown by `nnrconv inspect`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from nnrconv.core._digest import Region
from nnrconv.core._errors import BitstreamError

__all__ = ["DIGEST_KEY", "UNVERIFIED", "VERIFIED", "chunk_size", "chunks", "digest_budget", "status_of"]

DIGEST_KEY = "org.mpeg.nnr.container_digest"
"""`Model.metadata` key holding the container digest status of a model read from a container."""
VERIFIED = "verified"
UNVERIFIED = "unverified (no container digest)"

_MIN_CHUNK = 4096
_MAX_CHUNKS = 16384


def chunk_size(total: int) -> int:
    """The chunk size for `total` covered bytes: 4 KiB, doubled until at most 16,384 chunks."""
    size = _MIN_CHUNK
    if total > size * _MAX_CHUNKS:
        size = 1 << math.ceil(math.log2(total / _MAX_CHUNKS))
    return size


def chunks(
    name: str | Callable[[int], str], data: bytes | bytearray | memoryview, size: int, base: int = 0
) -> list[Region]:
    """`data` cut into regions of `size` bytes, each named `name` (or `name(offset)`) at its offset.

    An empty `data` is one empty region, so an empty file still counts as a part.
    """
    view = memoryview(data)
    starts = range(0, len(view), size) if len(view) else range(1)
    return [
        Region(name(base + start) if callable(name) else name, view[start : start + size], base + start)
        for start in starts
    ]


def digest_budget(covered: int, cap: int = 1 << 16) -> int:
    """Bytes the digest text may take: within 0.5 % of the covered bytes + 1 KB with its framing."""
    return min(cap, int(covered * 0.004) + 900)


def status_of(check: Callable[[], bool]) -> str:
    """`VERIFIED`, `UNVERIFIED` (check returned False: no digest) or the one-line error of a damaged container."""
    try:
        return VERIFIED if check() else UNVERIFIED
    except BitstreamError as exc:
        return f"damaged: {exc}"
