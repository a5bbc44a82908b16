# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The neutral intermediate representation, the plugin contract and the error hierarchy."""

import contextlib

from nnrconv.core._digest import Region, check_digest, seal_digest
from nnrconv.core._dtype import DType
from nnrconv.core._embedded import CodedUnit, EmbeddedModel
from nnrconv.core._errors import (
    BaseMismatchError,
    BitstreamError,
    FormatError,
    FrameworkMissingError,
    NNRConvError,
    OutputError,
    PluginError,
    SignatureError,
    UnsupportedError,
    UsageError,
)
from nnrconv.core._format import FormatPlugin, InputSpec, TopologyTensor
from nnrconv.core._graph import Attribute, AttributeType, Graph, Node, ValueInfo
from nnrconv.core._layers import WeightInput
from nnrconv.core._model import Model
from nnrconv.core._narrow import restore_narrow
from nnrconv.core._plugins import FormatRegistry, get_plugin_manager, get_registry
from nnrconv.core._sniff import read_varint
from nnrconv.core._tensor import ArrayTensor, CodedTensor, LazyTensor, MappedTensor, Tensor, TensorRole
from nnrconv.core.hookspecs import hookimpl

__all__ = [
    "ArrayTensor",
    "Attribute",
    "CodedTensor",
    "CodedUnit",
    "EmbeddedModel",
    "AttributeType",
    "BaseMismatchError",
    "BitstreamError",
    "DType",
    "FormatError",
    "FormatPlugin",
    "FormatRegistry",
    "FrameworkMissingError",
    "Graph",
    "InputSpec",
    "LazyTensor",
    "MappedTensor",
    "Model",
    "NNRConvError",
    "Node",
    "OutputError",
    "PluginError",
    "Region",
    "SignatureError",
    "Tensor",
    "TensorRole",
    "TopologyTensor",
    "WeightInput",
    "UnsupportedError",
    "UsageError",
    "ValueInfo",
    "check_digest",
    "get_plugin_manager",
    "get_registry",
    "read_varint",
    "restore_narrow",
    "seal_digest",
    "hookimpl",
]


def _publish() -> None:
    """Show public objects as `nnrconv.core.X` in reprs and docs, whatever module defines them."""
    for name in __all__:
        obj = globals()[name]
        if getattr(obj, "__module__", "").startswith("nnrconv.core.") and name != "hookimpl":
            with contextlib.suppress(AttributeError, TypeError):
                obj.__module__ = __name__


_publish()
