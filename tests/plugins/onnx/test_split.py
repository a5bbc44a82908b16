# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`nnrconv split MODEL --at TENSORS HEAD TAIL`: TAIL(HEAD(x)) = MODEL(x), on generated models
and the real PP-OCR models (rapidocr), each part in any output format."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import nnrconv  # noqa: E402
from nnrconv.cli import main  # noqa: E402


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _through(model: Path, head: Path, tail: Path, feeds: dict[str, np.ndarray]) -> tuple[list, list]:
    """MODEL(x) and TAIL(HEAD(x)), the tail fed the head's outputs and the inputs it declares."""
    whole = _session(model).run(None, feeds)
    head_session = _session(head)
    cut = dict(zip([o.name for o in head_session.get_outputs()], head_session.run(None, feeds), strict=True))
    tail_session = _session(tail)
    tail_feeds = {i.name: cut[i.name] if i.name in cut else feeds[i.name] for i in tail_session.get_inputs()}
    return whole, tail_session.run(None, tail_feeds)


def _skip_model(path: Path) -> Path:
    """x -> Conv -> h -> Relu -> a -> Mul(0.5) -> b; y = b + h (a skip connection over a and b)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    half = numpy_helper.from_array(np.array(0.5, np.float32), "half")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h"], ["a"]),
        helper.make_node("Mul", ["a", "half"], ["b"]),
        helper.make_node("Add", ["b", "h"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "skip",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [w, half],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_crossing_cut_is_refused_listing_the_tensors(tmp_path, capsys):
    model = _skip_model(tmp_path / "m.onnx")
    code, _, err = run(capsys, "split", model, tmp_path / "h.onnx", tmp_path / "t.onnx", "--at", "b")
    assert code == 5 and "1 other tensors crossing it: 'h'" in err
    assert not (tmp_path / "h.onnx").exists() and not (tmp_path / "t.onnx").exists()
    code, _, err = run(capsys, "split", model, tmp_path / "h.onnx", tmp_path / "t.onnx", "--at", "nope")
    assert code == 5 and "'nope': not the output of any node" in err


def test_split_with_every_crossing_tensor_runs_the_same(tmp_path, capsys):
    model = _skip_model(tmp_path / "m.onnx")
    head, tail = tmp_path / "h.onnx", tmp_path / "t.onnx"
    code, out, err = run(capsys, "split", model, head, tail, "--at", "b,h")
    assert code == 0, err
    assert "cut at b, h" in out
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    whole, parts = _through(model, head, tail, feeds)
    np.testing.assert_array_equal(whole[0], parts[0])
    assert [i.name for i in _session(tail).get_inputs()] == ["b", "h"]
    # existing outputs are kept without --force
    code, _, err = run(capsys, "split", model, head, tail, "--at", "b,h")
    assert code == 7


def test_the_tail_takes_graph_inputs_it_still_needs(tmp_path, capsys):
    """A cut right after the first node: y = b + h needs nothing but h, so the tail takes h only;
    a model whose tail also reads x takes x too."""
    model = _skip_model(tmp_path / "m.onnx")
    proto = onnx.load(str(model))
    proto.graph.node.append(helper.make_node("Add", ["y", "x_mean"], ["z"]))
    proto.graph.node.insert(0, helper.make_node("ReduceMean", ["x"], ["x_mean"], keepdims=1))
    proto.graph.output[0].CopyFrom(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 8, 8]))
    onnx.save(proto, str(model))
    head, tail = tmp_path / "h.onnx", tmp_path / "t.onnx"
    assert run(capsys, "split", model, head, tail, "--at", "h", "-q")[0] == 0
    assert sorted(i.name for i in _session(tail).get_inputs()) == ["h", "x"]
    feeds = {"x": np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    whole, parts = _through(model, head, tail, feeds)
    np.testing.assert_array_equal(whole[0], parts[0])


def _rapidocr_model(name: str) -> Path:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or spec.origin is None:
        pytest.skip("rapidocr-onnxruntime is not installed (pip install --no-deps rapidocr-onnxruntime==1.4.4)")
    return Path(spec.origin).parent / "models" / name


def test_pp_ocr_classifier_split_in_three_formats(tmp_path, capsys):
    model = _rapidocr_model("ch_ppocr_mobile_v2.0_cls_infer.onnx")
    feeds = {"x": np.random.default_rng(3).standard_normal((2, 3, 48, 192)).astype(np.float32)}
    head, tail = tmp_path / "head.onnx", tmp_path / "tail.onnx"
    assert run(capsys, "split", model, head, tail, "--at", "elementwise_add_3", "-q")[0] == 0
    whole, parts = _through(model, head, tail, feeds)
    np.testing.assert_allclose(parts[0], whole[0], rtol=1e-5, atol=1e-6)
    # the head as a lossless NNR bitstream, the tail as ONNX with NNR-coded weights (lossy)
    head_nnr, tail_embedded = tmp_path / "head.nnr", tmp_path / "tail.nnr.onnx"
    args = ("--at", "elementwise_add_3", "-q")
    assert run(capsys, "split", model, head_nnr, tmp_path / "t2.onnx", *args, "--lossless")[0] == 0
    assert run(capsys, "split", model, tmp_path / "h3.onnx", tail_embedded, *args)[0] == 0
    assert run(capsys, "convert", head_nnr, tmp_path / "head_back.onnx", "-q")[0] == 0
    assert run(capsys, "convert", tail_embedded, tmp_path / "tail_back.onnx", "-q")[0] == 0
    _, exact = _through(model, tmp_path / "head_back.onnx", tail, feeds)
    np.testing.assert_allclose(exact[0], whole[0], rtol=1e-5, atol=1e-6)
    _, coded = _through(model, head, tmp_path / "tail_back.onnx", feeds)
    assert np.argmax(coded[0], 1).tolist() == np.argmax(whole[0], 1).tolist()
    np.testing.assert_allclose(coded[0], whole[0], atol=2e-2)


@pytest.mark.slow
def test_pp_ocr_detector_split_with_its_skip_connections(tmp_path, capsys):
    model = _rapidocr_model("ch_PP-OCRv4_det_infer.onnx")
    head, tail = tmp_path / "head.onnx", tmp_path / "tail.onnx"
    code, _, err = run(capsys, "split", model, head, tail, "--at", "p2o.Mul.109")
    assert code == 5 and "'p2o.Add.147', 'p2o.Add.43', 'p2o.Add.71'" in err
    at = "p2o.Mul.109,p2o.Add.147,p2o.Add.43,p2o.Add.71"
    assert run(capsys, "split", model, head, tail, "--at", at, "-q")[0] == 0
    name = _session(model).get_inputs()[0].name
    feeds = {name: np.random.default_rng(4).random((1, 3, 96, 96)).astype(np.float32)}
    whole, parts = _through(model, head, tail, feeds)
    np.testing.assert_allclose(parts[0], whole[0], rtol=1e-5, atol=1e-6)


def test_python_api(tmp_path):
    model = _skip_model(tmp_path / "m.onnx")
    result = nnrconv.split(model, ["b", "h"], tmp_path / "h.nnr", tmp_path / "t.onnx")
    assert result.at == ("b", "h") and result.head_bytes > 0 and result.tail_bytes > 0


def test_an_nnr_model_is_split_as_the_model_it_carries(tmp_path, capsys):
    model = _skip_model(tmp_path / "m.onnx")
    assert run(capsys, "convert", model, tmp_path / "m.nnr", "-q")[0] == 0
    assert run(capsys, "convert", tmp_path / "m.nnr", tmp_path / "decoded.onnx", "-q")[0] == 0
    head, tail = tmp_path / "h.onnx", tmp_path / "t.onnx"
    assert run(capsys, "split", tmp_path / "m.nnr", head, tail, "--at", "b,h", "-q")[0] == 0
    feeds = {"x": np.random.default_rng(5).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    whole, parts = _through(tmp_path / "decoded.onnx", head, tail, feeds)
    np.testing.assert_array_equal(whole[0], parts[0])
