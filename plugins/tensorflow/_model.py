# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""What a TensorFlow `Model` keeps natively, and the neutral graph built from a GraphDef."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from nnrconv.core import Graph, Node, Tensor, TensorRole

__all__ = ["FORMAT", "GRAPHDEF", "LAYOUT_PREFIX", "SAVEDMODEL", "CheckpointEntry", "TFNative", "neutral_graph"]

FORMAT = "tensorflow"
GRAPHDEF = "graphdef"
SAVEDMODEL = "savedmodel"
# Model.metadata key prefix: "layout/<tensor name>" -> "HWIO", "HWIM", "IO", ... (see _roles).
LAYOUT_PREFIX = "layout/"


@dataclass(slots=True)
class CheckpointEntry:
    """One entry of a SavedModel's `variables/` checkpoint (TensorBundle)."""

    key: str
    tf_dtype: int
    shape: tuple[int, ...]


@dataclass(slots=True)
class TFNative:
    """The native model: a frozen GraphDef, or a SavedModel's files plus its checkpoint entries.

    Attributes:
        kind: GRAPHDEF or SAVEDMODEL.
        graph_def: the GraphDef (frozen graph), values of every constant still inside.
        saved_model: the parsed SavedModel proto (SavedModel only).
        files: the SavedModel folder's files other than the checkpoint, by relative path.
        entries: checkpoint entries in checkpoint order (SavedModel only).
        prefix: checkpoint prefix relative to the folder (normally "variables/variables").
        values: checkpoint values that are not model tensors (no nnrconv dtype), by key.
        loaded: the tensors as loaded; `save` rewrites only tensors replaced since.
    """

    kind: str
    graph_def: Any = None
    saved_model: Any = None
    files: dict[str, bytes] = field(default_factory=dict)
    entries: list[CheckpointEntry] = field(default_factory=list)
    prefix: str = "variables/variables"
    values: dict[str, Any] = field(default_factory=dict)
    loaded: dict[str, Tensor] = field(default_factory=dict)


def neutral_graph(name: str, nodes: Iterable[Any], tensors: dict[str, Tensor]) -> Graph:
    """The IR graph of a GraphDef's main nodes (ops keep TensorFlow's names, domain "tf")."""
    graph = Graph(name=name)
    for node in nodes:
        graph.nodes.append(
            Node(node.op, [i for i in node.input if not i.startswith("^")], [node.name], name=node.name, domain="tf")
        )
        if node.name in tensors:
            graph.initializers[node.name] = tensors[node.name]
    return graph


def set_roles(
    tensors: dict[str, Tensor], roles: dict[str, tuple[TensorRole, str | None]], metadata: dict[str, str]
) -> None:
    """Set each tensor's role and record its layout as metadata ``layout/<key>``."""
    for key, (role, layout) in roles.items():
        if key in tensors:
            tensors[key].role = role
        if layout:
            metadata[LAYOUT_PREFIX + key] = layout
