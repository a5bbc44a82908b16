# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""TorchScript under `.jit` / `.torchscript` names, and `.nnr` → TorchScript without `--to`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import nnrconv
from nnrconv import nnc
from nnrconv.cli import main
from nnrconv.core import get_registry
from tests.plugins.pytorch import _models

LOSSLESS = nnc.CodingOptions(lossless=True)


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor, torch.Tensor]:
    folder = tmp_path_factory.mktemp("jit")
    module, example = _models.build("cnn")
    path = folder / "cnn.jit"
    torch.jit.save(torch.jit.trace(module, (example,)), path)
    with torch.no_grad():
        expected = module(example)
    return path, example, expected


@pytest.mark.parametrize("suffix", [".jit", ".torchscript"])
def test_script_names_round_trip_through_nnr(scripted, tmp_path: Path, suffix: str) -> None:  # type: ignore[no-untyped-def]
    source, example, expected = scripted
    assert get_registry().for_output(tmp_path / f"m{suffix}").name == "pytorch"
    nnr = tmp_path / "m.nnr"
    nnrconv.convert(source, nnr, options=LOSSLESS)
    back = tmp_path / f"back{suffix}"
    result = nnrconv.convert(nnr, back)
    assert result.target_format == "pytorch"
    with torch.no_grad():
        assert torch.equal(torch.jit.load(back)(example), expected)


def test_nnr_writes_torchscript_without_to(scripted, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    source, example, expected = scripted
    nnr = tmp_path / "m.nnr"
    nnrconv.convert(source, nnr, options=LOSSLESS)
    back = tmp_path / "restored_model"
    assert main([str(nnr), str(back)]) == 0, capsys.readouterr().err
    with torch.no_grad():
        assert torch.equal(torch.jit.load(back)(example), expected)


def test_embedded_jit_round_trip(scripted, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source, example, expected = scripted
    embedded = tmp_path / "m.nnr.jit"
    nnrconv.convert(source, embedded, options=LOSSLESS)
    back = tmp_path / "plain.jit"
    nnrconv.convert(embedded, back)
    with torch.no_grad():
        assert torch.equal(torch.jit.load(back)(example), expected)


def test_state_dict_is_not_written_as_torchscript(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "sd.pt"
    torch.save(_models.build("mlp")[0].state_dict(), source)
    assert main([str(source), str(tmp_path / "sd.jit")]) == 5
    assert "no graph to write as a TorchScript module" in capsys.readouterr().err
    assert not (tmp_path / "sd.jit").exists()
