# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Which checkpoint key each variable captured by a SavedModel's serving signature holds.

NOTE: a SavedModel can restore a variable from different checkpoint entries depending on the
loader. `tf.saved_model.load` follows the object graph (the concrete function's bound inputs,
`_savedmodel._variable_refs`); the v1 loader (`_runtime`'s first choice, and TensorFlow
Serving's) runs the graph's restore function, whose `RestoreV2` names the keys it assigns to
each variable handle. Keras `model.export` writes every variable twice (`variables/<i>` and
`_all_variables/<i>`) and the two loaders read different copies: compensating one copy would
change what one loader runs and not the other. So a captured variable gets a key only when both
loaders read it from the same entry; anything that does not parse gets none (no compensation).
"""

from __future__ import annotations

from nnrconv_tensorflow import _savedmodel
from nnrconv_tensorflow._model import TFNative

__all__ = ["capture_keys"]

SIGNATURE = "serving_default"


def _node_name(ref: str) -> str:
    return ref.lstrip("^").split(":")[0]


def _serving_call(graph) -> object | None:  # type: ignore[no-untyped-def]
    """The main-graph call node the serving signature's outputs come from."""
    signatures = graph.signature_def
    if SIGNATURE not in signatures or not signatures[SIGNATURE].outputs:
        return None
    nodes = {n.name: n for n in graph.graph_def.node}
    producers = {_node_name(info.name) for info in signatures[SIGNATURE].outputs.values()}
    calls = [nodes[p] for p in producers if p in nodes and "f" in nodes[p].attr]
    return calls[0] if len(calls) == 1 and len(producers) == 1 else None


def _restored_keys(graph) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Main-graph variable node -> the checkpoint key the v1 restore function assigns to it."""
    from tensorflow.python.framework import tensor_util

    nodes = {n.name: n for n in graph.graph_def.node}
    call = nodes.get(_node_name(graph.saver_def.restore_op_name))
    functions = {f.signature.name: f for f in graph.graph_def.library.function}
    if call is None or "f" not in call.attr or call.attr["f"].func.name not in functions:
        return {}
    function = functions[call.attr["f"].func.name]
    args = [a.name for a in function.signature.input_arg]
    outer = [_node_name(i) for i in call.input if not i.startswith("^")]
    if len(args) != len(outer):
        return {}
    variable_of = dict(zip(args, outer, strict=True))
    body = {n.name: n for n in function.node_def}
    restores = [n for n in function.node_def if n.op == "RestoreV2"]
    if len(restores) != 1 or _node_name(restores[0].input[1]) not in body:
        return {}
    names = tensor_util.MakeNdarray(body[_node_name(restores[0].input[1])].attr["value"].tensor).reshape(-1)
    restored: dict[str, str] = {}
    for node in function.node_def:
        if node.op != "AssignVariableOp" or len(node.input) < 2 or node.input[0] not in variable_of:
            continue
        ref = node.input[1]
        while _node_name(ref) in body and body[_node_name(ref)].op == "Identity":
            ref = body[_node_name(ref)].input[0]
        parts = ref.split(":")
        if len(parts) == 3 and parts[0] == restores[0].name and parts[1] == "tensors" and parts[2].isdigit():
            index = int(parts[2])
            if index < len(names):
                restored[variable_of[node.input[0]]] = bytes(names[index]).decode()
    return restored


def capture_keys(native: TFNative, placeholders: list[str]) -> dict[str, str]:
    """Capture placeholder name (an argument of the serving function) -> checkpoint key.

    Empty unless the loaded signature's captures are exactly the serving function's bound
    arguments; an argument is left out unless both loaders read its variable from that key.
    """
    graph = _savedmodel.meta_graph(native.saved_model)
    call = _serving_call(graph)
    if call is None:
        return {}
    wrapper = call.attr["f"].func.name
    refs = _savedmodel._variable_refs(native, graph)
    by_arg = {arg: key for key, pairs in refs.items() for function, arg in pairs if function == wrapper}
    if len(by_arg) != len(placeholders) or set(by_arg) != set(placeholders):
        return {}
    functions = {f.signature.name: f for f in graph.graph_def.library.function}
    args = [a.name for a in functions[wrapper].signature.input_arg] if wrapper in functions else []
    outer = [_node_name(i) for i in call.input if not i.startswith("^")]
    if len(args) != len(outer):
        return {}
    restored = _restored_keys(graph)
    variable_of = dict(zip(args, outer, strict=True))
    return {arg: key for arg, key in by_arg.items() if restored.get(variable_of.get(arg, "")) == key}
