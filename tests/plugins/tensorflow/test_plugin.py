# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The TensorFlow plugin in isolation: registration, sniffing, dtypes, roles, container, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nnrconv
from nnrconv.core import ArrayTensor, BitstreamError, DType, FormatError, TensorRole, UnsupportedError, get_registry
from nnrconv_tensorflow import TensorFlowFormat, _container
from nnrconv_tensorflow._format import looks_like_graph_def
from tests.plugins.tensorflow._helpers import (
    assert_same_outputs,
    assert_tensors_identical,
    cli,
    simulate_nnr,
    tf_format,
)

REPO = Path(__file__).resolve().parents[3]


def test_registered_through_entry_point() -> None:
    fmt = get_registry().get("tensorflow")
    assert isinstance(fmt, TensorFlowFormat)
    assert (fmt.topology_code, fmt.requires, fmt.directory) == (4, ("tensorflow",), True)
    expected = {"load", "save", "topology_bytes", "from_topology", "save_embedded", "extract_embedded", "run"}
    assert set(fmt.capabilities()) == expected | {"session"}
    assert fmt.embedded_patterns == (
        "*.nnr.pb", "*.nnr_savedmodel", "*.nnr_saved_model", "*.nnr.keras", "*.nnr.h5", "*.nnr.hdf5",
    )


