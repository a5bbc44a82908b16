# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Give freed heap memory back to the operating system before a big allocation.

glibc keeps memory freed inside its heaps (per-thread arenas included) for reuse, and raises its
mmap threshold as large blocks are freed, so temporaries of a few MB (a QP search on a sample of
rows, say) stay in the process's resident set after they are freed. Where a tensor-sized
allocation follows, that retained memory adds to the peak; `trim()` returns it first. A no-op
where the C library has no ``malloc_trim`` (musl, macOS, Windows).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

__all__ = ["trim"]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        function = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


def trim() -> None:
    """Release the free memory of every malloc arena (cheap: it walks the free lists once)."""
    function = _malloc_trim()
    if function is not None:
        function(0)
