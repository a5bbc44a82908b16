# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Running TensorFlow models for round-trip checks: one graph-mode session, one thread.

NOTE: both kinds run through `tf.compat.v1.Session` with one inter-op and one intra-op thread,
configured per session (eager threading can only be set once per process). A SavedModel is
written to TensorFlow's in-memory file system (``ram://``, see `_session`) and loaded with the v1
SavedModel loader, which restores the
variables from the checkpoint through the graph's saver and needs none of the Python objects.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from nnrconv.core import InputSpec, Model, UnsupportedError
from nnrconv_tensorflow import _graphdef, _savedmodel
from nnrconv_tensorflow._model import GRAPHDEF, TFNative
from nnrconv_tensorflow._tensors import TF_TO_DTYPE

__all__ = ["input_specs", "run"]

SIGNATURE = "serving_default"
_CONTROL_FLOW = frozenset({"Exit", "Enter", "Switch", "Merge", "NextIteration", "LoopCond"})
_NOT_OUTPUTS = _CONTROL_FLOW | {"Const", "Placeholder", "NoOp", "Assert"}


def _config() -> tf.compat.v1.ConfigProto:
    return tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)


def _dims(shape_proto: object) -> tuple[int, ...]:
    if shape_proto.unknown_rank:  # type: ignore[attr-defined]
        raise UnsupportedError("an input of unknown rank cannot be fed by the TensorFlow runner")
    return tuple(d.size if d.size > 0 else 1 for d in shape_proto.dim)  # type: ignore[attr-defined]


def _spec(name: str, tf_dtype: int, shape_proto: object) -> InputSpec:
    dtype = TF_TO_DTYPE.get(tf_dtype)
    if dtype is None:
        raise UnsupportedError(f"input {name!r} has TensorFlow type {tf_dtype}, which the runner cannot feed")
    dims = tuple(d.size if d.size > 0 else None for d in shape_proto.dim)  # type: ignore[attr-defined]
    return InputSpec(name, dtype, _dims(shape_proto), dims)


def _consumed(graph_def: object) -> set[str]:
    return {i.split(":")[0] for n in graph_def.node for i in n.input if not i.startswith("^")}  # type: ignore[attr-defined]


def _signature(native: TFNative):  # type: ignore[no-untyped-def]
    signatures = _savedmodel.meta_graph(native.saved_model).signature_def
    if SIGNATURE in signatures:
        return signatures[SIGNATURE]
    if not signatures:
        raise UnsupportedError("the SavedModel has no signature; the TensorFlow runner needs one")
    return signatures[sorted(signatures)[0]]


def input_specs(model: Model) -> list[InputSpec]:
    """Signature inputs (SavedModel) or consumed Placeholders (frozen graph); free dimensions -> 1."""
    native: TFNative = model.native
    if native.kind == GRAPHDEF:
        used = _consumed(native.graph_def)
        return [
            _spec(n.name, n.attr["dtype"].type, n.attr["shape"].shape)
            for n in native.graph_def.node
            if n.op == "Placeholder" and n.name in used
        ]
    return [_spec(name, info.dtype, info.tensor_shape) for name, info in sorted(_signature(native).inputs.items())]


def run(model: Model, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs by name: signature output keys (SavedModel) or unconsumed op outputs (frozen graph).

    Raises:
        UnsupportedError: TensorFlow cannot import, load or run the model.
    """
    native: TFNative = model.native
    try:
        if native.kind == GRAPHDEF:
            return _run_graph(model, inputs)
        return _run_saved_model(model, inputs)
    except (tf.errors.OpError, ValueError, KeyError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        raise UnsupportedError(f"TensorFlow cannot run the model: {message.splitlines()[0]}") from exc


def output_nodes(graph_def: object) -> list[object]:
    """A frozen graph's outputs: nodes nothing consumes, outside control-flow frames.

    Lowered while loops leave unconsumed bookkeeping nodes fed by Switch/Exit; they are no outputs.
    """
    used = _consumed(graph_def)
    ops = {n.name: n.op for n in graph_def.node}  # type: ignore[attr-defined]
    outputs = []
    for node in graph_def.node:  # type: ignore[attr-defined]
        if node.name in used or node.op in _NOT_OUTPUTS:
            continue
        sources = {ops.get(i.split(":")[0].lstrip("^"), "") for i in node.input if not i.startswith("^")}
        if sources & _CONTROL_FLOW:
            continue
        outputs.append(node)
    return outputs


def _run_graph(model: Model, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    graph_def = _graphdef.rebuild(model, strip=())
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
        fetches = {}
        for node in output_nodes(graph_def):
            for index, output in enumerate(graph.get_operation_by_name(node.name).outputs):
                if output.dtype not in (tf.resource, tf.variant):
                    fetches[f"{node.name}:{index}" if index else node.name] = output
        feed = {graph.get_tensor_by_name(f"{name}:0"): value for name, value in inputs.items()}
        with tf.compat.v1.Session(graph=graph, config=_config()) as session:
            results = session.run(fetches, feed_dict=feed)
    return {k: np.asarray(v) for k, v in results.items()}


def _run_saved_model(model: Model, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    from nnrconv_tensorflow._session import in_memory_saved_model

    native: TFNative = model.native
    with in_memory_saved_model(model) as folder:
        try:
            return _run_v1(native, folder, inputs)
        except (tf.errors.OpError, ValueError, KeyError, RuntimeError):
            # Some TF2 SavedModels restore their variables only through the object graph.
            return _run_v2(native, folder, inputs)


def _run_v1(native: TFNative, folder: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The v1 loader in a one-thread session: variables restored by the graph's own saver."""
    signature = _signature(native)
    tags = list(_savedmodel.meta_graph(native.saved_model).meta_info_def.tags)
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph, config=_config()) as session:
        tf.compat.v1.saved_model.loader.load(session, tags, folder)
        feed = {graph.get_tensor_by_name(signature.inputs[k].name): v for k, v in inputs.items()}
        fetches = {k: graph.get_tensor_by_name(info.name) for k, info in signature.outputs.items()}
        results = session.run(fetches, feed_dict=feed)
    return {k: np.asarray(v) for k, v in results.items()}


def _run_v2(native: TFNative, folder: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`tf.saved_model.load` and the signature function (eager; threads limited when still possible)."""
    with contextlib.suppress(RuntimeError):  # only possible before TensorFlow's runtime starts
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.threading.set_intra_op_parallelism_threads(1)
    loaded = tf.saved_model.load(folder)
    signatures = loaded.signatures
    name = SIGNATURE if SIGNATURE in signatures else sorted(signatures)[0]
    results = signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in results.items()}
