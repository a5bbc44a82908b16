# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""ONNX GraphProto → the neutral `Graph` (structure for reports and checks; never written back).

NOTE: the neutral graph is a read-only view. Writing goes through the native ModelProto kept in
`Model.native`, so anything this module does not model (value-info, doc strings, training info)
is still preserved exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import onnx

from nnrconv.core import Attribute, AttributeType, DType, Graph, Node, Tensor, ValueInfo
from nnrconv_onnx._weights import CONSTANT, INITIALIZER, MAIN_SCOPE, node_scope

__all__ = ["TensorFactory", "graph_from_proto", "normalize_domain"]

_A = onnx.AttributeProto
# (scope, kind, name) -> the model's Tensor for that weight site.
SiteTensors = Mapping[tuple[str, str, str], Tensor]
# Builds a Tensor for a TensorProto that is not a weight site (other TENSOR attributes).
TensorFactory = Callable[[onnx.TensorProto], Tensor | None]

_SCALAR: dict[int, tuple[AttributeType, str]] = {
    _A.FLOAT: (AttributeType.FLOAT, "f"),
    _A.INT: (AttributeType.INT, "i"),
    _A.STRING: (AttributeType.STRING, "s"),
    _A.TYPE_PROTO: (AttributeType.TYPE, "tp"),
    _A.SPARSE_TENSOR: (AttributeType.OTHER, "sparse_tensor"),
}
_LISTS: dict[int, tuple[AttributeType, str]] = {
    _A.FLOATS: (AttributeType.FLOATS, "floats"),
    _A.INTS: (AttributeType.INTS, "ints"),
    _A.STRINGS: (AttributeType.STRINGS, "strings"),
    _A.TYPE_PROTOS: (AttributeType.TYPES, "type_protos"),
    _A.SPARSE_TENSORS: (AttributeType.OTHER, "sparse_tensors"),
}


def normalize_domain(domain: str) -> str:
    """ONNX spells the default domain both "" and "ai.onnx"; the IR uses ""."""
    return "" if domain == "ai.onnx" else domain


def _text(value: bytes) -> str | bytes:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value


def _value_info(info: onnx.ValueInfoProto) -> ValueInfo:
    kind = info.type.WhichOneof("value")
    if kind not in ("tensor_type", "sparse_tensor_type"):
        return ValueInfo(info.name)
    tensor_type = getattr(info.type, kind)
    try:
        dtype = DType(tensor_type.elem_type)
    except ValueError:
        dtype = DType.UNDEFINED
    if not tensor_type.HasField("shape"):
        return ValueInfo(info.name, dtype, None)
    dims: list[int | str | None] = []
    for dim in tensor_type.shape.dim:
        which = dim.WhichOneof("value")
        dims.append(dim.dim_value if which == "dim_value" else dim.dim_param if which == "dim_param" else None)
    return ValueInfo(info.name, dtype, tuple(dims))


class _Builder:
    def __init__(self, opsets: Mapping[str, int], sites: SiteTensors, factory: TensorFactory) -> None:
        self.opsets = opsets
        self.sites = sites
        self.factory = factory

    def graph(self, proto: onnx.GraphProto, scope: str) -> Graph:
        initializers = {
            t.name: tensor
            for t in proto.initializer
            if (tensor := self.sites.get((scope, INITIALIZER, t.name))) is not None
        }
        nodes = [self.node(node, index, scope) for index, node in enumerate(proto.node)]
        return Graph(
            name=proto.name,
            nodes=nodes,
            inputs=[_value_info(v) for v in proto.input],
            outputs=[_value_info(v) for v in proto.output],
            initializers=initializers,
        )

    def node(self, proto: onnx.NodeProto, index: int, scope: str) -> Node:
        domain = normalize_domain(proto.domain)
        attributes = {a.name: self.attribute(a, proto, index, scope) for a in proto.attribute}
        return Node(
            op_type=proto.op_type,
            inputs=list(proto.input),
            outputs=list(proto.output),
            name=proto.name,
            domain=domain,
            version=self.opsets.get(domain),
            attributes=attributes,
        )

    def attribute(self, proto: onnx.AttributeProto, node: onnx.NodeProto, index: int, scope: str) -> Attribute:
        kind = proto.type
        value: Any
        if kind in _SCALAR:
            attr_type, field = _SCALAR[kind]
            value = getattr(proto, field)
            value = _text(value) if kind == _A.STRING else value
        elif kind in _LISTS:
            attr_type, field = _LISTS[kind]
            values = list(getattr(proto, field))
            value = [_text(v) for v in values] if kind == _A.STRINGS else values
        elif kind == _A.TENSOR:
            attr_type = AttributeType.TENSOR
            output = node.output[0] if node.output else ""
            value = self.sites.get((scope, CONSTANT, output)) if proto.name == "value" else None
            value = value if value is not None else self.factory(proto.t)
        elif kind == _A.TENSORS:
            attr_type, value = AttributeType.TENSORS, [self.factory(t) for t in proto.tensors]
        elif kind == _A.GRAPH:
            attr_type = AttributeType.GRAPH
            value = self.graph(proto.g, node_scope(scope, node, index, proto.name, None))
        elif kind == _A.GRAPHS:
            attr_type = AttributeType.GRAPHS
            value = [
                self.graph(g, node_scope(scope, node, index, proto.name, i)) for i, g in enumerate(proto.graphs)
            ]
        else:
            attr_type, value = AttributeType.OTHER, None
        return Attribute(proto.name, attr_type, value)


def graph_from_proto(
    model: onnx.ModelProto, opsets: Mapping[str, int], sites: SiteTensors, factory: TensorFactory
) -> Graph:
    """The neutral graph of `model.graph`, sharing the weight Tensors of `sites`.

    Args:
        model: the ModelProto.
        opsets: op-set version per (normalized) domain; gives each node its version.
        sites: the model's weight tensors by (scope, kind, name), as `weight_sites` scoped them.
        factory: makes Tensors for other tensor attributes (may return None to omit one).
    """
    return _Builder(opsets, sites, factory).graph(model.graph, MAIN_SCOPE)
