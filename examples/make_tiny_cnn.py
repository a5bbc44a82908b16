# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Regenerate `tiny_cnn.onnx`, the bundled example: a small image classifier with batch norm.

The weights are seeded random numbers shaped like a trained network's (He-scaled kernels,
small biases), so the file is reproducible and free of third-party licences.
Run: python examples/make_tiny_cnn.py
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build() -> onnx.ModelProto:
    rng = np.random.default_rng(20261123)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        fan_in = int(np.prod(shape[1:]))
        data = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape).astype(np.float32)
        return numpy_helper.from_array(data, name)

    def vector(name: str, n: int, mean: float, spread: float) -> onnx.TensorProto:
        return numpy_helper.from_array((mean + spread * rng.standard_normal(n)).astype(np.float32), name)

    inits = [
        weight("conv1.weight", 16, 3, 3, 3),
        vector("bn1.weight", 16, 1.0, 0.1),
        vector("bn1.bias", 16, 0.0, 0.1),
        vector("bn1.running_mean", 16, 0.0, 0.2),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 16).astype(np.float32), "bn1.running_var"),
        weight("conv2.weight", 32, 16, 3, 3),
        vector("conv2.bias", 32, 0.0, 0.05),
        weight("fc.weight", 10, 32),
        vector("fc.bias", 10, 0.0, 0.05),
        numpy_helper.from_array(np.array([1, 32], dtype=np.int64), "flatten_shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv1.weight"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node(
            "BatchNormalization",
            ["c1", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"],
            ["b1"],
            name="bn1",
        ),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        helper.make_node("Conv", ["p1", "conv2.weight", "conv2.bias"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Reshape", ["g", "flatten_shape"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="nnrconv-example")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


if __name__ == "__main__":
    target = Path(__file__).with_name("tiny_cnn.onnx")
    onnx.save(build(), target)
    print(f"wrote {target} ({target.stat().st_size} bytes)")
