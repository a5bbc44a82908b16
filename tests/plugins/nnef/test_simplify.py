# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""ONNX → NNEF of exports that compute shapes at run time and use operators NNEF lacks.

The ONNX is simplified first (`nnrconv_nnef._simplify`: schema function bodies for HardSigmoid,
HardSwish..., onnxslim folding of static `Shape` chains), then nnef-tools converts it; outputs
of nnef-tools' interpreter match onnxruntime's within 1e-5 (float rounding of reordered ops).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nnrconv
from nnrconv.core import UnsupportedError, get_registry
from tests.plugins.nnef._helpers import cli

pytest.importorskip("nnef_tools")
pytest.importorskip("onnxslim")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

TOLERANCE = 1e-5


def _run(path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    model = nnrconv.load(path)
    (output,) = get_registry().get(model.source_format).run(model, inputs).values()
    return output


def _dynamic_model(path: Path, opset: int) -> Path:
    """A conv net with a free batch and spatial size, HardSwish/HardSigmoid, a Shape → Reshape
    chain (as tf2onnx and paddle2onnx write flattening) and ReduceSum with axes as an input."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    axes = numpy_helper.from_array(np.array([-1], np.int64), "axes")
    zero = numpy_helper.from_array(np.array([0], np.int64), "zero")
    minus_one = numpy_helper.from_array(np.array([-1], np.int64), "minus_one")
    reduce = (
        helper.make_node("ReduceSum", ["flat", "axes"], ["y"], keepdims=0)
        if opset >= 13
        else helper.make_node("ReduceSum", ["flat"], ["y"], axes=[-1], keepdims=0)
    )
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["c"], ["hs"]) if opset >= 14 else helper.make_node("Relu", ["c"], ["hs"]),
        helper.make_node("HardSigmoid", ["hs"], ["g"], alpha=0.25, beta=0.4),
        helper.make_node("Shape", ["g"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Concat", ["batch", "minus_one"], ["flat_shape"], axis=0),
        helper.make_node("Reshape", ["g", "flat_shape"], ["flat"]),
        reduce,
    ]
    graph = helper.make_graph(
        nodes,
        "dynamic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
        initializer=[weight, zero, minus_one] + ([axes] if opset >= 13 else []),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("opset", [11, 17])
def test_dynamic_export_converts_with_given_input_shapes(tmp_path: Path, opset: int) -> None:
    source = _dynamic_model(tmp_path / "m.onnx", opset)
    x = np.random.default_rng(1).standard_normal((2, 3, 10, 12)).astype(np.float32)
    target = tmp_path / "m.nnef"
    nnrconv.convert(source, target, input_shapes={"x": x.shape})
    text = (target / "graph.nnef").read_text()
    assert "[2, 3, 10, 12]" in text
    expected, got = _run(source, {"x": x}), _run(target, {"x": x})
    assert got.shape == expected.shape == (2,)
    np.testing.assert_allclose(got, expected, rtol=TOLERANCE, atol=TOLERANCE)


def test_cli_input_shape_option(tmp_path: Path) -> None:
    source = _dynamic_model(tmp_path / "m.onnx", 17)
    result = cli("convert", source, tmp_path / "m.nnef", "--input-shape", "x:1,3,8,8")
    assert result.returncode == 0, result.stderr
    assert "[1, 3, 8, 8]" in (tmp_path / "m.nnef" / "graph.nnef").read_text()
    bad = cli("convert", source, tmp_path / "n.nnef", "--input-shape", "y:1,3,8,8")
    assert bad.returncode == 5 and "no graph input named 'y'" in bad.stderr
    usage = cli("convert", source, tmp_path / "o.nnef", "--input-shape", "x:1,a")
    assert usage.returncode == 2 and "--input-shape" in usage.stderr
    assert not (tmp_path / "n.nnef").exists() and not (tmp_path / "o.nnef").exists()


def test_wrong_rank_or_static_dimension_is_refused(tmp_path: Path) -> None:
    source = _dynamic_model(tmp_path / "m.onnx", 17)
    with pytest.raises(UnsupportedError, match="has 4 dimensions"):
        nnrconv.convert(source, tmp_path / "a.nnef", input_shapes={"x": (1, 3, 8)})
    with pytest.raises(UnsupportedError, match="fixed to 3"):
        nnrconv.convert(source, tmp_path / "b.nnef", input_shapes={"x": (1, 4, 8, 8)})


def test_input_shapes_need_a_format_change(tmp_path: Path) -> None:
    source = _dynamic_model(tmp_path / "m.onnx", 17)
    with pytest.raises(UnsupportedError, match="input shapes"):
        nnrconv.convert(source, tmp_path / "m.nnr", input_shapes={"x": (1, 3, 8, 8)})
