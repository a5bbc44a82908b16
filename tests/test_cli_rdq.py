# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`--lambda-scale` on the command line: rate-distortion quantization reaches every coding path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnrconv import nnc
from nnrconv.cli import main
from nnrconv.nnc import cabac

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

QPD = 2


def _model(path: Path) -> dict[str, np.ndarray]:
    """y = x @ W + b with a Laplacian W (many small weights: where rate-distortion decisions bite)."""
    rng = np.random.default_rng(7)
    w = (rng.laplace(size=(64, 96)) * 0.02).astype(np.float32)
    b = (rng.standard_normal(96) * 0.05).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "rdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 96])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return {"W": w, "b": b}


def _initializers(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def _run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("dq", ["--dq", "--no-dq"])
def test_convert_with_lambda_round_trips_to_the_rd_levels(tmp_path, capsys, dq):
    source = tmp_path / "m.onnx"
    tensors = _model(source)
    plain, rd, back = tmp_path / "plain.nnr", tmp_path / "m.nnr", tmp_path / "back.onnx"
    assert _run(capsys, "convert", source, plain, "--qp", "-38", dq)[0] == 0
    code, _, err = _run(capsys, "convert", source, rd, "--qp", "-38", dq, "--lambda-scale", "1")
    assert code == 0, err
    assert _run(capsys, rd, back)[0] == 0
    decoded = _initializers(back)
    for name, qp in (("W", -38), ("b", -38 - 2 * (1 << QPD))):  # 1-D: NNCodec's non-weight QP
        w = tensors[name]
        # exactly the levels of the library's RD quantizer with the header's unary length
        q = cabac.quantize(w, qp, QPD, dq_flag=dq == "--dq", lambda_scale=1.0, cabac_unary_length_minus1=10)
        np.testing.assert_array_equal(decoded[name], cabac.dequantize(q.levels, q.qp, QPD))
        # every weight went to a nearby level or to zero
        step = cabac.step_size(qp, QPD)
        err = np.abs(decoded[name].astype(np.float64) - w)
        assert np.all(err <= np.maximum(np.abs(w), 3 * step) + 1e-9)
    assert nnc.snr_db(tensors["W"], decoded["W"]) > 25
    assert rd.stat().st_size < plain.stat().st_size  # the rate term bought bits


def test_lambda_with_snr_search_still_meets_the_target(tmp_path, capsys):
    source = tmp_path / "m.onnx"
    tensors = _model(source)
    target, back = tmp_path / "m.nnr", tmp_path / "back.onnx"
    assert _run(capsys, source, target, "--snr", "30", "--lambda-scale", "2")[0] == 0
    assert _run(capsys, target, back)[0] == 0
    assert nnc.snr_db(tensors["W"], _initializers(back)["W"]) >= 30


def test_check_accepts_lambda(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    source = tmp_path / "m.onnx"
    _model(source)
    sizes = {}
    for lam in ("0", "2"):
        code, out, err = _run(capsys, "check", source, "--qp", "-38", "--lambda-scale", lam, "--json")
        assert code == 0, err
        report = json.loads(out)
        assert report["exact"] is False and report["runnable"] is True
        sizes[lam] = report["sizes"]["nnr_bytes"]
    assert sizes["2"] < sizes["0"]


@pytest.mark.parametrize(
    "args, message",
    [
        (("--qp", "-38", "--lambda-scale", "-1"), "Invalid value for '--lambda-scale': -1.0 is not in the range x>=0"),
        (("--lambda-scale", "-0.5"), "Invalid value for '--lambda-scale'"),
        (("--lambda-scale", "nan"), "lambda_scale nan is not 0 or in"),
        (("--lambda-scale", "1e-30"), "lambda_scale 1e-30 is not 0 or in"),
        (("--lambda-scale", "x"), "'x' is not a valid float"),
        (("--lambda-scale", "1", "--lossless"), "--lambda-scale quantizes"),
    ],
)
def test_bad_lambda_is_a_one_line_usage_error(tmp_path, capsys, args, message):
    source = tmp_path / "m.onnx"
    _model(source)
    code, out, err = _run(capsys, "convert", source, tmp_path / "m.nnr", *args)
    assert code == 2
    assert out == ""
    (line,) = [line for line in err.splitlines() if line.startswith("Error")]  # click's usage block, one error
    assert message in line
    assert not (tmp_path / "m.nnr").exists()
