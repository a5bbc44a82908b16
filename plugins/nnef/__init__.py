# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The NNEF format plugin: NNEF model folders and `.tgz` archives in and out of NNR (topology format 1).

It also converts models between formats through nnef-tools (`convert_model`): ONNX, TensorFlow
and TFLite to NNEF, and NNEF to ONNX. TFLite files are read by the TensorFlow format (topology
code 4, kind `tflite`); the hook sees them as `tensorflow` and takes nnef-tools' TFLite route.

This module is what the ``nnrconv`` entry point loads, so it must import without ``nnef`` or
``nnef_tools`` installed: only `nnrconv_nnef._format` is imported
here, and it defers every framework import to the methods that need it; so does the hook.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from nnrconv.core import hookimpl
from nnrconv_nnef._format import NnefFormat

__all__ = ["NnefFormat", "convert_model", "register_formats"]


@hookimpl
def register_formats(register: Callable[[Any], None]) -> None:
    """Register the NNEF format."""
    register(NnefFormat())


@hookimpl
def convert_model(
    source: Path,
    source_format: str,
    target_format: str,
    workdir: Path,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> Path | None:
    """Convert ONNX, TensorFlow or TFLite to NNEF, or NNEF to ONNX, with nnef-tools; None for other pairs."""
    from nnrconv_nnef import _convert

    return _convert.convert_model(source, source_format, target_format, workdir, input_shapes)
