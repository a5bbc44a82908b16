# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Safe output: nothing a user owns is lost, and a killed run leaves the old output or the new one.

A writer produces its files inside a private staging folder beside the target
(``.NAME.<owner>.<random>.nnrconv-tmp``); only when it has finished are they moved into place.
Formats that write several files (ONNX external data, NNEF folders) are covered by the same
mechanism, because everything they wrote is in the staging folder.

With ``force`` an existing output is replaced only when nothing of value can go with it:

* a regular file (or a symbolic link: the link is replaced, never what it points to) is
  replaced by a file in one atomic rename;
* a folder is replaced only by a folder, only when the target format's plugin recognises it as
  a model it could have written (`FormatPlugin.is_own_output`), and never when it holds an
  input. It is swapped atomically (``renameat2(RENAME_EXCHANGE)`` on Linux) or, where the
  system has no swap, moved into the staging folder first; it is deleted only after the new
  output is in place.

NOTE: the staging folder's name carries its owner (host, boot, pid and the pid's start time), so
a later run can tell a dead run's leftovers from a live run's without reading anything: it
removes them, and puts back a previous output that a kill left moved aside.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

from nnrconv.core import OutputError

__all__ = ["OwnOutput", "check_output", "remove_stale_temporaries", "staged_output"]

OwnOutput = Callable[[Path], bool]
"""Whether an existing folder is a model of the target format that nnrconv could have written
(None where the output format writes files only)."""

_SUFFIX = ".nnrconv-tmp"
_STAGING = re.compile(
    r"^\.(?P<name>.+)\.(?P<host>[0-9a-f]{6})-(?P<boot>[0-9a-f]{6})-(?P<pid>\d+)-(?P<start>\d+)"
    r"\.[a-z0-9_]+" + re.escape(_SUFFIX) + r"$"
)
_NAME_KEPT = 120  # characters of the output's name kept in its staging folder's name
_OUT = "out"  # staging/out/: everything the writer produces
_PREVIOUS = "previous"  # staging/previous/NAME: the old output while it is being replaced


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:6]


@cache
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> int | None:
    """The start time of a process in clock ticks since boot (Linux), 0 where unknown, None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19])
    except FileNotFoundError:
        return None
    except (OSError, IndexError, ValueError):
        return 0


def _owner_tag() -> str:
    pid = os.getpid()
    return f"{_short_hash(socket.gethostname())}-{_short_hash(_boot_id())}-{pid}-{_start_time(pid) or 0}"


def _owner_is_dead(match: re.Match[str]) -> bool:
    """Whether the run that made a staging folder is certainly gone (never guess on another host)."""
    if match["host"] != _short_hash(socket.gethostname()):
        return False
    if match["boot"] != _short_hash(_boot_id()):
        return True  # made before the last reboot
    pid, start = int(match["pid"]), int(match["start"])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        pass  # alive, owned by someone else
    now = _start_time(pid)
    return now is None or (start != 0 and now not in (0, start))  # the pid was reused


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Clean up after runs that were killed while writing into `folder`; return what was handled.

    Only entries named as our staging folders, that are real folders (never a link) and whose
    owner is dead, are touched. An old output that a kill left moved aside (in `previous/`,
    under its own name) is put back when nothing took its place; everything else is deleted.
    """
    handled = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return handled
    for entry in entries:
        match = _STAGING.match(entry.name)
        path = Path(entry.path)
        if match is None or not _is_real_dir(path) or not _owner_is_dead(match):
            continue
        _restore_previous(path, folder)
        shutil.rmtree(path, ignore_errors=True)
        handled.append(path)
    return handled


def _restore_previous(staging: Path, folder: Path) -> None:
    """Put back an old output that was moved aside into `staging` when nothing took its place."""
    with contextlib.suppress(OSError):
        for previous in os.scandir(staging / _PREVIOUS):
            if not os.path.lexists(folder / previous.name):
                os.rename(previous.path, folder / previous.name)


