# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""A small ONNX classifier whose tensors matter unequally, for rate allocation tests.

logits = W3·relu(W1·x + b1) + 0.01·W5·(W4·x): the second branch barely reaches the output, so
one global QP overpays its (large) tensors, while W1, with small weights, is starved by it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def classifier(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

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
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def calibration(path: Path, samples: int = 16, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.standard_normal((samples, 32)).astype(np.float32))
    return path
