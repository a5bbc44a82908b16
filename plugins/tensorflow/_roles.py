# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Tensor roles and layouts from the graph's dataflow: which op consumes a weight, at which input.

NOTE: roles are read from the graph, never guessed from names. A weight (a `Const` of a frozen
graph, or a variable captured by the functions of a SavedModel) is followed forward through
value-preserving ops (Identity, ReadVariableOp, Enter, Reshape, ...) and into called functions
(PartitionedCall, While, If bodies) until real consumers are reached:

- Conv2D / Conv3D / DepthwiseConv2dNative / MatMul / BatchMatMul filter inputs -> WEIGHT,
- BiasAdd input 1 -> BIAS,
- FusedBatchNorm* inputs 1..4 -> BN_GAMMA, BN_BETA, BN_MEAN, BN_VAR,
- the decomposed batch norm of `tf.nn.batch_normalization` (what Keras 3 emits):
  var -> Add -> Rsqrt, Rsqrt * gamma, mean * inv -> Sub(beta, ...).

Layouts are TensorFlow's own (never transposed): HWIO, DHWIO, HWIM (depthwise, M = channel
multiplier), HWOI (transposed convolution), IO or OI for matrices.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from nnrconv.core import TensorRole

__all__ = ["Dataflow", "Use", "infer"]

_PASS_THROUGH = frozenset(
    {
        "Identity", "IdentityN", "ReadVariableOp", "Enter", "Switch", "Merge", "Snapshot", "StopGradient",
        "PreventGradient", "Cast", "Reshape", "Squeeze", "ExpandDims", "CheckNumerics",
    }
)
_CALLS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})
_WHILES = frozenset({"While", "StatelessWhile"})
_IFS = frozenset({"If", "StatelessIf"})
_CONV_LAYOUT = {"Conv2D": "HWIO", "Conv3D": "DHWIO", "DepthwiseConv2dNative": "HWIM", "Conv2DBackpropInput": "HWOI"}
_FUSED_BN = {1: TensorRole.BN_GAMMA, 2: TensorRole.BN_BETA, 3: TensorRole.BN_MEAN, 4: TensorRole.BN_VAR}


@dataclass(frozen=True, slots=True)
class Use:
    """A real consumer of a weight: scope ("" = main graph, else a function name), node, input index."""

    scope: str
    node: str
    index: int


def _producer(ref: str) -> str:
    """The producing node (or function argument) of an input reference; "" for control inputs."""
    if ref.startswith("^"):
        return ""
    return ref.split(":", 1)[0]


@dataclass(slots=True)
class _Scope:
    nodes: dict[str, object]
    consumers: dict[str, list[tuple[object, int]]] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)


