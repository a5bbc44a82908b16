# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The NNEF format plugin: NNEF model folders and `.tgz` archives in and out of NNR (topology format 1).

This module is what the ``nnrconv`` entry point loads, so it must import without ``nnef`` or
``nnef_tools`` installed: only `nnrconv_nnef._format` is imported here, and that module defers
every framework import to the methods that need it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nnrconv.core import hookimpl
from nnrconv_nnef._format import NnefFormat

__all__ = ["NnefFormat", "register_formats"]


@hookimpl
def register_formats(register: Callable[[Any], None]) -> None:
    """Register the single NNEF format instance."""
    register(NnefFormat())
