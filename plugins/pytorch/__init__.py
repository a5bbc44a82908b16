# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The PyTorch format plugin: `.pt2`, TorchScript, state dicts and safetensors in and out of NNR.

This module is what the ``nnrconv`` entry point loads, so it must import without torch: only
`nnrconv_pytorch._format` is imported here, and torch is imported by the submodules its methods
load on demand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nnrconv.core import hookimpl
from nnrconv_pytorch._format import PyTorchFormat

__all__ = ["PyTorchFormat", "register_formats"]


@hookimpl
def register_formats(register: Callable[[Any], None]) -> None:
    """Register the single PyTorch format instance."""
    register(PyTorchFormat())
