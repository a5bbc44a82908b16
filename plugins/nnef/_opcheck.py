# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Pre-flight checks of cross-format conversion: every operator nnef-tools cannot convert, at once.

NOTE: nnef-tools' converters check their operators too, but only after their reader has built
the whole graph, and the reader or the converter's dynamic-shape check can stop first on the
very operators that are unsupported. So the source graph is inspected here, before nnef-tools
sees it: ONNX and TensorFlow from their own protos (with the frameworks' shape inference), NNEF
and TFLite from the graph nnef-tools' reader builds (both readers are plain parsers). The
supported operators are the keys of the converter's own transform table, so the check follows
whatever nnef-tools version is installed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from nnrconv.core import UnsupportedError

__all__ = ["Unsupported", "nnef_tools_graph_unsupported", "onnx_unsupported", "raise_unsupported", "tf_unsupported"]

Shape = tuple[int | str | None, ...] | None

# TensorFlow ops that nnef-tools' required TF optimizer folds away: a dilated convolution written
# as SpaceToBatchND -> Conv2D/DepthwiseConv2dNative -> BatchToSpaceND becomes one convolution.
_TF_DILATED_CONV = ("SpaceToBatchND", {"Conv2D", "DepthwiseConv2dNative"}, "BatchToSpaceND")
_ONNX_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True, slots=True)
class Unsupported:
    """One operator that cannot be converted: its type and its inputs as (name, shape)."""

    op_type: str
    inputs: tuple[tuple[str, Shape], ...]

    def describe(self) -> str:
        if not self.inputs:
            return self.op_type
        return f"{self.op_type} ({', '.join(f'{name} {_shape_text(shape)}' for name, shape in self.inputs)})"


def _shape_text(shape: Shape) -> str:
    if shape is None:
        return "[?]"
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def raise_unsupported(found: Sequence[Unsupported], source: str, target: str) -> None:
    """Raise one `UnsupportedError` naming every unsupported operator (repeats counted), if any."""
    if not found:
        return
    counts = Counter(item.describe() for item in found)
    parts = [text if n == 1 else f"{text} {n} times" for text, n in counts.items()]
    noun = "operator cannot" if len(found) == 1 else "operators cannot"
    raise UnsupportedError(f"{source}: {len(found)} {noun} be converted to {target}: {', '.join(parts)}")


# -- ONNX -----------------------------------------------------------------------------------
def onnx_unsupported(model: Any, supported: Collection[str]) -> list[Unsupported]:
    """Nodes of an ONNX model (subgraphs included) whose type nnef-tools cannot convert.

    `model` is a `ModelProto` whose free input dimensions are already fixed; shapes come from
    `onnx.shape_inference` (values it cannot infer show as ``[?]``).
    """
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # inference only feeds the message: fall back to no shapes
        inferred = model
    shapes: dict[str, Shape] = {}
    for graph in _onnx_graphs(inferred.graph):
        for info in (*graph.input, *graph.value_info, *graph.output):
            shapes[info.name] = _onnx_shape(info)
        for init in graph.initializer:
            shapes.setdefault(init.name, tuple(init.dims))
    found = []
    for graph in _onnx_graphs(inferred.graph):
        for node in graph.node:
            if node.domain in _ONNX_DOMAINS and node.op_type in supported:
                continue
            op_type = node.op_type if node.domain in _ONNX_DOMAINS else f"{node.domain}.{node.op_type}"
            inputs = tuple((name, shapes.get(name)) for name in node.input if name)
            found.append(Unsupported(op_type, inputs))
    return found


def _onnx_graphs(graph: Any) -> Iterator[Any]:
    """A graph, then every subgraph held in its nodes' attributes, depth first."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _onnx_graphs(attribute.g)
            for sub in attribute.graphs:
                yield from _onnx_graphs(sub)


def _onnx_shape(info: Any) -> Shape:
    tensor_type = info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    dims: list[int | str | None] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(dim.dim_value)
        else:
            dims.append(dim.dim_param or None)
    return tuple(dims)


# -- TensorFlow -------------------------------------------------------------------------------
def tf_unsupported(graph: Any, supported: Collection[str]) -> list[Unsupported]:
    """Operations of an imported `tf.Graph` whose type nnef-tools cannot convert.

    Shapes are TensorFlow's static shapes, after the caller fixed the placeholders' free
    dimensions. The chains nnef-tools' required optimizer rewrites first are not reported.
    """
    operations = graph.get_operations()
    rewritten = _tf_rewritten(operations)
    found = []
    for op in operations:
        if op.type in supported or op.name in rewritten:
            continue
        inputs = tuple((tensor.name, _tf_shape(tensor.shape)) for tensor in op.inputs)
        found.append(Unsupported(op.type, inputs))
    return found


def _tf_rewritten(operations: Iterable[Any]) -> set[str]:
    first, middle, last = _TF_DILATED_CONV
    names = set()
    for op in operations:
        if op.type != first:
            continue
        for conv in _consumers(op):
            if conv.type in middle:
                for back in _consumers(conv):
                    if back.type == last:
                        names.update((op.name, back.name))
    return names


def _consumers(op: Any) -> list[Any]:
    return [c for out in op.outputs for c in out.consumers()]


def _tf_shape(shape: Any) -> Shape:
    if shape.rank is None:
        return None
    return tuple(shape.as_list())


# -- graphs read by nnef-tools (NNEF, TFLite) ------------------------------------------------
def nnef_tools_graph_unsupported(graph: Any, supported: Collection[str]) -> list[Unsupported]:
    """Operations of an `nnef_tools.model.Graph` whose type the converter has no transform for."""
    found = []
    for op in graph.operations:
        if op.type in supported:
            continue
        inputs = tuple((tensor.name or "?", tensor.shape) for tensor in op.inputs)
        found.append(Unsupported(op.type, inputs))
    return found
