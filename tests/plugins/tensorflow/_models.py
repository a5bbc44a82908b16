# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Generated tf.keras models (CNN with batch norm, LSTM, MLP), saved as SavedModels and frozen graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

KINDS = ("cnn", "lstm", "mlp")
BATCH = 2


def keras_model(kind: str):  # type: ignore[no-untyped-def]
    """A small seeded keras model whose batch-norm statistics are not the trivial 0/1."""
    import keras

    keras.utils.set_random_seed(0)
    layers = keras.layers
    if kind == "cnn":
        model = keras.Sequential(
            [
                keras.Input((8, 8, 3), name="image"),
                layers.Conv2D(4, 3, padding="same"),
                layers.BatchNormalization(),
                layers.ReLU(),
                layers.DepthwiseConv2D(3, padding="same"),
                layers.GlobalAveragePooling2D(),
                layers.Dense(5),
            ]
        )
        bn = model.layers[1]
        rng = np.random.default_rng(1)
        bn.moving_mean.assign(rng.standard_normal(4).astype(np.float32))
        bn.moving_variance.assign(rng.uniform(0.5, 2.0, 4).astype(np.float32))
    elif kind == "lstm":
        model = keras.Sequential([keras.Input((5, 3), name="sequence"), layers.LSTM(6), layers.Dense(2)])
    elif kind == "mlp":
        model = keras.Sequential(
            [keras.Input((10,), name="features"), layers.Dense(16, activation="relu"), layers.Dense(3)]
        )
    else:
        raise ValueError(kind)
    return model


def sample_input(kind: str) -> np.ndarray:
    shape = {"cnn": (BATCH, 8, 8, 3), "lstm": (BATCH, 5, 3), "mlp": (BATCH, 10)}[kind]
    return np.random.default_rng(7).standard_normal(shape).astype(np.float32)


def _spec(model):  # type: ignore[no-untyped-def]
    import tensorflow as tf

    return tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32, name=model.inputs[0].name)


def saved_model(kind: str, path: Path, *, export: bool = True) -> Path:
    """Save with keras `model.export` or with `tf.saved_model.save` and an explicit signature."""
    import tensorflow as tf

    model = keras_model(kind)
    if export:
        model.export(str(path), format="tf_saved_model", verbose=False)
    else:
        function = tf.function(lambda x: {"output": model(x)}, input_signature=[_spec(model)])
        module = tf.Module()
        module.model = model
        module.serve = function
        tf.saved_model.save(module, str(path), signatures={"serving_default": function})
    return path


def frozen_graph(kind: str, path: Path) -> Path:
    """Freeze the model's forward function with convert_variables_to_constants_v2."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    model = keras_model(kind)
    concrete = tf.function(lambda x: model(x)).get_concrete_function(_spec(model))
    frozen = convert_variables_to_constants_v2(concrete)
    path.write_bytes(frozen.graph.as_graph_def().SerializeToString())
    return path


def _const(graph_def, name: str, **fields):  # type: ignore[no-untyped-def]
    """Append a Const node whose TensorProto is given field by field (typed value lists)."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2

    shape = fields.pop("shape")
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape]
    proto = tensor_pb2.TensorProto(tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims), **fields)
    node = graph_def.node.add(name=name, op="Const")
    node.attr["dtype"].type = proto.dtype
    node.attr["value"].tensor.CopyFrom(proto)
    out = graph_def.node.add(name=f"{name}_out", op="Identity", input=[name])
    out.attr["T"].type = proto.dtype


# name -> TensorProto fields of the constants in `dtypes_graph`, stored the ways writers store them.
TYPED_CONSTANTS = {
    "f32_broadcast": {"dtype": 1, "shape": (3, 2), "float_val": [0.25]},
    "f32_typed": {"dtype": 1, "shape": (3,), "float_val": [1.5, -0.0, 3.0e-39]},
    "f64": {"dtype": 2, "shape": (2,), "double_val": [1e300, -2.5]},
    "f16_bits": {"dtype": 19, "shape": (3,), "half_val": [0x3C00, 0x7BFF, 0x0001]},
    "bf16_bits": {"dtype": 14, "shape": (2,), "half_val": [0x3F80, 0xFF7F]},
    "i8": {"dtype": 6, "shape": (3,), "int_val": [-128, 0, 127]},
    "u8": {"dtype": 4, "shape": (2,), "int_val": [0, 255]},
    "i64": {"dtype": 9, "shape": (2,), "int64_val": [-(2**63), 2**63 - 1]},
    "boolean": {"dtype": 10, "shape": (3,), "bool_val": [True, False, True]},
    "text": {"dtype": 7, "shape": (2,), "string_val": [b"a\x00b", b""]},
    "c64": {"dtype": 8, "shape": (1,), "scomplex_val": [1.0, -2.0]},
    "i32_empty_is_zeros": {"dtype": 3, "shape": (2,)},
}


def dtypes_graph(path: Path) -> Path:
    """A graph y = x @ w (+ b) plus constants of every element type, in content and typed fields."""
    import tensorflow as tf

    rng = np.random.default_rng(3)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
        w = tf.constant(rng.standard_normal((4, 3)).astype(np.float32), name="w")
        b = tf.constant(rng.standard_normal(3).astype(np.float32), name="b")
        tf.nn.bias_add(tf.matmul(x, w), b, name="y")
        tf.identity(tf.constant(rng.standard_normal(5).astype(np.float16), name="f16_content"), name="f16_out")
    graph_def = graph.as_graph_def()
    for name, fields in TYPED_CONSTANTS.items():
        _const(graph_def, name, **dict(fields))
    path.write_bytes(graph_def.SerializeToString())
    return path
