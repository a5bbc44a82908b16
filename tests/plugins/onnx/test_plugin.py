# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The ONNX plugin in isolation: registration, sniffing, weights, errors, external data, save."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnrconv_onnx._format
from nnrconv.core import ArrayTensor, BitstreamError, DType, FormatError, MappedTensor, TensorRole, get_registry
from nnrconv_onnx import OnnxFormat
from nnrconv_onnx._format import looks_like_model_proto
from tests.plugins.onnx import _models
from tests.plugins.onnx._helpers import (
    assert_same_outputs,
    assert_tensors_identical,
    materialized,
    onnx_format,
    run_ort,
    tensor_bytes,
)


def test_registered_through_entry_point() -> None:
    fmt = get_registry().get("onnx")
    assert isinstance(fmt, OnnxFormat)
    assert (fmt.topology_code, fmt.patterns, fmt.requires) == (2, ("*.onnx",), ("onnx",))
    expected = {
        "load", "save", "topology_bytes", "from_topology", "save_embedded", "extract_embedded", "run", "session",
        "split",
    }
    assert set(fmt.capabilities()) == expected


def test_plugin_module_does_not_import_frameworks() -> None:
    code = (
        "import sys, nnrconv_onnx; from nnrconv.core import get_registry; get_registry();"
        "heavy = [m for m in ('onnx', 'onnxruntime', 'torch') if m in sys.modules]; print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_sniff_by_content_and_name(tmp_path: Path) -> None:
    path, _ = _models.constants_model(tmp_path / "m.onnx")
    head = path.read_bytes()[:64]
    fmt = onnx_format()
    assert looks_like_model_proto(head)
    assert fmt.sniff(tmp_path / "renamed.bin", head)
    assert fmt.sniff(tmp_path / "garbage.onnx", b"\xff\xff")  # by name: load reports it
    assert not fmt.sniff(tmp_path / "x.bin", b"\xff\xff")
    # A TensorFlow SavedModel also starts with field 1 = 1, then field 2 (a MetaGraphDef).
    assert not looks_like_model_proto(b"\x08\x01\x12\x80\x10\x0a\x05\x12\x03tag")
    assert not looks_like_model_proto(b"\x0a\x04node")


@pytest.mark.parametrize(
    "content",
    [b"", b"\xff\xfe garbage \x00\x01" * 10, b"\x08\x07\x12\x05pyto", b"\x0a\x02\x08\x01"],
    ids=["empty", "garbage", "truncated", "no-graph"],
)
def test_corrupt_input_is_a_format_error(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    with pytest.raises(FormatError, match=r"bad\.onnx"):
        onnx_format().load(bad)


def test_truncated_real_model_is_a_format_error(tmp_path: Path) -> None:
    path, _ = _models.torch_model("mlp", tmp_path / "m.onnx")
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(FormatError, match=r"cut\.onnx"):
        onnx_format().load(cut)


def test_keys_roles_and_graph(tmp_path: Path) -> None:
    fmt = onnx_format()
    model = fmt.load(_models.if_model(tmp_path / "if.onnx")[0])
    # make_node sorts attributes, so else_branch is walked first and keeps the plain name.
    assert sorted(model.tensors) == ["W", "W@if0.then_branch", "else_c", "then_c", "zero"]
    assert model.tensors["W"].role is TensorRole.WEIGHT
    node = model.graph.nodes[-1]
    assert (node.op_type, node.domain, node.version) == ("If", "", _models.OPSET)
    then_graph, else_graph = node.attributes["then_branch"].value, node.attributes["else_branch"].value
    assert else_graph.initializers["W"] is model.tensors["W"]
    assert then_graph.initializers["W"] is model.tensors["W@if0.then_branch"]
    assert else_graph.nodes[0].attributes["value"].value is model.tensors["else_c"]

    cnn = fmt.load(_models.torch_model("cnn", tmp_path / "cnn.onnx")[0])
    roles = {}
    for node in cnn.graph.nodes:
        for name in node.inputs:
            if name in cnn.tensors:
                roles.setdefault(node.op_type, []).append(cnn.tensors[name].role)
    assert roles["Conv"] == [TensorRole.WEIGHT, TensorRole.BIAS] * 2
    assert roles["BatchNormalization"] == [
        TensorRole.BN_GAMMA, TensorRole.BN_BETA, TensorRole.BN_MEAN, TensorRole.BN_VAR,
    ]
    assert roles["Gemm"] == [TensorRole.WEIGHT, TensorRole.BIAS]
    assert cnn.metadata["producer"] == "pytorch"


def test_typed_fields_decode_exactly_like_raw_data(tmp_path: Path) -> None:
    fmt = onnx_format()
    raw = fmt.load(_models.mixed_model(tmp_path / "raw.onnx", raw=True)[0])
    typed = fmt.load(_models.mixed_model(tmp_path / "typed.onnx", raw=False)[0])
    assert_tensors_identical(raw, typed)
    for name, data_type, values in _models.MIXED_INITIALIZERS:
        reference = numpy_helper.from_array(
            numpy_helper.to_array(helper.make_tensor(name, data_type, [len(values)], values)), name
        )
        if data_type != TensorProto.STRING:
            assert typed.tensors[name].tobytes() == reference.raw_data, name
    assert typed.tensors["bf16"].numpy().dtype == np.uint16
    assert typed.tensors["i4"].numpy().tolist() == [0xF8, 0x70, 0x03]


def test_topology_holds_no_carried_payload(tmp_path: Path) -> None:
    path, _ = _models.torch_model("cnn", tmp_path / "m.onnx")
    model = onnx_format().load(path)
    carried = {k for k, t in model.tensors.items() if t.dtype is DType.FLOAT}
    topology = onnx_format().topology_bytes(model, carried)
    payload = sum(model.tensors[k].nbytes for k in carried)
    assert payload > 10_000
    assert len(topology) <= path.stat().st_size - payload + 64 * len(carried)
    for key in carried:
        data = model.tensors[key].tobytes()
        assert data[:32] not in topology or len(data) < 32, key


def test_from_topology_rejects_missing_extra_and_bad_data(tmp_path: Path) -> None:
    fmt = onnx_format()
    model = fmt.load(_models.constants_model(tmp_path / "m.onnx")[0])
    topology = fmt.topology_bytes(model, {"W", "b", "s"})
    full = {k: ArrayTensor(k, model.tensors[k].numpy().reshape(-1)) for k in ("W", "b", "s")}
    with pytest.raises(BitstreamError, match="'b'"):
        fmt.from_topology(topology, {k: v for k, v in full.items() if k != "b"})
    with pytest.raises(BitstreamError, match="extra"):
        fmt.from_topology(topology, {**full, "extra": ArrayTensor("extra", np.zeros(2, np.float32))})
    with pytest.raises(BitstreamError, match="'W'"):
        fmt.from_topology(topology, {**full, "W": ArrayTensor("W", np.zeros(5, np.float32))})
    with pytest.raises(BitstreamError, match="ModelProto"):
        fmt.from_topology(b"\xff\xff\xff garbage", full)
    restored = fmt.from_topology(topology, full)
    assert restored.tensors["s"].shape == ()
    assert_tensors_identical(model, restored)


def _external_model(folder: Path, location: str) -> Path:
    tensor = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "24")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        initializer=[tensor],
    )
    path = folder / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return path


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd", "sub/../../outside.bin"])
def test_external_data_outside_the_folder_is_refused(tmp_path: Path, location: str) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "outside.bin").write_bytes(bytes(24))
    with pytest.raises(FormatError, match="outside the model's folder"):
        onnx_format().load(_external_model(folder, location))


