# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Import TensorFlow without its C++ start-up notices reaching stderr.

NOTE: TensorFlow 2.21 writes its oneDNN and CPU-feature notices through absl's C++ logging
before absl is initialised, which ignores TF_CPP_MIN_LOG_LEVEL (measured: the notices appear
with every level 0-3), and which ones appear depends on the CPU. nnrconv's errors are one line,
so the import runs with file descriptor 2 pointed at a temporary file; an import that fails
raises as usual (the reason is in the exception). TF_CPP_MIN_LOG_LEVEL (set only when the user
has not) still quiets what TensorFlow logs later, and its Python loggers report errors only.
Every module of this plugin that imports TensorFlow is imported after `import_tensorflow()`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

__all__ = ["import_tensorflow"]


@contextlib.contextmanager
def _stderr_discarded() -> Iterator[None]:
    """Point file descriptor 2 (what C++ code writes to) at a scratch file for the duration."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to protect
        yield
        return
    try:
        with tempfile.TemporaryFile() as scratch:
            sys.stderr.flush()
            os.dup2(scratch.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def import_tensorflow() -> None:
    """Import TensorFlow once, quietly (a no-op when it is already imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return
    with _stderr_discarded():
        import tensorflow  # noqa: F401

    for name in ("tensorflow", "absl", "h5py", "keras"):
        logging.getLogger(name).setLevel(logging.ERROR)
