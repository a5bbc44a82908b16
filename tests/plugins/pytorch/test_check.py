# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`nnrconv check` on PyTorch models.

`.pt2` programs and TorchScript modules run in torch: lossless coding is exact, a fixed QP stays
within half a quantization step. TorchScript inputs are named by the forward schema; shapes come
from the inputs `torch.jit.trace` stored in the archive, and a scripted module (no shapes
anywhere) takes its inputs from `--inputs file.npz`. A state dict has no graph: `check` stops with
no graph to run: `check` compares its tensors (exit 1 when one exceeds --atol/--rtol).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import nnrconv
from nnrconv import nnc, testing
from nnrconv._check import check
from nnrconv.cli import main
from nnrconv.core import DType, InputSpec
from nnrconv_pytorch import PyTorchFormat
from tests.plugins.pytorch import _models

QP = -38
LOSSLESS = nnc.CodingOptions(lossless=True)


class TwoInputs(torch.nn.Module):
    """Control flow and two inputs: scripted, it keeps no example inputs and no shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(6, 4)
        self.norm = torch.nn.LayerNorm(4)

    def forward(self, features: torch.Tensor, offset: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
        out = self.norm(self.fc(features))
        if bool(offset.sum() > 0):
            out = out + offset
        return out * scale


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("check")
    paths = {}
    for name, container in (("cnn", "pt2"), ("mlp", "pt2"), ("cnn", "script"), ("mlp", "state_dict")):
        sub = folder / f"{name}-{container}"
        sub.mkdir()
        paths[f"{name}-{container}"] = _models.save(name, container, sub)[0]
    torch.manual_seed(5)
    scripted = folder / "two_inputs.pt"
    torch.jit.save(torch.jit.script(TwoInputs().eval()), scripted)
    paths["scripted"] = scripted
    return paths


@pytest.mark.parametrize("name", ["cnn-pt2", "mlp-pt2", "cnn-script"])
def test_lossless_check_is_exact(name: str, models: dict[str, Path]) -> None:
    report = check(models[name], options=LOSSLESS)
    assert report.format == "pytorch"
    assert report.exact and report.passed
    assert report.outputs and all(o.max_abs == 0 for o in report.outputs)
    assert report.tensors and all(t.bit_identical for t in report.tensors)


@pytest.mark.parametrize("name", ["cnn-pt2", "mlp-pt2"])
def test_fixed_qp_errors_stay_within_half_a_step(name: str, models: dict[str, Path]) -> None:
    report = check(models[name], options=nnc.CodingOptions(qp=QP, dq=False))
    testing.assert_errors_within_half_a_step(report, QP)
    # Integer buffers (num_batches_tracked) are never quantized.
    assert all(t.bit_identical for t in report.tensors if t.dtype == DType.INT64.name)
    assert all(o.snr_db > 20 for o in report.outputs)


def test_traced_torchscript_shapes_come_from_the_archive(models: dict[str, Path]) -> None:
    specs = PyTorchFormat().input_specs(nnrconv.load(models["cnn-script"]))
    assert specs == [InputSpec("x", DType.FLOAT, (2, 3, 10, 10))]


def test_plain_cli_check_of_traced_torchscript(models: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(models["cnn-script"]), "--lossless", "--atol", "0"]) == 0
    assert "EXACT" in capsys.readouterr().out


def test_scripted_torchscript_names_its_inputs_from_the_schema(models: dict[str, Path]) -> None:
    specs = PyTorchFormat().input_specs(nnrconv.load(models["scripted"]))
    # `self` is skipped, `scale` has a default and is not fed; nothing records shapes.
    assert specs == [InputSpec("features", DType.UNDEFINED, ()), InputSpec("offset", DType.UNDEFINED, ())]


def test_scripted_torchscript_checks_with_inputs(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "in.npz"
    rng = np.random.default_rng(0)
    np.savez(
        inputs,
        features=rng.standard_normal((3, 6)).astype(np.float32),
        offset=np.abs(rng.standard_normal((3, 4))).astype(np.float32),
    )
    argv = ["check", str(models["scripted"]), "--inputs", str(inputs), "--lossless", "--atol", "0"]
    assert main(argv) == 0
    assert "EXACT" in capsys.readouterr().out
    report = check(models["scripted"], inputs=inputs, options=nnc.CodingOptions(qp=QP, dq=False))
    assert not report.exact and report.outputs[0].shape == (3, 4)
    # Without inputs there is nothing to shape random ones from: a one-line error says what to do.
    assert main(["check", str(models["scripted"])]) != 0
    err = capsys.readouterr().err.strip()
    assert "--inputs" in err and len(err.splitlines()) == 1
    # Wrong names are refused by the core.
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((3, 6), np.float32))
    assert main(["check", str(models["scripted"]), "--inputs", str(wrong)]) != 0
    assert "features" in capsys.readouterr().err


def test_state_dict_check_compares_tensors(models: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(models["mlp-state_dict"]), "--lossless", "--atol", "0"]) == 0
    out = capsys.readouterr().out
    assert "EXACT" in out and "no graph to run; tensors compared" in out
    assert main(["check", str(models["mlp-state_dict"]), "--qp", "-20", "--atol", "1e-9"]) == 1
    assert "exceeds tolerance" in capsys.readouterr().out