def test_external_data_missing_or_short_is_refused(tmp_path: Path) -> None:
    path = _external_model(tmp_path, "w.bin")
    with pytest.raises(FormatError, match=r"'w'.*w\.bin"):
        onnx_format().load(path)
    (tmp_path / "w.bin").write_bytes(bytes(10))
    with pytest.raises(FormatError, match="'w'"):
        onnx_format().load(path)


def test_external_data_is_mapped_lazily(tmp_path: Path) -> None:
    path = _external_model(tmp_path, "w.bin")
    (tmp_path / "w.bin").write_bytes(np.arange(6, dtype=np.float32).tobytes())
    tensor = onnx_format().load(path).tensors["w"]
    assert isinstance(tensor, MappedTensor)
    assert tensor.numpy().tolist() == [[0, 1, 2], [3, 4, 5]]


def test_save_writes_external_data_past_the_threshold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, inputs = _models.torch_model("cnn", tmp_path / "m.onnx")
    model = onnx_format().load(path)
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(nnrconv_onnx._format, "EXTERNAL_DATA_THRESHOLD", 4096)
    onnx_format().save(model, out / "big.onnx")
    assert sorted(p.name for p in out.iterdir()) == ["big.onnx", "big.onnx.data"]
    assert (out / "big.onnx").stat().st_size < 4096
    again = onnx_format().load(out / "big.onnx")
    assert any(isinstance(t, MappedTensor) for t in again.tensors.values())
    assert_tensors_identical(model, again)
    assert_same_outputs(run_ort(path, inputs), run_ort(out / "big.onnx", inputs))
    onnx.checker.check_model(str(out / "big.onnx"))


def test_save_below_threshold_is_one_identical_file(tmp_path: Path) -> None:
    path, _ = _models.if_model(tmp_path / "m.onnx")
    out = tmp_path / "out"
    out.mkdir()
    onnx_format().save(onnx_format().load(path), out / "copy.onnx")
    assert [p.name for p in out.iterdir()] == ["copy.onnx"]
    assert materialized(out / "copy.onnx").SerializeToString() == materialized(path).SerializeToString()


def test_save_refuses_a_tensor_that_does_not_fit(tmp_path: Path) -> None:
    model = onnx_format().load(_models.constants_model(tmp_path / "m.onnx")[0])
    model.tensors["b"] = ArrayTensor("b", np.array([0.1, 0.2, 0.3, 0.4]))  # float64, not exact float32
    with pytest.raises(FormatError, match="'b'"):
        onnx_format().save(model, tmp_path / "out.onnx")
    model.tensors["b"] = ArrayTensor("b", np.array([1.0, 2.0, 3.0, 4.0]))  # exact: cast is fine
    onnx_format().save(model, tmp_path / "out.onnx")
    assert tensor_bytes(onnx_format().load(tmp_path / "out.onnx").tensors["b"]) == np.array(
        [1, 2, 3, 4], np.float32
    ).tobytes()
