# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""ONNX input specs: named free dims, token-id ranges from Gathers, and checks that then run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnrconv
from nnrconv._check import check
from nnrconv.cli import main
from nnrconv.core import get_registry

VOCAB = 300


def _save(path: Path, nodes: list, inputs: list, outputs: list, inits: list) -> Path:
    model = helper.make_model(
        helper.make_graph(nodes, "g", inputs, outputs, inits), opset_imports=[helper.make_opsetid("", 18)]
    )
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _encoder(path: Path) -> Path:
    """Token ids (through a Cast) into a word embedding, a type embedding, a float mask; mean-pooled."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.standard_normal((VOCAB, 16)) * 0.1).astype(np.float32), "word_embeddings"),
        numpy_helper.from_array((rng.standard_normal((2, 16)) * 0.1).astype(np.float32), "type_embeddings"),
        numpy_helper.from_array(np.array([1], np.int64), "axis_last"),
    ]
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids32"], to=TensorProto.INT32),
        helper.make_node("Gather", ["word_embeddings", "ids32"], ["words"]),
        helper.make_node("Gather", ["type_embeddings", "token_type_ids"], ["types"]),
        helper.make_node("Add", ["words", "types"], ["emb"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis_m"], ["mask3"]),
        helper.make_node("Mul", ["emb", "mask3"], ["masked"]),
        helper.make_node("ReduceMean", ["masked", "axis_last"], ["pooled"], keepdims=0),
    ]
    inits.append(numpy_helper.from_array(np.array([-1], np.int64), "axis_m"))
    dims = ["batch", "sequence"]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, dims) for n in ("input_ids", "token_type_ids")]
    inputs.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, dims))
    outputs = [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 16])]
    return _save(path, nodes, inputs, outputs, inits)


def _voice_detector(path: Path) -> Path:
    """A reflect Pad of 32 on a [batch, samples] signal (fails on fewer than 33 samples), then a Conv."""
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(np.array([0, 32, 0, 32], np.int64), "pads"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array((rng.standard_normal((4, 1, 64)) * 0.1).astype(np.float32), "basis"),
    ]
    nodes = [
        helper.make_node("Pad", ["input", "pads"], ["padded"], mode="reflect"),
        helper.make_node("Unsqueeze", ["padded", "axis1"], ["x3"]),
        helper.make_node("Conv", ["x3", "basis"], ["frames"], strides=[32]),
        helper.make_node("ReduceMax", ["frames"], ["prob"], keepdims=0),
    ]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, None])]
    outputs = [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [])]
    return _save(path, nodes, inputs, outputs, inits)


def test_specs_report_named_dims_and_token_ranges(tmp_path: Path) -> None:
    model = nnrconv.load(_encoder(tmp_path / "enc.onnx"))
    specs = {s.name: s for s in get_registry().get("onnx").input_specs(model)}
    assert specs["input_ids"].dims == ("batch", "sequence") and specs["input_ids"].shape == (1, 1)
    assert specs["input_ids"].value_range == (0.0, float(VOCAB))  # through the Cast
    assert specs["token_type_ids"].value_range == (0.0, 2.0)
    assert specs["attention_mask"].value_range is None


def test_check_feeds_token_ids_below_the_vocabulary(tmp_path: Path) -> None:
    path = _encoder(tmp_path / "enc.onnx")
    report = check(path, samples=2, options=nnrconv.nnc.CodingOptions(lossless=True))
    assert report.exact and report.outputs[0].feeds == 2 and report.outputs[0].degenerate is None
    assert "input_ids [1, 64] int64" in report.inputs


def test_check_runs_a_reflect_pad_on_a_long_enough_signal(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _voice_detector(tmp_path / "vad.onnx")
    assert main(["check", str(path), "--json", "--lossless"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["exact"] and "input [1, 16000] float32" in doc["inputs"]
    # One sample of length 1 is what the old default fed: onnxruntime refuses the reflect Pad.
    assert main(["check", str(path), "--json", "--input-shape", "input:1,1"]) == 5
    doc = json.loads(capsys.readouterr().out)
    assert doc["exit_code"] == 5 and "onnxruntime cannot run the model" in doc["error"]


def _needs_height_48(path: Path) -> Path:
    """An image model that only runs when its height is 48 (a Reshape to [1, 3, 48, -1])."""
    inits = [numpy_helper.from_array(np.array([1, 3, 48, -1], np.int64), "rows")]
    inits.append(numpy_helper.from_array(np.full((1, 3, 48, 1), 0.5, np.float32), "scale"))
    nodes = [
        helper.make_node("Reshape", ["x", "rows"], ["r"]),
        helper.make_node("Mul", ["r", "scale"], ["s"]),
        helper.make_node("ReduceMean", ["s"], ["y"], keepdims=0),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "?", "?"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])]
    return _save(path, nodes, inputs, outputs, inits)


def test_check_falls_back_to_text_line_sizes(tmp_path: Path) -> None:
    path = _needs_height_48(tmp_path / "rec.onnx")
    report = check(path, options=nnrconv.nnc.CodingOptions(lossless=True))
    assert report.exact and "x [1, 3, 48, 320] float32 (the default shapes failed to run)" in report.inputs
    # Shapes the user gives are not replaced: the runtime's refusal is the answer.
    with pytest.raises(nnrconv.core.UnsupportedError, match=r"onnxruntime cannot run the model.*--input-shape"):
        check(path, input_shapes={"x": (1, 3, 64, 64)})


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("ch_ppocr_mobile_v2.0_cls_infer.onnx", "x [1, 3, 224, 224]"),
        ("ch_PP-OCRv4_rec_infer.onnx", "x [1, 3, 48, 320]"),  # 224x224 does not run
    ],
)
def test_real_ocr_models_get_inputs_that_run(name: str, shape: str) -> None:
    found = importlib.util.find_spec("rapidocr_onnxruntime")  # importing it needs OpenCV
    if found is None or found.origin is None:
        pytest.skip("rapidocr-onnxruntime is not installed (scripts/setup installs it)")
    path = Path(found.origin).parent / "models" / name
    report = check(path, options=nnrconv.nnc.CodingOptions(qp=-38))
    assert shape in report.inputs and not report.warnings
    assert all(o.degenerate is None and o.cosine is not None and o.cosine > 0.9 for o in report.outputs)
