# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Models built for the ONNX plugin tests: torch exports and onnx.helper graphs."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def torch_model(kind: str, path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A torch CNN with batch norm ("cnn") or an MLP ("mlp"), exported with the TorchScript exporter.

    The CNN puts BatchNorm after a ReLU so that export does not fold it into the convolution.
    """
    import torch

    torch.manual_seed(0)
    nn = torch.nn
    if kind == "cnn":
        net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.BatchNorm2d(8),
            nn.Conv2d(8, 4, 3, stride=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(4 * 7 * 7, 10),
        )
        example = torch.randn(2, 3, 16, 16)
        with torch.no_grad():  # non-trivial running statistics
            net[2].running_mean.uniform_(-0.5, 0.5)
            net[2].running_var.uniform_(0.5, 2.0)
    else:
        net = nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3))
        example = torch.randn(4, 20)
    net.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # dynamo=False: the torch.export-based exporter needs onnxscript, which is not installed.
        torch.onnx.export(net, (example,), buffer, dynamo=False, input_names=["x"], output_names=["y"])
    path.write_bytes(buffer.getvalue())
    return path, {"x": example.numpy()}


def _float(name: str, shape: tuple[int, ...], seed: int) -> TensorProto:
    return numpy_helper.from_array(_rng(seed).standard_normal(shape).astype(np.float32), name)


def constants_model(path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """Weights in Constant nodes only (no initializers), including a 0-d scalar."""
    nodes = [
        helper.make_node("Constant", [], ["W"], value=_float("W", (6, 4), 1)),
        helper.make_node("Constant", [], ["b"], value=_float("b", (4,), 2)),
        helper.make_node("Constant", [], ["s"], value=numpy_helper.from_array(np.array(1.5, np.float32))),
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["h2"]),
        helper.make_node("Mul", ["h2", "s"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "constants",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    return _save(model, path), {"x": _rng(9).standard_normal((3, 6)).astype(np.float32)}


def if_model(path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """An If whose branches hold their own initializers and Constant nodes, with a colliding name."""

    def branch(name: str, seed: int) -> onnx.GraphProto:
        return helper.make_graph(
            [
                helper.make_node("Constant", [], [f"{name}_c"], value=_float(f"{name}_c", (4,), seed + 1)),
                helper.make_node("MatMul", ["x", "W"], [f"{name}_h"]),
                helper.make_node("Add", [f"{name}_h", f"{name}_c"], [f"{name}_y"]),
            ],
            name,
            [],
            [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [2, 4])],
            # Both branches call their weight "W": keys must tell them apart.
            initializer=[_float("W", (5, 4), seed)],
        )

    nodes = [
        helper.make_node("ReduceSum", ["x"], ["sum"], keepdims=0),
        helper.make_node("Greater", ["sum", "zero"], ["cond"]),
        helper.make_node(
            "If", ["cond"], ["y"], then_branch=branch("then", 10), else_branch=branch("else", 20), name="if0"
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "if_graph",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        initializer=[numpy_helper.from_array(np.array(0.0, np.float32), "zero")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    return _save(model, path), {"x": _rng(3).standard_normal((2, 5)).astype(np.float32)}


def loop_model(path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A Loop whose body multiplies the carried state by a weight held in the body."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("MatMul", ["state_in", "Wl"], ["mm"]),
            helper.make_node("Constant", [], ["bl"], value=_float("bl", (3,), 31)),
            helper.make_node("Add", ["mm", "bl"], ["pre"]),
            helper.make_node("Tanh", ["pre"], ["state_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("iter", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_in", TensorProto.FLOAT, [1, 3]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [1, 3]),
        ],
        initializer=[_float("Wl", (3, 3), 30)],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trip", "cond", "x"], ["y"], body=body)],
        "loop_graph",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        initializer=[
            numpy_helper.from_array(np.array(3, np.int64), "trip"),
            numpy_helper.from_array(np.array(True), "cond"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    return _save(model, path), {"x": _rng(4).standard_normal((1, 3)).astype(np.float32)}


# (name, data_type, values) of the non-float32 initializers; all must stay in the topology.
MIXED_INITIALIZERS: list[tuple[str, int, list]] = [
    ("i64", TensorProto.INT64, [-(2**40), 0, 7, 2**62]),
    ("f16", TensorProto.FLOAT16, [0.5, -2.0, 65504.0, 1e-4]),
    ("bf16", TensorProto.BFLOAT16, [1.0, -3.5, 1e30, 0.0]),
    ("i8", TensorProto.INT8, [-128, -1, 0, 127]),
    ("u8", TensorProto.UINT8, [0, 1, 200, 255]),
    ("boolean", TensorProto.BOOL, [True, False, True, True]),
    ("i4", TensorProto.INT4, [-8, -1, 0, 7, 3]),
    ("u4", TensorProto.UINT4, [0, 15, 9]),
    ("f8", TensorProto.FLOAT8E4M3FN, [1.0, -2.0, 0.25, 448.0]),
    ("f64", TensorProto.DOUBLE, [np.pi, -1e300, 0.0]),
    ("u64", TensorProto.UINT64, [0, 2**64 - 1]),
    ("u32", TensorProto.UINT32, [0, 2**32 - 1]),
    ("i16", TensorProto.INT16, [-32768, 32767]),
    ("c64", TensorProto.COMPLEX64, [1 + 2j, -3j]),
    ("text", TensorProto.STRING, [b"hello", b"", "\u00e9t\u00e9".encode()]),
]


def mixed_model(path: Path, *, raw: bool) -> tuple[Path, dict[str, np.ndarray]]:
    """float32 weights next to initializers of every other kind (raw_data or typed fields).

    The graph only computes with the float32 weight; the others ride along as unused
    initializers, which onnxruntime accepts.
    """
    initializers = [_float("w", (4, 4), 5)]
    for name, data_type, values in MIXED_INITIALIZERS:
        tensor = helper.make_tensor(name, data_type, [len(values)], values)
        if raw and data_type != TensorProto.STRING:
            # numpy_helper packs sub-byte types and writes 16/8-bit floats as their bits.
            tensor = numpy_helper.from_array(numpy_helper.to_array(tensor), name)
        initializers.append(tensor)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "mixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    return _save(model, path), {"x": _rng(6).standard_normal((2, 4)).astype(np.float32)}

