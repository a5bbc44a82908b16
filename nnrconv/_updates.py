# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Base models for incremental updates, as the API takes them: one NNR file, or a chain of files
(the full model, then updates in the order they were made).

Kept out of `_api` so that the conversion code only asks for "the base these paths decode to".
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nnrconv import nnc

__all__ = ["BasePaths", "ReceivedPart", "base_paths", "applicable_part", "read_base_files", "received_part"]

BasePaths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
"""One base file, or a chain: the full model first, then each update in order."""


def base_paths(base: BasePaths | None) -> tuple[Path, ...]:
    """The files of a base argument, in chain order (empty for None)."""
    if base is None:
        return ()
    if isinstance(base, (str, os.PathLike)):
        return (Path(base),)
    paths = tuple(Path(p) for p in base)
    if not paths:
        raise ValueError("an empty base chain; give the full base model at least")
    return paths


def read_base_files(base: BasePaths, *, jobs: int | None = None, parent_ref: nnc.ParentRef = "sha256") -> nnc.BaseModel:
    """Decode a base file or chain into the model the next update is coded against or applied to.

    Raises:
        FormatError: a file is missing or unreadable.
        BaseMismatchError: the chain does not fit (it starts with an update, a later file is a
            full model, or an update was made against another model); one line naming the file
            and the first tensor at fault.
    """
    from nnrconv._api import _read_bitstream, _require_input

    links = []
    for path in base_paths(base):
        _require_input(path)
        links.append((_read_bitstream(path), str(path)))
    return nnc.read_chain(links, jobs=jobs, parent_ref=parent_ref)


@dataclass(frozen=True, slots=True)
class ReceivedPart:
    """The complete units at the start of a (possibly cut) bitstream.

    Attributes:
        data: the bytes of the complete units.
        units: how many top-level units are complete.
        dropped: bytes after them (a unit cut short).
    """

    data: bytes
    units: int
    dropped: int


def received_part(data: bytes) -> ReceivedPart:
    """Keep the complete units of a bitstream cut short in transmission.

    An update's data units come most important first (`nnc.importance_order`), and each one
    applies on its own, so the complete ones can be applied and the base kept for the rest.
    Only the unit size fields are read here; the units themselves are parsed and checked by the
    decoder as usual (a size field that does not fit ends the received part).
    """
    offset = 0
    units = 0
    while offset + 2 <= len(data):
        first = int.from_bytes(data[offset : offset + 2], "big")
        if first & 0x8000:
            if offset + 4 > len(data):
                break
            size = int.from_bytes(data[offset : offset + 4], "big") & 0x7FFFFFFF
        else:
            size = first
        if size < 3 or offset + size > len(data):
            break
        offset += size
        units += 1
    return ReceivedPart(bytes(data[:offset]), units, len(data) - offset)


def applicable_part(data: bytes, source: str) -> bytes:
    """The complete units of a cut update, provided its parameter sets and its topology (or a
    first data unit, for an update without topology) arrived; else nothing can be applied.

    Raises:
        BitstreamError: the cut comes before that (exit code 4).
    """
    from nnrconv.core import BitstreamError
    from nnrconv.nnc._framing import with_source

    part = received_part(data)
    if part.data and not part.dropped:
        return part.data
    units = [p.unit for p in nnc.read_units(part.data, source)] if part.units else []
    kinds = {type(unit) for unit in units if not _is_integrity_record(unit)}
    if nnc.ModelParameterSet not in kinds or not kinds & {nnc.TopologyUnit, nnc.CompressedDataUnit}:
        cut = BitstreamError(
            f"the update is cut at byte {len(part.data)}, before its topology or first data unit; nothing to apply",
            unit_index=part.units,
            byte_offset=len(part.data),
        )
        raise with_source(cut, source)
    return part.data


def _is_integrity_record(unit: object) -> bool:
    """The integrity record travels as a topology unit too (`nnc._integrity`); it is no topology."""
    from nnrconv.nnc._integrity import MAGIC

    return isinstance(unit, nnc.TopologyUnit) and bytes(unit.topology_data).startswith(MAGIC)
