# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""NNEF → NNR → NNEF round trips: identical graph text, bit-identical `.dat` files, identical outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nnrconv
from nnrconv import _api, nnc
from nnrconv.core import BitstreamError
from tests.plugins.nnef import _models
from tests.plugins.nnef._helpers import (
    assert_same_files,
    assert_same_outputs,
    assert_tensors_identical,
    carried_labels,
    cli,
    convert_lossless,
    model_files,
    nnef_format,
    simulate_nnr,
)


@pytest.fixture(params=sorted(_models.MODELS))
def built(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path, dict[str, np.ndarray]]:
    path, inputs = _models.MODELS[request.param](tmp_path / "src" / "m.nnef")
    return request.param, path, inputs


def test_topology_roundtrip_is_exact(built: tuple[str, Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    _, path, _ = built
    original = nnef_format().load(path)
    restored = simulate_nnr(original)
    assert_tensors_identical(original, restored)
    nnef_format().save(restored, tmp_path / "out.nnef")
    assert_same_files(path, tmp_path / "out.nnef")


def test_nnr_roundtrip_folder_and_tgz(built: tuple[str, Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    name, path, inputs = built
    nnr = tmp_path / "m.nnr"
    convert_lossless(path, nnr)
    nnrconv.convert(nnr, tmp_path / "back.nnef")
    nnrconv.convert(nnr, tmp_path / "back.tgz")
    assert_same_files(path, tmp_path / "back.nnef")
    assert_same_files(path, tmp_path / "back.tgz")
    # and from the .tgz back into NNR, the same bitstream
    convert_lossless(tmp_path / "back.tgz", tmp_path / "again.nnr")
    assert (tmp_path / "again.nnr").read_bytes() == nnr.read_bytes()
    units = _api.inspect(nnr)
    topologies = [u.topology_storage_format for u in units if u.unit_type == "NNR_TPL"][1:]  # record first
    assert topologies == ["NNR_TPL_NNEF"]
    assert [u.tensor for u in units if u.unit_type == "NNR_NDU"] == carried_labels(path)
    if name in _models.RUNNABLE:
        fmt = nnef_format()
        before = fmt.run(nnrconv.load(path), inputs)
        assert_same_outputs(before, fmt.run(nnrconv.load(tmp_path / "back.nnef"), inputs))
        assert_same_outputs(before, fmt.run(nnrconv.load(nnr), inputs))


def test_plain_graph_topology_is_the_graph_text(tmp_path: Path) -> None:
    path, _ = _models.cnn_model(tmp_path / "m.nnef")
    convert_lossless(path, tmp_path / "m.nnr")
    decoded = nnc.decode_model((tmp_path / "m.nnr").read_bytes())
    assert decoded.topology == (path / "graph.nnef").read_bytes()


def test_mixed_model_keeps_headers_quant_and_other_types_in_topology(tmp_path: Path) -> None:
    path, _ = _models.mixed_model(tmp_path / "m.nnef")
    convert_lossless(path, tmp_path / "m.nnr")
    decoded = nnc.decode_model((tmp_path / "m.nnr").read_bytes())
    carried = carried_labels(path)
    assert {"legacy/w", "w"} <= set(decoded.tensors) == set(carried)
    text, sidecar = decoded.topology.split(b"\0", 1)
    assert text == (path / "graph.nnef").read_bytes()
    files = model_files(path)
    assert files["graph.quant"] in sidecar and files["legacy/w.dat"][:128] in sidecar
    for label in ("half", "ints", "flags", "legacy/quantized", "legacy/ints", "vendor"):
        if label not in carried:
            assert files[f"{label}.dat"] in sidecar, label


def test_cli_roundtrip_and_inspect(tmp_path: Path) -> None:
    path, inputs = _models.cnn_model(tmp_path / "src" / "m.nnef")
    nnr, back = tmp_path / "m.nnr", tmp_path / "back.nnef.tgz"
    lossless = ["--lossless"] if "--lossless" in cli("convert", "--help").stdout else []
    for source, target in ((path, nnr), (nnr, back)):
        result = cli(source, target, *(lossless if target == nnr else []))
        assert result.returncode == 0, result.stderr
    assert_same_files(path, back)
    result = cli("inspect", "--json", nnr)
    assert result.returncode == 0, result.stderr
    units = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    topologies = [u["topology_storage_format"] for u in units if u["unit_type"] == "NNR_TPL"][1:]  # record first
    assert topologies == ["NNR_TPL_NNEF"]
    ndus = [u["tensor"] for u in units if u["unit_type"] == "NNR_NDU"]
    assert ndus == carried_labels(path) and len(ndus) == 8  # conv (2), batch norm (4), linear (2)
    fmt = nnef_format()
    assert_same_outputs(fmt.run(nnrconv.load(path), inputs), fmt.run(nnrconv.load(back), inputs))


def test_topology_and_tensor_mismatches_are_bitstream_errors(tmp_path: Path) -> None:
    path, _ = _models.mlp_model(tmp_path / "m.nnef")
    model = nnef_format().load(path)
    topology = nnef_format().topology_bytes(model, set(model.tensors))
    tensors = {k: t for k, t in model.tensors.items()}
    missing = {k: t for k, t in tensors.items() if k != "b2"}
    with pytest.raises(BitstreamError, match=r"'b2'.*neither"):
        nnef_format().from_topology(topology, missing)
    extra = {**tensors, "ghost": tensors["w1"]}
    with pytest.raises(BitstreamError, match="ghost"):
        nnef_format().from_topology(topology, extra)
    wrong = {**tensors, "w1": tensors["b1"]}
    with pytest.raises(BitstreamError, match="w1"):
        nnef_format().from_topology(topology, wrong)
    with pytest.raises(BitstreamError, match="no valid NNEF graph"):
        nnef_format().from_topology(b"version 1.0; graph", tensors)


def test_model_written_by_nnef_tools_converter(tmp_path: Path) -> None:
    """A torch CNN exported to ONNX, converted by nnef-tools to a compressed NNEF model, round-trips."""
    pytest.importorskip("onnx")
    pytest.importorskip("torch")
    pytest.importorskip("nnef_tools")
    from tests.plugins.onnx import _models as onnx_models

    source, inputs = onnx_models.torch_model("cnn", tmp_path / "m.onnx")
    converted = tmp_path / "conv.nnef"
    result = subprocess.run(
        [sys.executable, "-m", "nnef_tools.convert", "--input-format", "onnx", "--output-format", "nnef",
         "--input-model", str(source), "--output-model", str(converted), "--compress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    archive = tmp_path / "conv.nnef.tgz"
    assert result.returncode == 0 and archive.is_file(), result.stderr
    nnr, back = tmp_path / "m.nnr", tmp_path / "back.nnef"
    convert_lossless(archive, nnr)
    nnrconv.convert(nnr, back)
    assert_same_files(archive, back)
    assert len(carried_labels(archive)) == 10
    fmt = nnef_format()
    (spec,) = fmt.input_specs(nnrconv.load(back))  # nnef-tools names it 'external1'
    (array,) = inputs.values()
    assert spec.shape == array.shape
    feed = {spec.name: array}
    assert_same_outputs(fmt.run(nnrconv.load(archive), feed), fmt.run(nnrconv.load(back), feed))