def _inside(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _kind(path: Path) -> str | None:
    """'link', 'folder', 'file' or 'other' for an existing path (links not followed), else None."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OutputError(f"{path}: cannot examine the output: {exc.strerror}") from exc
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISDIR(mode):
        return "folder"
    return "file" if stat.S_ISREG(mode) else "other"


def _refuse_replacing(dest: Path, new_kind: str | None, is_own_output: OwnOutput | None) -> None:
    """Raise OutputError unless `--force` may replace `dest` with an output of `new_kind`.

    `new_kind` is 'file' or 'folder', or None before the writer has run (then only what is
    certain is refused: a folder the format does not recognise as its own).
    """
    kind = _kind(dest)
    if kind is None:
        return
    if kind == "other":
        raise OutputError(f"{dest}: exists and is not a regular file or folder; choose another output")
    if kind == "link" and new_kind == "folder":
        raise OutputError(f"{dest}: is a symbolic link; --force replaces it only by a file; remove it yourself")
    if kind == "file" and new_kind == "folder":
        raise OutputError(f"{dest}: is a file, and this output is a folder; --force does not replace one by the other")
    if kind != "folder":
        return
    if new_kind == "file" or (new_kind is None and is_own_output is None):
        raise OutputError(f"{dest}: is a folder, and this output is a file; --force does not replace one by the other")
    if is_own_output is None or not is_own_output(dest):
        raise OutputError(
            f"{dest}: is a folder that nnrconv did not write (it holds other files, or a model of "
            f"another format); --force replaces only a model folder of the output format"
        )


def check_output(
    target: Path,
    *,
    inputs: tuple[Path, ...] = (),
    force: bool = False,
    is_own_output: OwnOutput | None = None,
) -> None:
    """Refuse, before any work, an output that would modify an input or lose what a user owns.

    Raises:
        OutputError: the output equals an input, holds one or lies inside an input folder; it
            exists and `force` is not set; it is a folder that `force` may not replace (see the
            module docstring); or its folder is missing.
    """
    resolved = target.resolve()
    exists = os.path.lexists(target)
    for source in inputs:
        source_resolved = source.resolve()
        if _same_file(source, target) or source_resolved == resolved:
            raise OutputError(f"{target}: output is the same as the input; choose another path")
        if exists and _inside(source_resolved, resolved):
            raise OutputError(f"{target}: holds the input {source}; choose another output")
        if source.is_dir() and _inside(resolved, source_resolved):
            raise OutputError(f"{target}: lies inside the input folder {source}; inputs are never modified")
    if exists and not force:
        raise OutputError(f"{target}: output exists; use --force to replace it")
    if exists:
        _refuse_replacing(target, None, is_own_output)
    if not target.parent.is_dir():
        raise OutputError(f"{target}: folder {target.parent} does not exist")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


@contextlib.contextmanager
def staged_output(target: Path, *, force: bool = False, is_own_output: OwnOutput | None = None) -> Iterator[Path]:
    """Yield a path to write `target` to; on success move it (and any sibling files) into place.

    Everything the writer creates next to the yielded path (for instance ONNX external data
    files) is moved beside `target` too. If any destination exists and `force` is not set, or
    may not be replaced (see the module docstring), nothing is moved and OutputError is raised.
    On any failure the staging folder is removed; stale ones of killed runs are removed first.
    """
    parent = target.parent
    remove_stale_temporaries(parent)
    try:
        # The name is cut so that the staging folder's name stays within NAME_MAX (255 bytes).
        prefix = f".{target.name[:_NAME_KEPT]}.{_owner_tag()}."
        staging = Path(tempfile.mkdtemp(prefix=prefix, suffix=_SUFFIX, dir=parent))
        (staging / _OUT).mkdir()
        (staging / _PREVIOUS).mkdir()
    except OSError as exc:
        raise OutputError(f"{target}: cannot write in {parent}: {exc.strerror}") from exc
    try:
        staged = staging / _OUT / target.name
        yield staged
        produced = sorted((staging / _OUT).iterdir())
        if staged not in produced:
            raise OutputError(f"{target}: the writer produced no output")
        destinations = [(p, parent / p.name) for p in produced]
        for source, dest in destinations:
            if os.path.lexists(dest) and not force:
                raise OutputError(f"{dest}: output exists; use --force to replace it")
            _refuse_replacing(dest, "folder" if _is_real_dir(source) else "file", is_own_output)
        for source, dest in destinations:
            try:
                _install(source, dest, staging / _PREVIOUS)
            except OSError as exc:
                raise OutputError(f"{dest}: cannot put the output in place: {exc.strerror or exc}") from exc
    finally:
        _restore_previous(staging, parent)  # interrupted between moving the old one aside and installing
        shutil.rmtree(staging, ignore_errors=True)


def _install(source: Path, dest: Path, previous: Path) -> None:
    """Move `source` to `dest`: atomically for files; folders are swapped, the old one kept till then."""
    if not _is_real_dir(dest):
        os.replace(source, dest)  # a file or a link is replaced in one step, never followed
        return
    if _exchange(source, dest):
        return  # the old folder is now at `source`, inside the staging folder
    # No atomic swap here: move the old folder aside inside the staging folder; a kill between
    # the two renames leaves it there, and the next run puts it back (remove_stale_temporaries).
    os.rename(dest, previous / dest.name)
    os.rename(source, dest)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@cache
def _renameat2() -> Callable[..., int] | None:
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    try:
        function = ctypes.CDLL(libc_name, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the system cannot."""
    function = _renameat2()
    if function is None:
        return False
    if function(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))