def test_plugin_module_does_not_import_tensorflow() -> None:
    code = (
        "import sys, nnrconv_tensorflow; from nnrconv.core import get_registry; get_registry();"
        "from nnrconv import cli; print('tensorflow' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
    result = cli("formats")
    assert result.returncode == 0 and "tensorflow" in result.stdout


def test_sniff_by_content_and_folder(tf_models: dict[str, Path]) -> None:
    fmt = tf_format()
    for name in ("cnn.pb", "lstm.pb", "dtypes.pb"):
        assert looks_like_graph_def(tf_models[name].read_bytes()[:64]), name
    assert fmt.sniff(tf_models["cnn_savedmodel"], b"")
    saved = tf_models["cnn_savedmodel"] / "saved_model.pb"
    assert fmt.sniff(saved, saved.read_bytes()[:64])
    assert not looks_like_graph_def(saved.read_bytes()[:64])
    onnx_head = (REPO / "examples" / "tiny_cnn.onnx").read_bytes()[:64]
    assert not looks_like_graph_def(onnx_head)
    assert not looks_like_graph_def(b"\x0a\x04node")
    assert not looks_like_graph_def(b"\x0a\x20\x0a\x03a b\x12\x05Const")
    assert get_registry().for_input(tf_models["cnn.pb"]).name == "tensorflow"
    assert get_registry().for_input(REPO / "examples" / "tiny_cnn.onnx").name == "onnx"


def _env_without_tf_log_level() -> dict[str, str]:
    """The environment of a fresh shell: TensorFlow's log level not set, so its defaults apply."""
    return {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}


def test_corrupt_pb_is_a_one_line_error_with_exit_code_3(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pb"
    bad.write_bytes(b"\xff\xfe not a graph \x00\x01" * 8)
    with pytest.raises(FormatError, match=r"bad\.pb"):
        tf_format().load(bad)
    # TensorFlow's oneDNN/CPU-feature notices depend on the CPU and ignore TF_CPP_MIN_LOG_LEVEL:
    # whatever the machine, stderr is the error and nothing else.
    result = cli(bad, tmp_path / "out.nnr", env=_env_without_tf_log_level())
    assert result.returncode == 3, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("nnrconv: "), result.stderr
    assert "bad.pb" in result.stderr and "GraphDef" in result.stderr, result.stderr
    assert not (tmp_path / "out.nnr").exists()


def test_tensorflow_prints_nothing_on_success(tf_models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cnn.nnr"
    result = cli(tf_models["cnn.pb"], out, "-q", env=_env_without_tf_log_level())
    assert result.returncode == 0 and out.is_file(), result.stderr
    assert result.stderr == "" and result.stdout == ""


def test_quiet_import_restores_stderr() -> None:
    code = (
        "import os, sys; from nnrconv_tensorflow._quiet import import_tensorflow; import_tensorflow();"
        "os.write(2, b'still here'); print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env_without_tf_log_level()
    )
    assert result.returncode == 0 and result.stderr == "still here" and result.stdout.strip() == "2", result.stderr


def test_every_dtype_comes_back_bit_exact(tf_models: dict[str, Path], tmp_path: Path) -> None:
    fmt = tf_format()
    original = fmt.load(tf_models["dtypes.pb"])
    dtypes = {t.dtype for t in original.tensors.values()}
    assert dtypes >= {
        DType.FLOAT,
        DType.DOUBLE,
        DType.FLOAT16,
        DType.BFLOAT16,
        DType.INT8,
        DType.UINT8,
        DType.INT64,
        DType.BOOL,
        DType.STRING,
        DType.COMPLEX64,
        DType.INT32,
    }
    assert original.tensors["f32_broadcast"].numpy().tolist() == [[0.25] * 2] * 3
    assert original.tensors["bf16_bits"].numpy().tolist() == [0x3F80, 0xFF7F]
    assert original.tensors["text"].numpy().tolist() == [b"a\x00b", b""]
    assert original.tensors["i32_empty_is_zeros"].numpy().tolist() == [0, 0]
    # Carry everything but strings and booleans, as a future entropy coder may.
    restored = simulate_nnr(original, carry=lambda t: t.dtype not in (DType.STRING, DType.BOOL))
    assert_tensors_identical(original, restored)
    out = tmp_path / "back.pb"
    fmt.save(restored, out)
    assert_tensors_identical(original, fmt.load(out))
    x = np.ones((2, 4), np.float32)
    assert_same_outputs(fmt.run(original, {"x": x}), fmt.run(fmt.load(out), {"x": x}))


def test_unchanged_frozen_graph_saves_the_same_graph(tf_models: dict[str, Path], tmp_path: Path) -> None:
    from tensorflow.core.framework import graph_pb2

    fmt = tf_format()
    out = tmp_path / "same.pb"
    fmt.save(fmt.load(tf_models["dtypes.pb"]), out)
    # Equal messages (map fields may serialize in another order): typed value lists stay as written.
    parse = graph_pb2.GraphDef.FromString
    assert parse(out.read_bytes()) == parse(tf_models["dtypes.pb"].read_bytes())


def test_roles_and_layouts_from_the_graph(tf_models: dict[str, Path]) -> None:
    for name in ("cnn_savedmodel", "cnn.pb"):
        model = nnrconv.load(tf_models[name])
        roles = sorted(t.role.name for t in model.tensors.values() if t.role is not TensorRole.OTHER)
        assert roles == sorted(
            ["WEIGHT", "BIAS", "BN_GAMMA", "BN_BETA", "BN_MEAN", "BN_VAR", "WEIGHT", "BIAS", "WEIGHT", "BIAS"]
        ), name
        layouts = sorted(v for k, v in model.metadata.items() if k.startswith("layout/"))
        assert layouts == ["HWIM", "HWIO", "IO"], name
        for key, layout in model.metadata.items():
            if key.startswith("layout/"):
                tensor = model.tensors[key.removeprefix("layout/")]
                assert tensor.role is TensorRole.WEIGHT and len(tensor.shape) == len(layout)
        gamma = next(t for t in model.tensors.values() if t.role is TensorRole.BN_GAMMA)
        assert np.all(gamma.numpy() == 1.0)
    lstm = nnrconv.load(tf_models["lstm.pb"])
    assert sorted(t.role.name for t in lstm.tensors.values() if t.role is not TensorRole.OTHER) == [
        "BIAS",
        "BIAS",
        "WEIGHT",
        "WEIGHT",
        "WEIGHT",
    ]


def test_savedmodel_keys_are_checkpoint_keys_and_signature_inputs(tf_models: dict[str, Path]) -> None:
    fmt = tf_format()
    model = fmt.load(tf_models["mlp_tfsave"])
    assert sorted(model.tensors) == [
        "model/_layers/1/_kernel/.ATTRIBUTES/VARIABLE_VALUE",
        "model/_layers/1/bias/.ATTRIBUTES/VARIABLE_VALUE",
        "model/_layers/2/_kernel/.ATTRIBUTES/VARIABLE_VALUE",
        "model/_layers/2/bias/.ATTRIBUTES/VARIABLE_VALUE",
    ]
    [spec] = fmt.input_specs(model)
    assert (spec.dtype, spec.shape) == (DType.FLOAT, (1, 10))
    [spec] = fmt.input_specs(fmt.load(tf_models["lstm.pb"]))
    assert (spec.name, spec.shape) == ("sequence", (1, 5, 3))


def test_topology_holds_no_carried_values(tf_models: dict[str, Path]) -> None:
    fmt = tf_format()
    for name in ("cnn.pb", "cnn_savedmodel"):
        model = fmt.load(tf_models[name])
        carried = {k for k, t in model.tensors.items() if t.dtype is DType.FLOAT}
        topology = fmt.topology_bytes(model, carried)
        assert _container.is_container(topology)
        for key in carried:
            data = model.tensors[key].tobytes()
            assert len(data) < 16 or data[:16] not in topology, key
        entries = _container.unpack(topology)
        assert entries[":kind"] in (b"graphdef", b"savedmodel")


def test_container_rejects_corruption() -> None:
    packed = _container.pack({":kind": b"graphdef", "assets/a.txt": b"x" * 10})
    assert _container.unpack(packed) == {":kind": b"graphdef", "assets/a.txt": b"x" * 10}
    for bad in (packed[:-1], packed + b"\x00", b"NNRTF\x00\x01\x00\xff\xff\xff\xff", b"garbage"):
        with pytest.raises(BitstreamError):
            _container.unpack(bad)
    for name in ("../evil", "/abs", "a/../../b", ""):
        with pytest.raises(ValueError):
            _container.pack({name: b""})


def test_from_topology_rejects_missing_extra_and_empty(tf_models: dict[str, Path]) -> None:
    fmt = tf_format()
    model = fmt.load(tf_models["mlp.pb"])
    carried = {k for k, t in model.tensors.items() if t.dtype is DType.FLOAT}
    topology = fmt.topology_bytes(model, carried)
    full = {k: ArrayTensor(k, model.tensors[k].numpy().reshape(-1)) for k in carried}
    missing = sorted(carried)[0]
    with pytest.raises(BitstreamError, match="no NNR data unit"):
        fmt.from_topology(topology, {k: v for k, v in full.items() if k != missing})
    with pytest.raises(BitstreamError, match="extra"):
        fmt.from_topology(topology, {**full, "extra": ArrayTensor("extra", np.zeros(2, np.float32))})
    with pytest.raises(BitstreamError, match="empty"):
        fmt.from_topology(b"", full)
    with pytest.raises(BitstreamError):
        fmt.from_topology(b"\xff\xff garbage", full)
    sm = fmt.load(tf_models["mlp_tfsave"])
    sm_carried = set(sm.tensors)
    sm_topology = fmt.topology_bytes(sm, sm_carried)
    with pytest.raises(BitstreamError, match="no NNR data unit"):
        fmt.from_topology(sm_topology, {})


def test_savedmodel_is_not_written_as_a_pb_file(tf_models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError, match="folder"):
        nnrconv.save(nnrconv.load(tf_models["mlp_tfsave"]), tmp_path / "x.pb")
    assert not list(tmp_path.iterdir())


def _onnx_matmul(path: Path) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_without_tensorflow_the_plugin_is_listed_unavailable_and_onnx_still_converts(tmp_path: Path) -> None:
    source = _onnx_matmul(tmp_path / "mm.onnx")
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text("import sys\nsys.modules['tensorflow'] = None\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")])}
    result = cli("formats", env=env)
    assert result.returncode == 0, result.stderr
    [row] = [line for line in result.stdout.splitlines() if line.lstrip().startswith("tensorflow")]
    assert "pip install 'nnrconv[tensorflow]'" in row
    result = cli(source, tmp_path / "m.nnr", env=env)
    assert result.returncode == 0, result.stderr
    result = cli(tmp_path / "m.nnr", tmp_path / "x.pb", "--from", "nnr", "--to", "tensorflow", env=env)
    assert result.returncode == 6 and "pip install 'nnrconv[tensorflow]'" in result.stderr
