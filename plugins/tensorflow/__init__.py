# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The TensorFlow format plugin: frozen graphs and SavedModels in and out of NNR (topology format 4).

This module is what the ``nnrconv`` entry point loads, so it must import without TensorFlow:
only `nnrconv_tensorflow._format` is imported here, and it defers every TensorFlow import to the
methods that need it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nnrconv.core import hookimpl
from nnrconv_tensorflow._format import TensorFlowFormat

__all__ = ["TensorFlowFormat", "register_formats"]


@hookimpl
def register_formats(register: Callable[[Any], None]) -> None:
    """Register the single TensorFlow format instance."""
    register(TensorFlowFormat())
