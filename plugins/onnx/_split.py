# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Split an ONNX model at a set of tensors (split inference, 3GPP TR 26.847): a head computing
the cut tensors from the model's inputs, and a tail computing the outputs from the cut tensors
(and the model inputs it still needs), extracted with `onnx.utils.Extractor`.

A cut is valid when nothing else computed from the inputs crosses it: no tensor the head side
computes from the inputs, other than the cut tensors, is used by the tail. Constant subgraphs
(weights held in Constant nodes, shape arithmetic on them) may serve both sides and are copied
into each part.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnx
from onnx import shape_inference
from onnx.utils import Extractor

from nnrconv.core import FormatError, UnsupportedError

__all__ = ["crossing_tensors", "split_model"]


class _Graph:
    """Producers and consumers of a graph's tensors, and which tensors depend on its inputs."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        initializers = {t.name for t in graph.initializer}
        self.inputs = [i.name for i in graph.input if i.name not in initializers]
        self.outputs = [o.name for o in graph.output]
        self.producer: dict[str, int] = {}
        for index, node in enumerate(graph.node):
            for name in node.output:
                if name:
                    self.producer[name] = index
        dynamic = set(self.inputs)
        for node in graph.node:  # nodes are topologically sorted in a valid model
            if any(name in dynamic for name in _node_inputs(node)):
                dynamic.update(n for n in node.output if n)
        self.dynamic = dynamic

    def ancestors(self, names: Sequence[str], stop: set[str]) -> set[int]:
        """Indices of the nodes computing `names`, not looking past the tensors in `stop`."""
        seen: set[int] = set()
        stack = [n for n in names if n not in stop]
        while stack:
            index = self.producer.get(stack.pop())
            if index is None or index in seen:
                continue
            seen.add(index)
            stack.extend(n for n in _node_inputs(self.graph.node[index]) if n and n not in stop)
        return seen

    def inputs_used(self, nodes: set[int], extra: Sequence[str] = ()) -> list[str]:
        used = {n for i in nodes for n in _node_inputs(self.graph.node[i])} | set(extra)
        return [name for name in self.inputs if name in used]


def _node_inputs(node: onnx.NodeProto) -> list[str]:
    """A node's inputs, including outer-scope names its subgraphs (If, Loop, Scan) use."""
    names = [n for n in node.input if n]
    for attribute in node.attribute:
        graphs = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
        for sub in graphs:
            local = {i.name for i in sub.input} | {t.name for t in sub.initializer}
            for inner in sub.node:
                local.update(inner.output)
                names.extend(n for n in _node_inputs(inner) if n and n not in local)
    return names


def crossing_tensors(model: onnx.ModelProto, at: Sequence[str]) -> list[str]:
    """Tensors computed from the inputs on the head side that the tail would also need.

    Raises:
        UnsupportedError: a name in `at` is not computed by any node of the model.
    """
    graph = _Graph(model.graph)
    unknown = [name for name in at if name not in graph.producer]
    if unknown:
        raise UnsupportedError(
            f"cannot cut at {', '.join(map(repr, unknown))}: not the output of any node of the model"
        )
    cut = set(at)
    head = graph.ancestors(at, set(graph.inputs))
    tail = graph.ancestors(graph.outputs, cut)
    wanted = {n for i in tail - head for n in _node_inputs(model.graph.node[i])} | set(graph.outputs)
    produced = {n for i in head for n in model.graph.node[i].output if n}
    return sorted(n for n in wanted & produced & graph.dynamic if n not in cut)


def split_model(path: Path, at: Sequence[str], head_path: Path, tail_path: Path) -> None:
    """Write the head and tail of the ONNX model at `path`, cut at the tensors `at`.

    Raises:
        UnsupportedError: a cut tensor is unknown, its type cannot be inferred, or other tensors
            cross the cut (listed in the message, exit code 5).
        FormatError: the model cannot be read.
    """
    from onnx.external_data_helper import load_external_data_for_model

    from nnrconv_onnx._io import read_model

    model = read_model(path)
    try:
        load_external_data_for_model(model, str(path.parent))  # onnx refuses paths leaving the folder
    except Exception as exc:
        raise FormatError(f"{path}: cannot read the model's external data: {exc}") from None
    try:
        crossing = crossing_tensors(model, at)
    except UnsupportedError as exc:
        raise UnsupportedError(f"{path}: {exc}") from None
    if crossing:
        shown = ", ".join(map(repr, crossing[:10])) + (" ..." if len(crossing) > 10 else "")
        raise UnsupportedError(
            f"{path}: the cut at {', '.join(map(repr, at))} leaves {len(crossing)} other tensors crossing it: "
            f"{shown}; add them to --at or cut elsewhere"
        )
    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    graph = _Graph(inferred.graph)
    extractor = Extractor(inferred)
    untyped = [name for name in at if name not in extractor.value_infos]
    if untyped:
        raise UnsupportedError(
            f"{path}: the type of {', '.join(map(repr, untyped))} cannot be inferred; the tail cannot take it as input"
        )
    head_inputs = graph.inputs_used(graph.ancestors(at, set(graph.inputs)))
    tail_nodes = graph.ancestors(graph.outputs, set(at))
    tail_inputs = [*at, *graph.inputs_used(tail_nodes, [o for o in graph.outputs if o in graph.inputs])]
    for inputs, outputs, target in ((head_inputs, list(at), head_path), (tail_inputs, graph.outputs, tail_path)):
        part = extractor.extract_model(inputs, outputs)
        part.graph.name = f"{model.graph.name}_{'head' if target == head_path else 'tail'}"
        onnx.save(part, str(target))
