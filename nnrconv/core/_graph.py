# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Nodes and graphs of the intermediate representation.

NOTE: the IR is neutral but not normalising: an operator keeps its own vocabulary and identity
(domain, op type, op-set version) and attributes keep their native meaning. nnrconv moves models
between containers; it does not translate operator semantics, so inventing a common operator set
would only lose information. Cross-format conversion is delegated to dedicated converters.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from nnrconv.core._dtype import DType
from nnrconv.core._tensor import Tensor

__all__ = ["Attribute", "AttributeType", "Graph", "Node", "ValueInfo"]


class AttributeType(enum.Enum):
    """The kind of value an attribute holds; lists are their own kinds, as in ONNX."""

    FLOAT = "float"
    INT = "int"
    STRING = "string"
    TENSOR = "tensor"
    GRAPH = "graph"
    TYPE = "type"
    FLOATS = "floats"
    INTS = "ints"
    STRINGS = "strings"
    TENSORS = "tensors"
    GRAPHS = "graphs"
    TYPES = "types"
    OTHER = "other"


@dataclass(slots=True)
class Attribute:
    """A typed node attribute; GRAPH and GRAPHS values are nested `Graph`s."""

    name: str
    type: AttributeType
    value: Any

    def subgraphs(self) -> tuple[Graph, ...]:
        if self.type is AttributeType.GRAPH:
            return (self.value,)
        if self.type is AttributeType.GRAPHS:
            return tuple(self.value)
        return ()


@dataclass(slots=True)
class ValueInfo:
    """A named value flowing between nodes; `shape` entries are ints or symbolic names (None if unknown)."""

    name: str
    dtype: DType = DType.UNDEFINED
    shape: tuple[int | str | None, ...] | None = None


@dataclass(slots=True)
class Node:
    """One operator application, identified by (domain, op_type, version)."""

    op_type: str
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    name: str = ""
    domain: str = ""
    version: int | None = None
    attributes: dict[str, Attribute] = field(default_factory=dict)

    def subgraphs(self) -> Iterator[Graph]:
        for attribute in self.attributes.values():
            yield from attribute.subgraphs()


@dataclass(slots=True)
class Graph:
    """Nodes in topological order, with the graph's inputs, outputs and its own constant tensors."""

    name: str = ""
    nodes: list[Node] = field(default_factory=list)
    inputs: list[ValueInfo] = field(default_factory=list)
    outputs: list[ValueInfo] = field(default_factory=list)
    initializers: dict[str, Tensor] = field(default_factory=dict)

    def walk(self) -> Iterator[Graph]:
        """This graph, then every nested subgraph, depth first."""
        yield self
        for node in self.nodes:
            for sub in node.subgraphs():
                yield from sub.walk()

    def all_nodes(self) -> Iterator[Node]:
        for graph in self.walk():
            yield from graph.nodes

    def op_types(self) -> Sequence[tuple[str, str]]:
        """Distinct (domain, op_type) pairs used anywhere in the graph, sorted."""
        return sorted({(n.domain, n.op_type) for n in self.all_nodes()})
