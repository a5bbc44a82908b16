# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The NNEF plugin in isolation: registration, sniffing, loading, roles, errors, save."""

from __future__ import annotations

import gc
import gzip
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

import nnrconv
from nnrconv.core import DType, FormatError, LazyTensor, MappedTensor, TensorRole, UnsupportedError, get_registry
from nnrconv_nnef import NnefFormat
from tests.plugins.nnef import _models
from tests.plugins.nnef._helpers import assert_same_files, cli, nnef_format


def test_registered_through_entry_point() -> None:
    fmt = get_registry().get("nnef")
    assert isinstance(fmt, NnefFormat)
    assert (fmt.topology_code, fmt.requires, fmt.directory) == (1, ("nnef",), True)
    expected = {"load", "save", "save_embedded", "extract_embedded", "topology_bytes", "from_topology", "run"}
    assert set(fmt.capabilities()) == expected | {"session"}


def test_formats_command_does_not_import_frameworks() -> None:
    code = (
        "import sys; from nnrconv.cli import main\n"
        "try:\n    main(['formats'])\nexcept SystemExit:\n    pass\n"
        "print([m for m in ('nnef', 'nnef_tools', '_nnef', 'torch') if m in sys.modules], file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "nnef" in result.stdout
    assert result.stderr.strip().splitlines()[-1] == "[]"


def _tgz(folder: Path, target: Path, *, nested: bool = False) -> Path:
    with tarfile.open(target, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                name = path.relative_to(folder).as_posix()
                tar.add(path, f"model/{name}" if nested else name)
    return target


def test_sniff(tmp_path: Path) -> None:
    folder, _ = _models.mlp_model(tmp_path / "m.nnef")
    fmt = nnef_format()
    assert fmt.sniff(folder, b"")
    assert not fmt.sniff(tmp_path, b"")
    archive = _tgz(folder, tmp_path / "renamed.bin")
    assert fmt.sniff(archive, archive.read_bytes()[:64])
    other = tmp_path / "other.gz"
    other.write_bytes(gzip.compress(b"not a tar at all" * 100))
    assert not fmt.sniff(other, other.read_bytes()[:64])
    assert get_registry().for_input(archive).name == "nnef"
    assert get_registry().for_input(folder).name == "nnef"
    assert get_registry().for_output(tmp_path / "x.nnef.tgz").name == "nnef"


def test_lazy_tensors_roles_and_graph(tmp_path: Path) -> None:
    folder, _ = _models.cnn_model(tmp_path / "m.nnef")
    model = nnef_format().load(folder)
    assert all(isinstance(t, MappedTensor) for t in model)
    roles = {k: t.role for k, t in model.tensors.items()}
    assert roles["conv1_filter"] is TensorRole.WEIGHT and roles["fc_bias"] is TensorRole.BIAS
    assert [roles[f"bn_{k}"] for k in ("mean", "variance", "offset", "scale")] == [
        TensorRole.BN_MEAN,
        TensorRole.BN_VAR,
        TensorRole.BN_BETA,
        TensorRole.BN_GAMMA,
    ]
    assert model.graph.name == "cnn" and [v.name for v in model.graph.inputs] == ["input"]
    assert model.graph.inputs[0].shape == (1, 3, 8, 8)
    assert "batch_normalization" in {op for _, op in model.graph.op_types()}


def test_legacy_and_typed_variables(tmp_path: Path) -> None:
    folder, _ = _models.mixed_model(tmp_path / "m.nnef")
    model = nnef_format().load(folder)
    dtypes = {k: t.dtype for k, t in model.tensors.items()}
    assert dtypes == {
        "w": DType.FLOAT,
        "legacy/w": DType.FLOAT,
        "half": DType.FLOAT16,
        "ints": DType.INT32,
        "flags": DType.BOOL,
        "legacy/quantized": DType.UINT8,
        "legacy/ints": DType.INT16,
    }  # the vendor-typed variable is kept opaque, outside `tensors`
    assert isinstance(model.tensors["flags"], LazyTensor)
    assert model.tensors["legacy/ints"].numpy().tolist() == [-7, 0, 7, 100]
    assert model.tensors["ints"].numpy().tolist() == [1, -2, 3, -400000, 5]


@pytest.mark.parametrize("name", sorted(_models.MODELS))
def test_save_is_bit_identical(name: str, tmp_path: Path) -> None:
    folder, _ = _models.MODELS[name](tmp_path / "m.nnef")
    model = nnef_format().load(folder)
    nnef_format().save(model, tmp_path / "out.nnef")
    assert_same_files(folder, tmp_path / "out.nnef")
    nnef_format().save(model, tmp_path / "out.tgz")
    assert_same_files(folder, tmp_path / "out.tgz")


def test_tgz_with_a_top_folder_loads(tmp_path: Path) -> None:
    folder, _ = _models.nested_model(tmp_path / "m.nnef")
    archive = _tgz(folder, tmp_path / "m.nnef.tgz", nested=True)
    model = nnrconv.load(archive)
    original = nnrconv.load(folder)
    assert list(model.tensors) == list(original.tensors)
    for key, tensor in model.tensors.items():
        assert tensor.tobytes() == original.tensors[key].tobytes()


def _corrupt(folder: Path, how: str) -> None:
    dat = folder / "w1.dat"
    if how == "magic":
        dat.write_bytes(b"XX" + dat.read_bytes()[2:])
    elif how == "truncated":
        dat.write_bytes(dat.read_bytes()[:-4])
    elif how == "short":
        dat.write_bytes(dat.read_bytes()[:50])
    elif how == "missing":
        dat.unlink()
    elif how == "shape":
        data = bytearray(dat.read_bytes())
        data[12:20] = (6).to_bytes(4, "little") + (8).to_bytes(4, "little")
        dat.write_bytes(bytes(data))
    elif how == "graph":
        (folder / "graph.nnef").write_text("version 1.0;\ngraph broken( x ) -> ( y ) { y = ; }\n")


@pytest.mark.parametrize("how", ["magic", "truncated", "short", "missing", "shape", "graph"])
def test_corrupt_models_are_format_errors(how: str, tmp_path: Path) -> None:
    folder, _ = _models.mlp_model(tmp_path / "m.nnef")
    _corrupt(folder, how)
    with pytest.raises(FormatError, match=r"m\.nnef"):
        nnef_format().load(folder)


def test_label_leaving_the_folder_is_refused(tmp_path: Path) -> None:
    folder, _ = _models.mlp_model(tmp_path / "m.nnef")
    text = (folder / "graph.nnef").read_text().replace("label = 'w1'", "label = '../../w1'")
    (folder / "graph.nnef").write_text(text)
    with pytest.raises(FormatError, match="outside"):
        nnef_format().load(folder)


def test_saving_a_foreign_model_is_refused(tmp_path: Path) -> None:
    folder, _ = _models.mlp_model(tmp_path / "m.nnef")
    model = nnef_format().load(folder)
    model.native = None
    with pytest.raises(UnsupportedError, match="only models read from NNEF"):
        nnef_format().save(model, tmp_path / "out.nnef")


def test_cli_errors_are_one_line_with_exit_3(tmp_path: Path) -> None:
    folder, _ = _models.mlp_model(tmp_path / "m.nnef")
    _corrupt(folder, "magic")
    result = cli(folder, tmp_path / "out.nnr")
    assert result.returncode == 3, result.stderr
    assert "w1.dat" in result.stderr and "magic" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    empty = tmp_path / "empty.nnef"
    empty.mkdir()
    (empty / "x.dat").write_bytes(b"\0")
    for args in ((empty, tmp_path / "o.nnr"), ("--from", "nnef", empty, tmp_path / "o.nnr")):
        result = cli(*args)
        assert result.returncode == 3, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert "graph.nnef" in result.stderr
    assert not (tmp_path / "o.nnr").exists() and not (tmp_path / "out.nnr").exists()


def test_input_specs_and_run(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("nnef_tools")
    folder, inputs = _models.mlp_model(tmp_path / "m.nnef")
    fmt = nnef_format()
    model = fmt.load(folder)
    (spec,) = fmt.input_specs(model)
    assert (spec.name, spec.dtype, spec.shape) == ("x", DType.FLOAT, (2, 6))
    outputs = fmt.run(model, inputs)
    assert list(outputs) == ["y"] and outputs["y"].shape == (2, 3)
    assert np.allclose(outputs["y"].sum(axis=1), 1.0, atol=1e-6)  # softmax
    with pytest.raises(FormatError, match="'x'"):
        fmt.run(model, {})


def test_tgz_tensors_outlive_their_model(tmp_path: Path) -> None:
    folder, _ = _models.mixed_model(tmp_path / "m.nnef")
    archive = _tgz(folder, tmp_path / "m.tgz")
    tensors = dict(nnef_format().load(archive).tensors)  # the model (and its document) is dropped
    gc.collect()
    original = nnef_format().load(folder)
    for key, tensor in tensors.items():
        assert tensor.tobytes() == original.tensors[key].tobytes(), key
