# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""A small ONNX classifier whose tensors matter unequally, for rate allocation tests.

logits = W3·relu(W1·x + b1) + 0.01·W5·(W4·x): the second branch barely reaches the output, so
one global QP overpays its (large) tensors, while W1, with small weights, is starved by it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _save(path: Path, name: str, nodes: list, weights: dict[str, np.ndarray], input_dims: list) -> Path:
    """An opset-13 ONNX file of `nodes` with input x (`input_dims`), output logits (n, 10), and
    `weights` as initializers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_dims)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def classifier(path: Path) -> Path:
    from onnx import helper

    rng = np.random.default_rng(7)
    weights = {
        "W1": (rng.standard_normal((32, 64)) * 0.02).astype(np.float32),
        "b1": (rng.standard_normal(64) * 0.01).astype(np.float32),
        "W3": (rng.standard_normal((64, 10)) * 3.0).astype(np.float32),
        "W4": (rng.standard_normal((32, 256)) * 0.2).astype(np.float32),
        "W5": (rng.standard_normal((256, 10)) * 0.2).astype(np.float32),
        "s": np.array([0.01], dtype=np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "W3"], ["a"]),
        helper.make_node("MatMul", ["x", "W4"], ["g0"]),
        helper.make_node("MatMul", ["g0", "W5"], ["g1"]),
        helper.make_node("Mul", ["g1", "s"], ["g2"]),
        helper.make_node("Add", ["a", "g2"], ["logits"]),
    ]
    return _save(path, "classifier", nodes, weights, ["n", 32])


def calibration(path: Path, samples: int = 16, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.standard_normal((samples, 32)).astype(np.float32))
    return path


def convnet(path: Path) -> Path:
    """Three convolutions (padding, stride 2, dilation 2) and a MatMul head: what error
    compensation covers, with the geometry its windows must reproduce."""
    from onnx import helper

    rng = np.random.default_rng(11)
    weights = {
        "c1": (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32),
        "c2": (rng.standard_normal((16, 8, 3, 3)) * 0.15).astype(np.float32),
        "c3": (rng.standard_normal((16, 16, 3, 3)) * 0.1).astype(np.float32),
        "fc": (rng.standard_normal((16, 10)) * 0.5).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "c1"], ["h1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("Conv", ["r1", "c2"], ["h2"], pads=[1, 0, 1, 0], strides=[2, 2]),
        helper.make_node("Relu", ["h2"], ["r2"]),
        helper.make_node("Conv", ["r2", "c3"], ["h3"], pads=[2, 2, 2, 2], dilations=[2, 2]),
        helper.make_node("GlobalAveragePool", ["h3"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["logits"]),
    ]
    return _save(path, "convnet", nodes, weights, ["n", 3, 16, 16])


def smooth_images(samples: int, seed: int) -> np.ndarray:
    """Images whose neighbouring pixels are correlated, like photographs (cumulated noise)."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((samples, 3, 16, 16))
    images = np.cumsum(np.cumsum(noise, axis=2), axis=3)
    return (images / images.std(axis=(1, 2, 3), keepdims=True)).astype(np.float32)


def gated(path: Path) -> Path:
    """The classifier's main branch scaled by a squeeze-excitation-like gate that saturates:
    logits = (W3·relu(W1·x)) * hardsigmoid(v·G + c). With G exact the gate's inputs sit just past
    HardSigmoid's knee (z = 3.1, slope 0), so small errors in G move no output at all; G coded
    coarsely (its weights are ±2) un-saturates the gate and scales the logits by up to half."""
    from onnx import helper

    rng = np.random.default_rng(5)
    v = np.ones((1, 8), dtype=np.float32)
    g = (rng.choice([-2.0, 2.0], size=(8, 10)) + rng.standard_normal((8, 10)) * 0.3).astype(np.float32)
    weights = {
        "W1": (rng.standard_normal((32, 64)) * 0.2).astype(np.float32),
        "W3": (rng.standard_normal((64, 10)) * 0.3).astype(np.float32),
        "v": v,
        "G": g,
        "c": (3.1 - v @ g).astype(np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h0"]),
        helper.make_node("Relu", ["h0"], ["h1"]),
        helper.make_node("MatMul", ["h1", "W3"], ["a"]),
        helper.make_node("MatMul", ["v", "G"], ["z0"]),
        helper.make_node("Add", ["z0", "c"], ["z"]),
        helper.make_node("HardSigmoid", ["z"], ["gate"], alpha=1.0 / 6, beta=0.5),
        helper.make_node("Mul", ["a", "gate"], ["logits"]),
    ]
    return _save(path, "gated", nodes, weights, ["n", 32])
