# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Generated Keras files (`.keras`, legacy `.h5`) and TFLite flatbuffers (float and int8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def keras_model():  # type: ignore[no-untyped-def]
    """Layers named explicitly, so variable paths do not depend on what Keras built before.

    Conv + batch norm (non-trivial statistics) + GRU + LSTM + Dense, seeded."""
    import keras

    keras.utils.set_random_seed(3)
    layers = keras.layers
    image = keras.Input((6, 6, 3), name="image")
    x = layers.Conv2D(4, 3, name="conv")(image)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU()(x)
    x = layers.Reshape((16, 4))(x)
    x = layers.GRU(5, return_sequences=True, name="gru")(x)
    x = layers.LSTM(6, name="lstm")(x)
    model = keras.Model(image, layers.Dense(3, name="dense")(x), name="family_cnn")
    bn = model.layers[2]
    rng = np.random.default_rng(1)
    bn.moving_mean.assign(rng.standard_normal(4).astype(np.float32))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, 4).astype(np.float32))
    return model


def keras_input() -> np.ndarray:
    return np.random.default_rng(5).standard_normal((2, 6, 6, 3)).astype(np.float32)


def save_keras(folder: Path) -> dict[str, Path]:
    """The model as `.keras` and as legacy `.h5`."""
    model = keras_model()
    paths = {"keras": folder / "family.keras", "h5": folder / "family.h5"}
    for path in paths.values():
        model.save(path)
    return paths


def lambda_model(folder: Path) -> dict[str, Path]:
    """A model with a Lambda layer holding Python code, in both file kinds."""
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(lambda t: t * 2)])
    paths = {"keras": folder / "lambda.keras", "h5": folder / "lambda.h5"}
    for path in paths.values():
        model.save(path)
    return paths


def cnn_for_tflite():  # type: ignore[no-untyped-def]
    import keras

    keras.utils.set_random_seed(4)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3), name="image"),
            layers.Conv2D(6, 3, padding="same"),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.DepthwiseConv2D(3),
            layers.GlobalAveragePooling2D(),
            layers.Dense(16, activation="relu"),
            layers.Dense(5),
        ]
    )
    return model


def save_tflite(folder: Path) -> dict[str, Path]:
    """A float TFLite model and a full-integer (int8 in, int8 out) one from the same Keras CNN."""
    import tensorflow as tf

    model = cnn_for_tflite()
    paths = {"float": folder / "cnn.tflite", "int8": folder / "cnn_int8.tflite"}
    paths["float"].write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    rng = np.random.default_rng(2)

    def representative():  # type: ignore[no-untyped-def]
        for _ in range(16):
            yield [rng.standard_normal((1, 8, 8, 3)).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    paths["int8"].write_bytes(converter.convert())
    return paths
