# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""What an ONNX model's inputs need: declared dims (named where the exporter named them) and
the valid range of index inputs, read from the Gather that consumes them.

NOTE: free dimensions are left to the caller (`nnrconv._inputs` resolves them by name and
position); `shape` fills them with 1 for callers that predate `InputSpec.dims`. An integer input
that reaches a Gather's indices (through Cast/Reshape/Unsqueeze/Squeeze/Flatten/Identity) must
lie below the gathered table's size along the Gather axis: token ids below the vocabulary.
"""

from __future__ import annotations

import onnx

from nnrconv.core import DType, InputSpec, Model, UnsupportedError

__all__ = ["input_specs"]

_PASS_THROUGH = frozenset({"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Expand"})


def input_specs(model: Model) -> list[InputSpec]:
    """Graph inputs that no initializer feeds, with declared dims and index ranges."""
    graph = model.native.graph
    initialized = {t.name for t in graph.initializer}
    tables = _table_sizes(graph)
    specs = []
    for value in graph.input:
        if value.name in initialized:
            continue
        if not value.type.HasField("tensor_type"):
            raise UnsupportedError(f"input {value.name!r} is not a tensor; the ONNX runner cannot feed it")
        tensor_type = value.type.tensor_type
        dims: list[int | str | None] = []
        for d in tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            else:
                dims.append(d.dim_param or None)
        dtype = DType(tensor_type.elem_type)
        value_range = _index_range(graph, value.name, tables) if dtype.is_integer else None
        shape = tuple(d if isinstance(d, int) else 1 for d in dims)
        specs.append(InputSpec(value.name, dtype, shape, tuple(dims), value_range))
    return specs


def _table_sizes(graph: onnx.GraphProto) -> dict[str, tuple[int, ...]]:
    """Shapes of the constant tensors a Gather may index: initializers and Constant outputs."""
    shapes = {t.name: tuple(int(d) for d in t.dims) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    shapes[node.output[0]] = tuple(int(d) for d in attr.t.dims)
    return shapes


def _index_range(graph: onnx.GraphProto, name: str, tables: dict[str, tuple[int, ...]]) -> tuple[float, float] | None:
    """[0, n) where n is the smallest table size along the axis of every Gather the input indexes."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for source in dict.fromkeys(node.input):
            if source:
                consumers.setdefault(source, []).append(node)
    limits: list[int] = []
    frontier, seen = [name], {name}
    while frontier:
        current = frontier.pop()
        for node in consumers.get(current, []):
            if node.op_type in ("Gather", "GatherElements") and len(node.input) > 1 and node.input[1] == current:
                table = tables.get(node.input[0])
                if table:
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    axis = axis + len(table) if axis < 0 else axis
                    if 0 <= axis < len(table) and table[axis] > 0:
                        limits.append(table[axis])
            elif node.op_type in _PASS_THROUGH and node.input[0] == current:
                for out in node.output:
                    if out not in seen:
                        seen.add(out)
                        frontier.append(out)
    return (0.0, float(min(limits))) if limits else None
