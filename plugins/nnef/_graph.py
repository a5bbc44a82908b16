# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Reading `graph.nnef` (and `graph.quant`) with the ``nnef`` parser: variables, roles, neutral graph.

The text itself is never rewritten: nnrconv keeps the bytes it read and writes them back, so the
parser only tells which variables exist (label, shape, type), what they are used for, and what
the neutral `Graph` looks like.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import nnef

from nnrconv.core import Attribute, AttributeType, DType, Graph, Node, TensorRole, ValueInfo

__all__ = ["ExternalDecl", "GraphError", "ParsedGraph", "VariableDecl", "parse_graph"]

# NNEF's three tensor types, as element types of a tensor fed to the graph.
NNEF_DTYPES = {"scalar": DType.FLOAT, "integer": DType.INT32, "logical": DType.BOOL}

# (operation, input parameter) -> role; any operation's 'filter' and 'bias' are weight and bias.
_ROLES: dict[tuple[str, str], TensorRole] = {
    ("batch_normalization", "mean"): TensorRole.BN_MEAN,
    ("batch_normalization", "variance"): TensorRole.BN_VAR,
    ("batch_normalization", "offset"): TensorRole.BN_BETA,
    ("batch_normalization", "scale"): TensorRole.BN_GAMMA,
}
_GENERIC_ROLES = {
    "filter": TensorRole.WEIGHT,
    "bias": TensorRole.BIAS,
    "plane_filter": TensorRole.WEIGHT,
    "point_filter": TensorRole.WEIGHT,
}


class GraphError(ValueError):
    """`graph.nnef` or `graph.quant` does not parse, or declares something inconsistent."""


@dataclass(frozen=True, slots=True)
class VariableDecl:
    """One `variable` of the graph, by label (variables sharing a label share one `.dat`)."""

    label: str
    tensor: str
    shape: tuple[int, ...]
    nnef_type: str

    @property
    def relative_path(self) -> str:
        """Where the variable's data lives, relative to the model folder (leading '/' dropped)."""
        return self.label.lstrip("/") + ".dat"


@dataclass(frozen=True, slots=True)
class ExternalDecl:
    """One graph input (`external`)."""

    name: str
    shape: tuple[int, ...]
    nnef_type: str


@dataclass(slots=True)
class ParsedGraph:
    graph: Graph
    variables: dict[str, VariableDecl] = field(default_factory=dict)
    roles: dict[str, TensorRole] = field(default_factory=dict)
    externals: list[ExternalDecl] = field(default_factory=list)


def _decode(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GraphError(f"{what} is not UTF-8 text (byte {exc.start})") from None


def parse_graph(graph_text: bytes, quant_text: bytes | None = None) -> ParsedGraph:
    """Parse the graph (not lowered: fragments stay as invocations) and collect its variables.

    Raises:
        GraphError: the text does not parse, contains NUL, or two variables share a label with
            different shapes.
    """
    if b"\0" in graph_text:
        raise GraphError("graph.nnef contains a NUL byte; it is not NNEF text")
    text = _decode(graph_text, "graph.nnef")
    quant = None if quant_text is None else _decode(quant_text, "graph.quant")
    try:
        parsed = nnef.parse_string(text, quant)
    except nnef.Error as exc:
        raise GraphError(str(exc)) from None
    result = ParsedGraph(Graph(name=str(parsed.name)))
    tensor_labels: dict[str, str] = {}
    for op in parsed.operations:
        if op.name == "variable":
            _add_variable(result, op, tensor_labels)
        elif op.name == "external":
            shape = tuple(int(d) for d in op.attribs["shape"])
            result.externals.append(ExternalDecl(str(op.outputs["output"]), shape, str(op.dtype)))
        for key, value in op.inputs.items():
            for name in _identifiers(value):
                label = tensor_labels.get(name)
                role = _ROLES.get((op.name, key)) or _GENERIC_ROLES.get(key)
                if label is not None and role is not None:
                    result.roles.setdefault(label, role)
        result.graph.nodes.append(_node(op))
    shapes = {e.name: e for e in result.externals}
    result.graph.inputs = [_value_info(str(n), shapes.get(str(n))) for n in parsed.inputs]
    result.graph.outputs = [ValueInfo(str(n)) for n in parsed.outputs]
    return result


def _add_variable(result: ParsedGraph, op: Any, tensor_labels: dict[str, str]) -> None:
    label = str(op.attribs["label"])
    decl = VariableDecl(label, str(op.outputs["output"]), tuple(int(d) for d in op.attribs["shape"]), str(op.dtype))
    tensor_labels[decl.tensor] = label
    known = result.variables.get(label)
    if known is None:
        result.variables[label] = decl
    elif known.shape != decl.shape:
        raise GraphError(f"variables {known.tensor!r} and {decl.tensor!r} share label {label!r} but not their shape")


def _identifiers(value: Any) -> list[str]:
    """Tensor names referenced by an argument (identifiers, possibly inside lists or tuples)."""
    if isinstance(value, nnef.Identifier):
        return [str(value)]
    if isinstance(value, (list, tuple)):
        return [name for item in value for name in _identifiers(item)]
    return []


def _value_info(name: str, external: ExternalDecl | None) -> ValueInfo:
    if external is None:
        return ValueInfo(name)
    return ValueInfo(name, NNEF_DTYPES.get(external.nnef_type, DType.UNDEFINED), external.shape)


def _attribute(name: str, value: Any) -> Attribute:
    if isinstance(value, bool):
        return Attribute(name, AttributeType.OTHER, value)
    if isinstance(value, int):
        return Attribute(name, AttributeType.INT, value)
    if isinstance(value, float):
        return Attribute(name, AttributeType.FLOAT, value)
    if isinstance(value, str):
        return Attribute(name, AttributeType.STRING, str(value))
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return Attribute(name, AttributeType.INTS, list(value))
    return Attribute(name, AttributeType.OTHER, value)


def _node(op: Any) -> Node:
    inputs = [name for value in op.inputs.values() for name in _identifiers(value)]
    outputs = [name for value in op.outputs.values() for name in _identifiers(value)]
    attributes: Mapping[str, Any] = op.attribs
    return Node(
        str(op.name),
        inputs,
        outputs,
        name=outputs[0] if outputs else "",
        attributes={k: _attribute(k, v) for k, v in attributes.items()},
    )
