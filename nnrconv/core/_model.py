# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The model: graph, weights, metadata, and the native topology it came from.

NOTE: a `Model` keeps the plugin's own representation (`native`) next to the neutral graph.
Rebuilding a native model from the neutral graph alone would lose whatever the IR does not model
(doc strings, value-info, exotic attributes); the plugin rebuilds from `native` and only swaps
the weights, which is what makes round trips exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from nnrconv.core._graph import Graph
from nnrconv.core._tensor import Tensor

__all__ = ["Model"]


@dataclass(slots=True)
class Model:
    """A neural network as nnrconv moves it.

    Attributes:
        graph: the neutral tensor graph (structure, for reports and checks).
        tensors: every weight the model holds, keyed by its topology element id (the name an
            NNR data unit carries), wherever it lives in the native model.
        source_format: name of the format plugin that produced the model.
        native: the plugin's own representation, used to rebuild the native model exactly.
        metadata: free-form string metadata (producer, version, doc strings).
        opsets: op-set version per operator domain.
    """

    graph: Graph
    tensors: dict[str, Tensor] = field(default_factory=dict)
    source_format: str = ""
    native: Any = None
    metadata: dict[str, str] = field(default_factory=dict)
    opsets: dict[str, int] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Tensor]:
        return iter(self.tensors.values())

    @property
    def parameter_count(self) -> int:
        return sum(t.size for t in self.tensors.values())

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())
