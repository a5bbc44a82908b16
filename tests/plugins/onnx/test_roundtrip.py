# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""ONNX → NNR → ONNX round trips: every tensor bit-identical and onnxruntime outputs identical."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

import nnrconv
from nnrconv import _api
from nnrconv.core import DType
from tests.plugins.onnx import _models
from tests.plugins.onnx._helpers import (
    assert_same_outputs,
    assert_tensors_identical,
    carried_names,
    materialized,
    nnc_ready,
    nnr_roundtrip,
    onnx_format,
    run_ort,
    simulate_nnr,
)

Builder = Callable[[Path], tuple[Path, dict[str, np.ndarray]]]


def _external(path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    source, inputs = _models.torch_model("cnn", path.with_name("plain.onnx"))
    model = onnx.load(str(source))
    onnx.save_model(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
        location="weights.bin", size_threshold=0,
    )
    return path, inputs


MODELS: dict[str, Builder] = {
    "torch_cnn_bn": lambda p: _models.torch_model("cnn", p),
    "torch_mlp": lambda p: _models.torch_model("mlp", p),
    "constant_nodes": _models.constants_model,
    "if_branches": _models.if_model,
    "loop_body": _models.loop_model,
    "mixed_dtypes_raw": lambda p: _models.mixed_model(p, raw=True),
    "mixed_dtypes_typed": lambda p: _models.mixed_model(p, raw=False),
    "external_data": _external,
}
# Models whose every tensor uses raw_data: the rebuilt ModelProto must serialize identically.
RAW_ONLY = {"torch_cnn_bn", "torch_mlp", "constant_nodes", "if_branches", "loop_body", "mixed_dtypes_raw"}

needs_nnc = pytest.mark.skipif(not nnc_ready(), reason="nnrconv.nnc is not finished yet")


@pytest.fixture(params=sorted(MODELS))
def built(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path, dict[str, np.ndarray]]:
    folder = tmp_path / "src"
    folder.mkdir()
    path, inputs = MODELS[request.param](folder / "m.onnx")
    return request.param, path, inputs


def test_topology_roundtrip_is_exact(built: tuple[str, Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    name, path, inputs = built
    fmt = onnx_format()
    original = fmt.load(path)
    restored = simulate_nnr(original)
    assert_tensors_identical(original, restored)
    if name in RAW_ONLY:
        assert restored.native.SerializeToString() == materialized(path).SerializeToString()
    out = tmp_path / "restored.onnx"
    fmt.save(restored, out)
    assert_same_outputs(run_ort(path, inputs), run_ort(out, inputs))


@needs_nnc
def test_nnr_roundtrip(built: tuple[str, Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    name, path, inputs = built
    nnr, back = nnr_roundtrip(path, tmp_path)
    original, restored = nnrconv.load(path), nnrconv.load(back)
    assert_tensors_identical(original, restored)
    assert_tensors_identical(original, nnrconv.load(nnr))
    if name in RAW_ONLY:
        assert materialized(back).SerializeToString() == materialized(path).SerializeToString()
    assert_same_outputs(run_ort(path, inputs), run_ort(back, inputs))


def test_non_float32_tensors_stay_in_topology(tmp_path: Path) -> None:
    path, _ = _models.mixed_model(tmp_path / "m.onnx", raw=True)
    model = onnx_format().load(path)
    topology = onnx.ModelProto.FromString(onnx_format().topology_bytes(model, {"w"}))
    inline = {t.name: t for t in topology.graph.initializer}
    assert not inline["w"].raw_data and list(inline["w"].dims) == [4, 4]
    assert inline["w"].data_type == onnx.TensorProto.FLOAT
    for name, *_ in _models.MIXED_INITIALIZERS:
        assert inline[name].raw_data or inline[name].string_data, name
    assert {t.dtype for t in model.tensors.values()} >= {DType.BFLOAT16, DType.INT4, DType.STRING, DType.BOOL}


def _ndu_tensors(units: list) -> list[str]:
    return [u.tensor for u in units if u.tensor is not None]


@needs_nnc
def test_inspect_shows_one_onnx_topology_and_one_ndu_per_float_tensor(tmp_path: Path) -> None:
    path, _ = _models.mixed_model(tmp_path / "m.onnx", raw=True)
    nnr, _ = nnr_roundtrip(path, tmp_path)
    units = _api.inspect(nnr)
    topology = [u for u in units if u.unit_type == "NNR_TPL" and u.integrity != "record"]
    assert [u.topology_storage_format for u in topology] == ["NNR_TPL_ONNX"]
    floats = [k for k, t in nnrconv.load(path).tensors.items() if t.dtype is DType.FLOAT]
    assert floats == ["w"]
    assert sorted(_ndu_tensors(units)) == carried_names(nnrconv.load(path))
    assert "w" in _ndu_tensors(units)


@needs_nnc
def test_inspect_cnn_has_an_ndu_per_weight(tmp_path: Path) -> None:
    path, _ = _models.torch_model("cnn", tmp_path / "m.onnx")
    nnr, _ = nnr_roundtrip(path, tmp_path)
    result = _cli("inspect", "--json", nnr)
    assert result.returncode == 0, result.stderr
    units = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    topologies = [u["topology_storage_format"] for u in units if u["unit_type"] == "NNR_TPL"][1:]  # record first
    assert topologies == ["NNR_TPL_ONNX"]
    floats = [k for k, t in nnrconv.load(path).tensors.items() if t.dtype is DType.FLOAT]
    assert sorted(u["tensor"] for u in units if u["unit_type"] == "NNR_NDU") == carried_names(nnrconv.load(path))
    assert len(floats) == 10  # 2 convs, batch norm (4), linear: weight and bias each


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nnrconv", *map(str, args)], capture_output=True, text=True, timeout=300
    )


@needs_nnc
@pytest.mark.parametrize("name", ["torch_cnn_bn", "if_branches", "external_data"])
def test_cli_roundtrip(name: str, tmp_path: Path) -> None:
    path, inputs = MODELS[name](tmp_path / "m.onnx")
    nnr, back = tmp_path / "m.nnr", tmp_path / "back.onnx"
    for source, target in ((path, nnr), (nnr, back)):
        result = _cli(source, target, "--lossless")
        assert result.returncode == 0, result.stderr
    assert_tensors_identical(nnrconv.load(path), nnrconv.load(back))
    assert_same_outputs(run_ort(path, inputs), run_ort(back, inputs))


@needs_nnc
def test_cli_reports_corrupt_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\xfe not a protobuf at all \x00\x01")
    result = _cli(bad, tmp_path / "out.nnr")
    assert result.returncode == 3, result.stderr
    assert "bad.onnx" in result.stderr and "Traceback" not in result.stderr


def _sparse_and_scan_model(path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A Constant with a sparse_value (kept in the topology) and a Scan body holding a weight."""
    from onnx import TensorProto, helper, numpy_helper

    values = numpy_helper.from_array(np.array([1.5, -2.0], np.float32), "sp_values")
    indices = numpy_helper.from_array(np.array([1, 4], np.int64), "sp_indices")
    sparse = helper.make_sparse_tensor(values, indices, [6])
    body = helper.make_graph(
        [helper.make_node("Add", ["row", "Ws"], ["out_row"])],
        "scan_body",
        [helper.make_tensor_value_info("row", TensorProto.FLOAT, [6])],
        [helper.make_tensor_value_info("out_row", TensorProto.FLOAT, [6])],
        initializer=[numpy_helper.from_array(np.linspace(-1, 1, 6, dtype=np.float32), "Ws")],
    )
    nodes = [
        helper.make_node("Constant", [], ["dense"], sparse_value=sparse),
        helper.make_node("Scan", ["x"], ["scanned"], body=body, num_scan_inputs=1),
        helper.make_node("Add", ["scanned", "dense"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "sparse_scan",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 6])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _models.OPSET)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path, {"x": np.random.default_rng(7).standard_normal((3, 6)).astype(np.float32)}


@needs_nnc
def test_sparse_constant_stays_in_topology_and_scan_weight_is_carried(tmp_path: Path) -> None:
    path, inputs = _sparse_and_scan_model(tmp_path / "m.onnx")
    assert sorted(nnrconv.load(path).tensors) == ["Ws"]
    nnr, back = nnr_roundtrip(path, tmp_path)
    assert [u.tensor for u in _api.inspect(nnr) if u.tensor is not None] == ["Ws"]
    assert materialized(back).SerializeToString() == materialized(path).SerializeToString()
    assert_same_outputs(run_ort(path, inputs), run_ort(back, inputs))