class Dataflow:
    """Node lookup and consumer index over a GraphDef and its function library."""

    def __init__(self, nodes: Iterable[object], functions: Iterable[object]) -> None:
        self.scopes: dict[str, _Scope] = {"": self._scope(nodes)}
        for function in functions:
            scope = self._scope(function.node_def)  # type: ignore[attr-defined]
            scope.args = [a.name for a in function.signature.input_arg]  # type: ignore[attr-defined]
            self.scopes[function.signature.name] = scope  # type: ignore[attr-defined]

    @staticmethod
    def _scope(nodes: Iterable[object]) -> _Scope:
        scope = _Scope({n.name: n for n in nodes})  # type: ignore[attr-defined]
        for node in scope.nodes.values():
            for index, ref in enumerate(node.input):  # type: ignore[attr-defined]
                name = _producer(ref)
                if name:
                    scope.consumers.setdefault(name, []).append((node, index))
        return scope

    def node(self, scope: str, name: str) -> object | None:
        return self.scopes[scope].nodes.get(name)

    def _callee(self, node: object, index: int) -> tuple[str, int] | None:
        """The function and argument index a call-like node passes its input `index` to."""
        op = node.op  # type: ignore[attr-defined]
        attrs = node.attr  # type: ignore[attr-defined]
        if op in _CALLS and "f" in attrs:
            return attrs["f"].func.name, index
        if op in self.scopes and op:
            return op, index
        if op in _WHILES and "body" in attrs:
            return attrs["body"].func.name, index
        if op in _IFS and index > 0 and "then_branch" in attrs:
            return attrs["then_branch"].func.name, index - 1
        return None

    def uses(self, scope: str, name: str) -> Iterator[Use]:
        """Every real consumer of the value produced by `name` in `scope` (function calls followed)."""
        todo, seen = [(scope, name)], set()
        while todo:
            current = todo.pop()
            if current in seen or current[0] not in self.scopes:
                continue
            seen.add(current)
            where, producer = current
            for node, index in self.scopes[where].consumers.get(producer, ()):
                op = node.op  # type: ignore[attr-defined]
                if op in _PASS_THROUGH and (index == 0 or op in ("IdentityN", "Merge")):
                    todo.append((where, node.name))  # type: ignore[attr-defined]
                    continue
                callee = self._callee(node, index)
                if callee is not None and callee[0] in self.scopes:
                    args = self.scopes[callee[0]].args
                    if callee[1] < len(args):
                        todo.append((callee[0], args[callee[1]]))
                    continue
                yield Use(where, node.name, index)  # type: ignore[attr-defined]

    def source_op(self, scope: str, ref: str) -> str:
        """Op type producing an input reference, looking back through value-preserving ops."""
        name = _producer(ref)
        for _ in range(32):
            node = self.scopes[scope].nodes.get(name)
            if node is None:
                return ""
            if node.op in _PASS_THROUGH and node.input:  # type: ignore[attr-defined]
                name = _producer(node.input[0])  # type: ignore[attr-defined]
                continue
            return node.op  # type: ignore[attr-defined]
        return ""

    def consumer_ops(self, scope: str, name: str) -> list[tuple[str, int]]:
        """(op, input index) of the consumers of `name` in its own scope, through value-preserving ops."""
        found, todo, seen = [], [name], set()
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            for node, index in self.scopes[scope].consumers.get(current, ()):
                if node.op in _PASS_THROUGH and index == 0:  # type: ignore[attr-defined]
                    todo.append(node.name)  # type: ignore[attr-defined]
                else:
                    found.append((node.op, index))  # type: ignore[attr-defined]
        return found


def _classify(flow: Dataflow, use: Use) -> tuple[TensorRole, str | None]:
    node = flow.node(use.scope, use.node)
    op, attrs = node.op, node.attr  # type: ignore[attr-defined]
    if op in _CONV_LAYOUT and use.index == 1:
        return TensorRole.WEIGHT, _CONV_LAYOUT[op]
    if op == "MatMul" and use.index in (0, 1):
        flag = "transpose_b" if use.index == 1 else "transpose_a"
        transposed = flag in attrs and attrs[flag].b
        if use.index == 1:
            return TensorRole.WEIGHT, "OI" if transposed else "IO"
    if op.startswith("BatchMatMul") and use.index == 1:
        return TensorRole.WEIGHT, None
    if op == "BiasAdd" and use.index == 1:
        return TensorRole.BIAS, None
    if op.startswith("FusedBatchNorm") and use.index in _FUSED_BN:
        return _FUSED_BN[use.index], None
    # The decomposed batch norm of tf.nn.batch_normalization.
    other = node.input[1 - use.index] if op in ("Mul", "Sub", "Add", "AddV2") and use.index in (0, 1) else ""
    after = flow.consumer_ops(use.scope, use.node)
    # Operand positions follow the function: inv = rsqrt(var + eps) * scale; offset - mean * inv.
    if op in ("Add", "AddV2") and use.index == 0 and any(o == "Rsqrt" for o, _ in after):
        return TensorRole.BN_VAR, None
    if op == "Mul" and use.index == 0 and ("Sub", 1) in after:
        return TensorRole.BN_MEAN, None
    if op == "Mul" and use.index == 1 and flow.source_op(use.scope, other) == "Rsqrt":
        return TensorRole.BN_GAMMA, None
    if op == "Sub" and use.index == 0 and flow.source_op(use.scope, other) == "Mul":
        return TensorRole.BN_BETA, None
    return TensorRole.OTHER, None


def infer(flow: Dataflow, sources: dict[str, list[tuple[str, str]]]) -> dict[str, tuple[TensorRole, str | None]]:
    """Role and layout per tensor key, from the (scope, value name) pairs that carry each tensor."""
    result: dict[str, tuple[TensorRole, str | None]] = {}
    for key, refs in sources.items():
        best: tuple[TensorRole, str | None] = (TensorRole.OTHER, None)
        for scope, name in refs:
            for use in flow.uses(scope, name):
                role = _classify(flow, use)
                if role[0] is not TensorRole.OTHER:
                    best = role
                    break
            if best[0] is not TensorRole.OTHER:
                break
        result[key] = best
    return result
