# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""One flat graph per model, whose every tensor a session can fetch (layer inputs for compensation).

NOTE: a frozen GraphDef is flat already: its `Const` nodes are the model's tensors, keyed by node
name. A SavedModel's layers live inside functions, whose inner tensors no session can fetch, so
its serving signature is loaded (from TensorFlow's in-memory file system, see `_session`) and
frozen with `convert_variables_to_constants_v2`, which inlines every call and turns each captured
variable into a `Const` named after the signature function's placeholder for it. Those
placeholders are the serving function's trailing arguments, one per bound input, in order;
`_saved_keys` maps them to checkpoint keys (only where every loader reads that key), and a key
is kept only when its `Const` has the checkpoint entry's shape. A Keras model is traced in
inference mode and frozen the same way, its variables matched to captures by their handles.
One frozen graph is cached (the last model asked for, kept alive with the tensors it was built
from), because the rate layer asks once per sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from nnrconv.core import Model, Tensor, UnsupportedError
from nnrconv_tensorflow import _graphdef, _saved_keys
from nnrconv_tensorflow._family import KERAS
from nnrconv_tensorflow._model import GRAPHDEF, SAVEDMODEL, TFNative

__all__ = ["FlatGraph", "flat_graph"]

SIGNATURE = "serving_default"


@dataclass(frozen=True, slots=True)
class FlatGraph:
    """A model as one flat tf.Graph.

    Attributes:
        graph: the imported graph.
        keys: `Const` node name -> the model tensor whose values it holds.
        feeds: model input name (as `input_specs` names it) -> placeholder tensor name.
    """

    graph: tf.Graph
    keys: dict[str, str]
    feeds: dict[str, str]


_BUILD_ERRORS = (
    tf.errors.OpError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    RuntimeError,
    NotImplementedError,
    AssertionError,
)
_cache: list[tuple[object, tuple[Tensor, ...], FlatGraph]] = []


def flat_graph(model: Model) -> FlatGraph:
    """The model's flat graph, with the values its tensors hold now.

    Raises:
        UnsupportedError: TensorFlow cannot import, load or freeze the model.
    """
    native = model.native
    kind = getattr(native, "kind", None)
    builders = {GRAPHDEF: _from_graph_def, SAVEDMODEL: _from_saved_model, KERAS: _from_keras}
    if kind not in builders:
        raise UnsupportedError(f"a TensorFlow {kind} model has no graph whose layer inputs can be fetched")
    source = {GRAPHDEF: "graph_def", SAVEDMODEL: "saved_model", KERAS: "model"}[kind]
    source = getattr(native, source)
    tensors = tuple(model.tensors.values())
    if _cache and _cache[0][0] is source and _same(_cache[0][1], tensors):
        return _cache[0][2]
    try:
        flat = builders[kind](model)
    except _BUILD_ERRORS as exc:  # loading and freezing raise many kinds; the runner still works
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        raise UnsupportedError(f"TensorFlow cannot build the model's graph: {message.splitlines()[0]}") from exc
    _cache[:] = [(source, tensors, flat)]
    return flat


def _same(cached: tuple[Tensor, ...], tensors: tuple[Tensor, ...]) -> bool:
    return len(cached) == len(tensors) and all(a is b for a, b in zip(cached, tensors, strict=True))


def _import(graph_def: object) -> tf.Graph:
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
    return graph


def _from_graph_def(model: Model) -> FlatGraph:
    from nnrconv_tensorflow._runtime import input_specs

    graph = _import(_graphdef.rebuild(model, strip=()))
    keys = {op.name: op.name for op in graph.get_operations() if op.type == "Const" and op.name in model.tensors}
    return FlatGraph(graph, keys, {spec.name: f"{spec.name}:0" for spec in input_specs(model)})


def _from_saved_model(model: Model) -> FlatGraph:
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from nnrconv_tensorflow._session import in_memory_saved_model

    native: TFNative = model.native
    with in_memory_saved_model(model) as root:
        loaded = tf.saved_model.load(root)
    signatures = loaded.signatures
    if SIGNATURE not in signatures:
        raise UnsupportedError(f"the SavedModel has no {SIGNATURE!r} signature")
    function = signatures[SIGNATURE]
    inputs = function.structured_input_signature[1]
    captured = [placeholder.name.split(":")[0] for _, placeholder in function.graph.captures]
    keys = _saved_keys.capture_keys(native, captured)
    frozen = convert_variables_to_constants_v2(function).graph.as_graph_def()
    graph = _import(frozen)
    feeds = {name: f"{spec.name or name}:0" for name, spec in inputs.items()}
    return FlatGraph(graph, _checked(graph, model, keys), feeds)


def _checked(graph: tf.Graph, model: Model, keys: Mapping[str, str]) -> dict[str, str]:
    """The entries of `keys` naming a `Const` of the graph with its tensor's shape."""
    ops = {op.name: op for op in graph.get_operations()}
    checked = {}
    for name, key in keys.items():
        op, tensor = ops.get(name), model.tensors.get(key)
        if op is None or op.type != "Const" or tensor is None:
            continue
        if tuple(op.outputs[0].shape.as_list()) == tuple(tensor.shape):
            checked[name] = key
    return checked


def _from_keras(model: Model) -> FlatGraph:
    """The Keras model traced in inference mode and frozen; variables matched by their handles."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from nnrconv_tensorflow import _keras

    native = model.native
    _keras._assign(native, model.tensors, "the model")
    keras_model = native.model
    specs = [tf.TensorSpec([None, *t.shape[1:]], t.dtype) for t in keras_model.inputs]
    names = [spec.name for spec in _keras.input_specs(model)]

    def call(*xs: tf.Tensor) -> object:
        return keras_model(list(xs) if len(xs) > 1 else xs[0], training=False)

    function = tf.function(call).get_concrete_function(*specs)
    key_of = {id(v.value.handle): key for v, key in zip(keras_model.weights, native.keys, strict=True)}
    captures = function.graph.captures
    keys = {inner.name.split(":")[0]: key_of[id(outer)] for outer, inner in captures if id(outer) in key_of}
    frozen = convert_variables_to_constants_v2(function)
    graph = _import(frozen.graph.as_graph_def())
    placeholders = [t.name for t in frozen.inputs[: len(names)]]
    return FlatGraph(graph, _checked(graph, model, keys), dict(zip(names, placeholders, strict=True)))


def run(flat: FlatGraph, inputs: Mapping[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """The tensors `names` of one one-thread session run of the flat graph on `inputs`.

    Raises:
        UnsupportedError: an input or a name is no tensor of the graph, or TensorFlow cannot run it.
    """
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
    try:
        fetches = {name: flat.graph.get_tensor_by_name(name) for name in names}
        feed = {flat.graph.get_tensor_by_name(flat.feeds.get(k, f"{k}:0")): v for k, v in inputs.items()}
        with tf.compat.v1.Session(graph=flat.graph, config=config) as session:
            results = session.run(fetches, feed_dict=feed)
    except (tf.errors.OpError, ValueError, KeyError, TypeError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        raise UnsupportedError(f"TensorFlow cannot run the model: {message.splitlines()[0]}") from exc
    return {name: np.asarray(value) for name, value in results.items()}
