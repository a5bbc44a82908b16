# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""ONNX simplification before nnef-tools converts a model to NNEF.

Real exports compute shapes at run time (`Shape → Gather → Concat → Reshape`, even on static
shapes) and use operators NNEF lacks (`HardSigmoid`, `HardSwish`). NNEF graphs are static, so
once the input shapes are fixed these can go:

1. Operators nnef-tools cannot convert but whose ONNX schema defines a function body
   (HardSigmoid, HardSwish, Softsign, ...) are replaced by that body, with onnx's own inliner:
   the body is the standard's definition of the operator, so the decomposition is exact.
   Bodies are written at a newer opset than many models use; two spec equivalences bring them
   down to the model's: `CastLike(x, like)` is `Cast(x, to=type(like))` (the type comes from
   onnx shape inference), and `Constant(value_float=v)` is `Constant(value=[v])`.
2. onnxslim folds everything computable ahead of time (static `Shape` chains, the `Cast`s of
   constants above) and removes dead nodes. Its fusions are off: they change the arithmetic
   order (batch norm into convolution) and so the outputs beyond float rounding.

The inputs' free dimensions must be fixed before (see `_convert`).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Collection, Iterator
from typing import Any

__all__ = ["simplify"]

_DEFAULT_DOMAINS = ("", "ai.onnx")
# Fusions change the arithmetic; weight tying merges equal tensors (the weights would change).
_SKIPPED_OPTIMIZATIONS = ["graph_fusion", "weight_tying"]


def simplify(model: Any, supported: Collection[str]) -> Any:
    """A simplified copy of `model` (an `onnx.ModelProto` with static inputs) for nnef-tools.

    `supported` lists the ONNX operators the converter handles; only the others are expanded.
    """
    import onnxslim

    expanded = _expand_functions(model, supported)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return onnxslim.slim(expanded, skip_optimizations=list(_SKIPPED_OPTIMIZATIONS))
    except Exception:  # folding only helps: what stays unconvertible, the pre-flight check names
        return expanded


def _opset(model: Any) -> int:
    return next((op.version for op in model.opset_import if op.domain in _DEFAULT_DOMAINS), 1)


def _function_body(op_type: str, opset: int) -> Any | None:
    """The schema's function body of `op_type` as a FunctionProto, or None when it has none."""
    import onnx

    try:
        schema = onnx.defs.get_schema(op_type, max(opset, 1))
    except onnx.defs.SchemaError:
        return None
    if not schema.has_function:
        return None
    body = onnx.FunctionProto()
    body.ParseFromString(schema.get_function_with_opset_version(max(schema.function_opset_versions)))
    return body


def _graphs(graph: Any) -> Iterator[Any]:
    """`graph` and every subgraph in it (If/Loop/Scan bodies), depth first."""
    import onnx

    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    yield from _graphs(sub)


def _nodes(graph: Any) -> Iterator[Any]:
    for sub in _graphs(graph):
        yield from sub.node


def _expand_functions(model: Any, supported: Collection[str]) -> Any:
    """`model` with every unsupported operator that has a schema function body inlined."""
    import onnx
    import onnx.inliner

    opset = _opset(model)
    staged = model
    # A body may call another expandable operator (HardSwish calls HardSigmoid): repeat until
    # none is left (bodies are shallow; the bound only guards against a cycle).
    for _ in range(8):
        present = {n.op_type for n in _nodes(staged.graph) if n.domain in _DEFAULT_DOMAINS}
        bodies = [body for op in sorted(present - set(supported)) if (body := _function_body(op, opset)) is not None]
        if not bodies:
            break
        if staged is model:
            staged = onnx.ModelProto()
            staged.CopyFrom(model)
        for body in bodies:
            local = staged.functions.add()
            local.CopyFrom(body)
            local.domain = ""
            del local.opset_import[:]
            local.opset_import.extend(staged.opset_import)  # the inliner demands matching opsets
        staged = onnx.inliner.inline_selected_functions(staged, [("", b.name) for b in bodies])
        _remove_functions(staged, {b.name for b in bodies})
    if staged is not model:
        _lower_to_opset(staged, opset)
    return staged


def _remove_functions(model: Any, names: set[str]) -> None:
    kept = [f for f in model.functions if not (f.domain == "" and f.name in names)]
    del model.functions[:]
    model.functions.extend(kept)


def _lower_to_opset(model: Any, opset: int) -> None:
    """Rewrite `CastLike` (nnef-tools lacks it) and scalar-attribute `Constant`s the model's opset
    lacks, exactly."""
    from onnx import helper

    elem_types = _elem_types(model)
    for node in _nodes(model.graph):
        if node.domain not in _DEFAULT_DOMAINS:
            continue
        if node.op_type == "CastLike" and elem_types.get(node.input[1]):
            to = elem_types[node.input[1]]
            del node.input[1:]
            node.op_type = "Cast"
            node.attribute.append(helper.make_attribute("to", to))
        elif node.op_type == "Constant" and opset < 12 and node.attribute:
            attribute = node.attribute[0]
            value = _constant_value(attribute)
            if value is not None:
                del node.attribute[:]
                node.attribute.append(helper.make_attribute("value", value))


def _constant_value(attribute: Any) -> Any | None:
    import numpy as np
    from onnx import numpy_helper

    arrays = {
        "value_float": lambda: np.array(attribute.f, np.float32),
        "value_floats": lambda: np.array(list(attribute.floats), np.float32),
        "value_int": lambda: np.array(attribute.i, np.int64),
        "value_ints": lambda: np.array(list(attribute.ints), np.int64),
    }
    make = arrays.get(attribute.name)
    return None if make is None else numpy_helper.from_array(make())


def _elem_types(model: Any) -> dict[str, int]:
    """Element type of every value onnx shape inference can type."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # a model inference cannot handle keeps its CastLike nodes (reported unsupported)
        return {}
    types: dict[str, int] = {}
    for graph in _graphs(inferred.graph):
        for info in (*graph.input, *graph.value_info, *graph.output):
            if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
                types[info.name] = info.type.tensor_type.elem_type
        for init in graph.initializer:
            types[init.name] = init.data_type
    return types
