# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Split a `torch.export` program (`.pt2`) at a set of graph nodes (split inference): a head
computing the cut nodes' values from the inputs, and a tail computing the outputs from them
(and the inputs it still needs). Each part is a new FX graph over the same parameters,
re-exported with `torch.export.export` on example inputs built from the nodes' recorded shapes
(so the parts have static shapes) and saved with `torch.export.save`.

The archive is read by the plugin's safe loader (`_torchio.load`), never unpickled blindly. Only
programs whose cut nodes produce one tensor each can be split; other layouts are refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import fx
from torch.utils import _pytree as pytree

from nnrconv.core import UnsupportedError

__all__ = ["split_program"]


def _ancestors(outputs: Iterable[fx.Node], stop: set[fx.Node]) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    stack = [n for n in outputs if n not in stop]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        stack.extend(n for n in node.all_input_nodes if n not in stop)
    return seen


def _example(node: fx.Node, source: Path) -> torch.Tensor:
    value = node.meta.get("val")
    if not isinstance(value, torch.Tensor):
        raise UnsupportedError(f"{source}: node {node.name!r} does not produce one tensor; it cannot be a cut")
    shape = [int(d) for d in value.shape]
    if value.dtype.is_floating_point:
        return torch.randn(shape, dtype=value.dtype)
    return torch.zeros(shape, dtype=value.dtype)


def _part(root: fx.GraphModule, inputs: Sequence[fx.Node], outputs: Any, needed: set[fx.Node]) -> fx.GraphModule:
    """A module over `root`'s attributes: `inputs` become its arguments, `outputs` its result."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in inputs:
        env[node] = graph.placeholder(node.name)
        env[node].meta = dict(node.meta)
    for node in root.graph.nodes:
        if node in needed and node not in env and node.op != "placeholder":
            env[node] = graph.node_copy(node, lambda n: env[n])
    graph.output(fx.map_arg(outputs, lambda n: env[n]))
    graph.eliminate_dead_code()
    return fx.GraphModule(root, graph)


def split_program(program: Any, at: Sequence[str], head: Path, tail: Path, source: Path) -> None:
    """Write the head and tail of an ExportedProgram cut at the nodes named `at`.

    Raises:
        UnsupportedError: a name is not a computing node, a cut node is not one tensor, other
            nodes computed from the inputs cross the cut (listed), or re-export fails.
    """
    root = program.module()
    for node in list(root.graph.nodes):  # input guards: the parts get their own when re-exported
        if node.op == "call_module" and str(node.target).startswith("_guards"):
            root.graph.erase_node(node)
    nodes = {n.name: n for n in root.graph.nodes}
    unknown = [name for name in at if name not in nodes or nodes[name].op not in ("call_function", "call_method")]
    if unknown:
        computing = ", ".join(n.name for n in root.graph.nodes if n.op == "call_function")[:200]
        raise UnsupportedError(
            f"{source}: cannot cut at {', '.join(map(repr, unknown))}: not a computing node of the program "
            f"(nodes: {computing} ...)"
        )
    cut = [nodes[name] for name in at]
    inputs = [n for n in root.graph.nodes if n.op == "placeholder"]
    output = next(n for n in root.graph.nodes if n.op == "output")
    dynamic = set(inputs)
    for node in root.graph.nodes:
        if any(n in dynamic for n in node.all_input_nodes):
            dynamic.add(node)
    head_nodes = _ancestors(cut, set(inputs))
    tail_nodes = _ancestors(output.all_input_nodes, set(cut))
    crossing = sorted(
        {
            n.name
            for n in head_nodes & tail_nodes & dynamic
            if n not in cut and any(u in tail_nodes - head_nodes or u is output for u in n.users)
        }
    )
    if crossing:
        raise UnsupportedError(
            f"{source}: the cut at {', '.join(map(repr, at))} leaves {len(crossing)} other tensors crossing it: "
            f"{', '.join(map(repr, crossing[:10]))}; add them to --at or cut elsewhere"
        )
    head_inputs = [n for n in inputs if n in _ancestors(cut, set())]
    tail_inputs = [*cut, *(n for n in inputs if n in tail_nodes)]
    results = output.args[0]
    spec = getattr(root, "_out_spec", None)  # the program's own result structure (a tensor, a dict...)
    if spec is not None and isinstance(results, (tuple, list)) and spec.num_leaves == len(results):
        results = pytree.tree_unflatten(list(results), spec)
    parts = (
        (head, head_inputs, tuple(cut), head_nodes),
        (tail, tail_inputs, results, tail_nodes | set(cut)),
    )
    for path, part_inputs, part_outputs, needed in parts:
        module = _part(root, part_inputs, part_outputs, needed | set(part_inputs))
        examples = tuple(_example(n, source) for n in part_inputs)
        try:
            exported = torch.export.export(module, examples)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnsupportedError(f"{source}: the {path.stem} part cannot be re-exported ({first})") from None
        torch.export.save(exported, str(path))
