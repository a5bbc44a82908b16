# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The ONNX format plugin: `.onnx` models in and out of NNR (topology storage format 2).

This module is what the ``nnrconv`` entry point loads, so it must import without ``onnx``
installed: only `nnrconv_onnx._format` is imported here, and that module defers every ``onnx``
import to the methods that need it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nnrconv.core import hookimpl
from nnrconv_onnx._format import OnnxFormat
from nnrconv_onnx._session import inference_session

__all__ = ["OnnxFormat", "inference_session", "register_formats"]


@hookimpl
def register_formats(register: Callable[[Any], None]) -> None:
    """Register the single ONNX format instance."""
    register(OnnxFormat())
