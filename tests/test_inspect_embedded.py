# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`nnrconv inspect` on native containers with NNR inside: units, integrity, container digest."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

import nnrconv
from nnrconv import nnc
from nnrconv.cli import main
from nnrconv.core import FormatError
from nnrconv.core._digest_parts import UNVERIFIED, VERIFIED

EXAMPLE = Path(__file__).parent.parent / "examples" / "tiny_cnn.onnx"


def _inspect(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = main(["inspect", str(path), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _json(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict, list[dict]]:
    code, out, _ = _inspect(path, capsys, "--json")
    assert code == 0
    head, *units = (json.loads(line) for line in out.splitlines())
    return head, units


def _assert_units_match_the_model(path: Path, units: list[dict]) -> None:
    """Every coded tensor is listed once with its declared type, shape and unit size."""
    model = nnrconv.load(path)
    coded = {u["tensor"]: u for u in units if u["unit_type"] == "NNR_NDU"}
    assert coded
    for name, unit in coded.items():
        tensor = model.tensors[name]
        assert unit["size"] == len(tensor.ndu)  # type: ignore[attr-defined]
        assert unit["dtype"] == tensor.dtype.name and tuple(unit["shape"]) == tuple(tensor.shape)
        assert unit["decoded_bytes"] == tensor.numpy().nbytes
    assert [u["unit_type"] for u in units[:2]] == ["NNR_STR", "NNR_MPS"]


@pytest.mark.parametrize("suffix", [".nnr.onnx", ".nnr.nnef", ".nnr.tgz"])
def test_containers_list_their_units_and_verified_digest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    path = tmp_path / f"m{suffix}"
    assert main(["convert", str(EXAMPLE), str(path), "-q"]) == 0
    head, units = _json(path, capsys)
    assert head["container_digest"] == VERIFIED and head["integrity"] == "verified"
    assert head["units"] == len(units)
    _assert_units_match_the_model(path, units)
    code, out, _ = _inspect(path, capsys)
    assert code == 0
    assert "container digest: verified" in out and "integrity: verified" in out
    assert f"total: {sum(u['unit_type'] == 'NNR_NDU' for u in units)} coded tensors" in out


def test_pytorch_archive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    from tests.plugins.pytorch import _models

    source, _, _ = _models.save("cnn", "pt2", tmp_path)
    path = tmp_path / "m.nnr.pt2"
    assert main(["convert", str(source), str(path), "-q"]) == 0
    head, units = _json(path, capsys)
    assert head["format"] == "pytorch" and head["container_digest"] == VERIFIED
    _assert_units_match_the_model(path, units)


@pytest.mark.parametrize("kind", ["pb", "keras"])
def test_tensorflow_reports_the_plugin_status(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    pytest.importorskip("tensorflow")
    if kind == "pb":
        from tests.plugins.tensorflow import _models

        source = _models.frozen_graph("mlp", tmp_path / "mlp.pb")
    else:
        from tests.plugins.tensorflow import _family_models

        source = _family_models.save_keras(tmp_path)["keras"]
    path = tmp_path / f"m.nnr.{kind}"
    assert main(["convert", str(source), str(path), "-q"]) == 0
    head, units = _json(path, capsys)
    assert head["format"] == "tensorflow" and head["integrity"] == "verified"
    fmt = nnrconv.core.get_registry().get("tensorflow")
    assert head["container_digest"] == fmt.container_digest_status(path)  # whatever the plugin says
    _assert_units_match_the_model(path, units)


def test_without_digest_or_record_it_says_unverified(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nnrconv_onnx import _digest

    path = tmp_path / "m.nnr.onnx"
    assert main(["convert", str(EXAMPLE), str(path), "-q"]) == 0
    proto = onnx.load(path)
    _digest.strip(proto)
    onnx.save(proto, path)
    head, _ = _json(path, capsys)
    assert head["container_digest"] == UNVERIFIED and head["integrity"] == "verified"


def test_damaged_container_prints_the_status_and_exits_4(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.nnr.nnef"
    assert main(["convert", str(EXAMPLE), str(path), "-q"]) == 0
    graph = bytearray((path / "graph.nnef").read_bytes())
    graph[10] ^= 0x04
    (path / "graph.nnef").write_bytes(graph)
    code, out, err = _inspect(path, capsys)
    assert code == 4
    assert "container digest: damaged: " in out and "graph.nnef (byte offset 0) differs" in out
    assert err.count("\n") == 1 and "graph.nnef (byte offset 0) differs from the container digest" in err


def test_plain_model_and_bitstream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(FormatError, match="no NNR-coded tensors"):
        nnrconv.inspect_container(EXAMPLE)
    code, _, err = _inspect(EXAMPLE, capsys)
    assert code == 3 and "plain onnx model" in err
    stream = tmp_path / "m.nnr"
    assert main(["convert", str(EXAMPLE), str(stream), "-q"]) == 0
    assert nnrconv.inspect_container(stream) is None  # a bitstream: `inspect` lists its units as before
    code, out, _ = _inspect(stream, capsys)
    assert code == 0 and "integrity: verified" in out and len(nnc.inspect_units(stream.read_bytes())) > 2
