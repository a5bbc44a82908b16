# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""TensorFlow models ready for inference, built in memory: a `ConcreteFunction` per model.

NOTE: a frozen graph is imported into a `tf.compat.v1.wrap_function` and pruned to its inputs
and outputs. TensorFlow loads a SavedModel only from a path, so its files and its variables
checkpoint are written to TensorFlow's in-memory file system (``ram://``, the one Keras uses to
pickle models), loaded from there, and deleted once loaded: no plain model touches the disk.
The serving signature keeps the loaded object (and so the variables) alive.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import tensorflow as tf

from nnrconv.core import FormatError, Model, UnsupportedError
from nnrconv_tensorflow import _graphdef, _savedmodel
from nnrconv_tensorflow._model import GRAPHDEF, TFNative

__all__ = ["concrete_function", "in_memory_saved_model"]

SIGNATURE = "serving_default"


def concrete_function(model: Model) -> Any:
    """The model as a `tf.types.experimental.ConcreteFunction`.

    A frozen graph's function takes the inputs positionally (in `input_specs` order) and returns
    a dict of its outputs; a SavedModel's is its serving signature (keyword inputs).

    Raises:
        UnsupportedError: TensorFlow cannot import or load the model.
    """
    native: TFNative = model.native
    try:
        if native.kind == GRAPHDEF:
            return _wrapped_graph(model)
        with in_memory_saved_model(model) as root:
            loaded = tf.saved_model.load(root)
    except (tf.errors.OpError, ValueError, KeyError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        raise UnsupportedError(f"TensorFlow cannot load the model: {message.splitlines()[0]}") from exc
    signatures = loaded.signatures
    if not signatures:
        raise UnsupportedError("the SavedModel has no signature to run")
    function = signatures[SIGNATURE if SIGNATURE in signatures else sorted(signatures)[0]]
    function._nnrconv_loaded = loaded  # the variables live as long as the loaded object
    return function


def _wrapped_graph(model: Model) -> Any:
    from nnrconv_tensorflow._runtime import input_specs, output_nodes

    graph_def = _graphdef.rebuild(model, strip=())
    wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
    graph = wrapped.graph
    feeds = [graph.get_tensor_by_name(f"{spec.name}:0") for spec in input_specs(model)]
    fetches = {}
    for node in output_nodes(graph_def):
        for index, output in enumerate(graph.get_operation_by_name(node.name).outputs):
            if output.dtype not in (tf.resource, tf.variant):
                fetches[f"{node.name}:{index}" if index else node.name] = output
    return wrapped.prune(feeds, fetches)


@contextlib.contextmanager
def in_memory_saved_model(model: Model) -> Iterator[str]:
    """Write the SavedModel to a fresh ``ram://`` folder; yield its path; delete it afterwards.

    Raises:
        FormatError: a tensor does not fit its checkpoint entry.
    """
    native: TFNative = model.native
    root = f"ram://nnrconv-{uuid.uuid4().hex}"
    try:
        for relative, data in native.files.items():
            target = f"{root}/{relative}"
            tf.io.gfile.makedirs(os.path.dirname(target))
            with tf.io.gfile.GFile(target, "wb") as file:
                file.write(data)
        prefix = f"{root}/{native.prefix}"
        tf.io.gfile.makedirs(os.path.dirname(prefix))
        if native.entries:
            names, values = _savedmodel.checkpoint_values(model, "SavedModel")
            try:
                with tf.device("/cpu:0"):
                    tf.raw_ops.SaveV2(
                        prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names), tensors=values
                    )
            except tf.errors.OpError as exc:
                raise FormatError(f"cannot write the variables checkpoint in memory: {exc.message}") from exc
        yield root
    finally:
        if tf.io.gfile.exists(root):
            tf.io.gfile.rmtree(root)
