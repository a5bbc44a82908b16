# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Safe output: nothing a user owns is overwritten without --force, and a failed run leaves nothing.

A writer produces its files inside a private staging folder beside the target; only when it has
finished are they moved into place. Formats that write several files (ONNX external data, NNEF
folders) are covered by the same mechanism, because everything they wrote is in the staging
folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from nnrconv.core import OutputError

__all__ = ["check_output", "staged_output"]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(target: Path, *, inputs: tuple[Path, ...] = (), force: bool = False) -> None:
    """Refuse an output that is an input, that exists (without force), or whose folder is missing."""
    for source in inputs:
        if _same_file(source, target) or source.resolve() == target.resolve():
            raise OutputError(f"{target}: output is the same as the input; choose another path")
    if target.exists() and not force:
        raise OutputError(f"{target}: output exists; use --force to replace it")
    if not target.parent.is_dir():
        raise OutputError(f"{target}: folder {target.parent} does not exist")


@contextlib.contextmanager
def staged_output(target: Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a path to write `target` to; on success move it (and any sibling files) into place.

    Everything the writer creates next to the yielded path (for instance ONNX external data
    files) is moved beside `target` too. If any of those destinations exists and `force` is not
    set, nothing is moved and OutputError is raised; on any failure the staging folder is removed.
    """
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".nnrconv-tmp", dir=target.parent))
    except OSError as exc:
        raise OutputError(f"{target}: cannot write in {target.parent}: {exc.strerror}") from exc
    try:
        staged = staging / target.name
        yield staged
        produced = sorted(staging.iterdir())
        if staged not in produced:
            raise OutputError(f"{target}: the writer produced no output")
        destinations = [(p, target.parent / p.name) for p in produced]
        clashes = [str(d) for _, d in destinations if d.exists() or d.is_symlink()]
        if clashes and not force:
            raise OutputError(f"{clashes[0]}: output exists; use --force to replace it")
        for source, dest in destinations:
            _replace(source, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _replace(source: Path, dest: Path) -> None:
    """Move `source` over `dest` atomically for files; for folders, swap then delete the old one."""
    if dest.is_dir() and not dest.is_symlink():
        old = dest.with_name(f".{dest.name}.nnrconv-old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
        os.replace(source, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, dest)
