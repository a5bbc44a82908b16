# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Transformer-style ONNX models whose attention-mask constants hold ±3.4e38 convert, lossless and lossy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnrconv.cli import main

F32_MIN = float(np.finfo(np.float32).min)


def _attention_model(path: Path, *, in_constant_nodes: bool) -> Path:
    """x·Wq, x·Wk → scores + (1 - mask)·FLOAT_MIN → Softmax → ·(x·Wv), as sentence encoders export it."""
    rng = np.random.default_rng(0)
    dim, seq = 32, 8
    weights = {name: (rng.standard_normal((dim, dim)) * 0.1).astype(np.float32) for name in ("wq", "wk", "wv")}
    constants = {
        **weights,
        "bias": (rng.standard_normal(dim) * 0.01).astype(np.float32),
        "one": np.array(1.0, np.float32),
        "mask_fill": np.array(F32_MIN, np.float32),  # (1 - mask) * finfo.min
        "causal": np.triu(np.full((seq, seq), F32_MIN, np.float32), 1),  # a whole mask tensor
        "scale": np.array(1.0 / np.sqrt(dim), np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("MatMul", ["x", "wk"], ["k"]),
        helper.make_node("MatMul", ["x", "wv"], ["v0"]),
        helper.make_node("Add", ["v0", "bias"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["s0"]),
        helper.make_node("Mul", ["s0", "scale"], ["s1"]),
        helper.make_node("Sub", ["one", "mask"], ["inv"]),
        helper.make_node("Mul", ["inv", "mask_fill"], ["pad"]),
        helper.make_node("Unsqueeze", ["pad", "axis1"], ["pad3"]),
        helper.make_node("Add", ["s1", "pad3"], ["s2"]),
        helper.make_node("Add", ["s2", "causal"], ["s3"]),
        helper.make_node("Softmax", ["s3"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["y"]),
    ]
    initializers = [numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    if in_constant_nodes:
        nodes = [
            helper.make_node("Constant", [], [n], value=numpy_helper.from_array(a, n)) for n, a in constants.items()
        ] + nodes
    else:
        initializers += [numpy_helper.from_array(a, n) for n, a in constants.items()]
    graph = helper.make_graph(
        nodes,
        "attention",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, dim]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, seq]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, seq, dim])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _run(path: Path) -> np.ndarray:
    rng = np.random.default_rng(1)
    feeds = {
        "x": rng.standard_normal((1, 8, 32)).astype(np.float32),
        "mask": np.array([[1, 1, 1, 1, 1, 0, 0, 0]], np.float32),
    }
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _tensors(path: Path) -> dict[str, bytes]:
    model = onnx.load(path)
    found = {i.name: numpy_helper.to_array(i).tobytes() for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            found[node.output[0]] = numpy_helper.to_array(node.attribute[0].t).tobytes()
    return found


@pytest.mark.parametrize("in_constant_nodes", [False, True])
def test_lossless_is_bit_exact(tmp_path: Path, in_constant_nodes: bool) -> None:
    source = _attention_model(tmp_path / "attn.onnx", in_constant_nodes=in_constant_nodes)
    assert main([str(source), str(tmp_path / "attn.nnr"), "--lossless", "-q"]) == 0
    assert main([str(tmp_path / "attn.nnr"), str(tmp_path / "back.onnx"), "-q"]) == 0
    assert _tensors(tmp_path / "back.onnx") == _tensors(source)
    assert np.array_equal(_run(tmp_path / "back.onnx"), _run(source))


@pytest.mark.parametrize("extra", [[], ["--qp", "-38"]])
@pytest.mark.parametrize("in_constant_nodes", [False, True])
def test_lossy_outputs_stay_close(tmp_path: Path, in_constant_nodes: bool, extra: list[str]) -> None:
    source = _attention_model(tmp_path / "attn.onnx", in_constant_nodes=in_constant_nodes)
    assert main([str(source), str(tmp_path / "attn.nnr"), "-q", *extra]) == 0
    assert main([str(tmp_path / "attn.nnr"), str(tmp_path / "back.onnx"), "-q"]) == 0
    before, after = _run(source), _run(tmp_path / "back.onnx")
    assert np.all(np.isfinite(after))
    assert np.allclose(after, before, atol=0.02, rtol=0.02)
    restored = _tensors(tmp_path / "back.onnx")
    original = _tensors(source)
    for name in ("mask_fill", "causal"):  # the sentinels come back exactly
        assert restored[name] == original[name], name
