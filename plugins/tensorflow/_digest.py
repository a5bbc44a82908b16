# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Container digests of the TensorFlow family's embedded containers: which carriage, and the status.

NOTE: the NNR units inside a container are checked by the integrity record of its parameter
sets; the rest (graph, checkpoint, Keras configuration, HDF5 and zip structure) by a container
digest (`nnrconv.core.seal_digest`). Each kind stores it where its format allows:

| container | carriage | module |
|---|---|---|
| `*.nnr.pb` | a `Const` node `nnr/container_digest`, the file's first bytes | `_digest_graph` |
| `*.nnr_savedmodel` | the file `nnr/container_digest` (with the file list) | `_digest_folder` |
| `*.nnr.h5` | attribute `nnr_container_digest` of dataset `nnr_parameter_sets` | `_digest_span` |
| `*.nnr.keras` | the zip archive comment | `_digest_span` |

`verify` runs before anything parses the file, so damage is reported as damage (exit 4), never
as "not a GraphDef" or an HDF5 library error. This module imports no framework.
"""

from __future__ import annotations

import io
import mmap
import os
import zipfile
from pathlib import Path

from nnrconv.core import FormatError
from nnrconv_tensorflow import _digest_folder, _digest_graph, _digest_span

__all__ = ["KEY", "UNVERIFIED", "VERIFIED", "status", "verify"]

KEY = "org.mpeg.nnr.container_digest"
VERIFIED = "verified"
UNVERIFIED = "unverified (no container digest)"
_SPAN_HEADS = (b"\x89HDF\r\n\x1a\n", b"PK\x03\x04")
_SPAN_SUFFIXES = (".h5", ".hdf5", ".keras")


def _zip_namer(data: bytes) -> _digest_span.Namer:
    """Names byte ranges of a zip by the members they overlap (a damaged directory names nothing)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            starts = sorted((info.header_offset, info.filename) for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, NotImplementedError):
        starts = []
    if not starts:
        return lambda start, end: ""
    directory = data.find(b"PK\x01\x02", starts[-1][0])
    directory = len(data) if directory < 0 else directory
    ends = [start for start, _ in starts[1:]] + [directory]

    def name(start: int, end: int) -> str:
        members = [member for (low, member), high in zip(starts, ends, strict=True) if low < end and start < high]
        parts = [("zip member " if len(members) == 1 else "zip members ") + ", ".join(members)] if members else []
        return "; ".join(parts + (["zip directory"] if end > directory else []))

    return name


def _holds_digest(path: Path) -> bool:
    """Whether the file holds any trace of a digest, scanned through a mapping (a plain model of
    any size is neither read into memory nor parsed for this)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return False
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return _digest_graph.is_sealed(mapped) or _digest_span.is_sealed(mapped)


def verify(path: Path, folder: Path | None = None) -> bool:
    """Check the container digest of the file `path` (or of the SavedModel `folder`).

    Returns True when verified, False when the container carries no digest.

    Raises:
        BitstreamError: the container differs from its digest, or the digest is damaged.
        FormatError: the file cannot be read.
    """
    if folder is not None:
        return _digest_folder.check(folder)
    try:
        if not _holds_digest(path):
            return False
        data = path.read_bytes()
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: cannot read: {exc}") from exc
    if data.startswith(_SPAN_HEADS) or path.name.lower().endswith(_SPAN_SUFFIXES):
        namer = (lambda: _zip_namer(data)) if data.startswith(b"PK") or path.name.lower().endswith(".keras") else None
        return _digest_span.check(data, path, namer)
    return _digest_graph.check(data, path)


def status(path: Path, folder: Path | None = None) -> str:
    """`VERIFIED` or `UNVERIFIED`, as `verify` finds it (which raises for a damaged container)."""
    return VERIFIED if verify(path, folder) else UNVERIFIED
