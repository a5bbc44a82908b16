# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Base models for incremental updates, as the API takes them: one NNR file, or a chain of files
(the full model, then updates in the order they were made).

Kept out of `_api` so that the conversion code only asks for "the base these paths decode to".
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from nnrconv import nnc

__all__ = ["BasePaths", "base_paths", "read_base_files"]

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
