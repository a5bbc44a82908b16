# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`nnrconv check` on NNEF models: lossless is exact, a fixed QP stays within half a step."""

from __future__ import annotations

from pathlib import Path

import pytest

from nnrconv import nnc, testing
from nnrconv._check import check
from nnrconv.cli import main
from tests.plugins.nnef import _models

pytest.importorskip("nnef_tools")
pytest.importorskip("torch")

QP = -38


def _build(name: str, tmp_path: Path) -> Path:
    path, _ = _models.MODELS[name](tmp_path / f"{name}.nnef")
    return path


@pytest.mark.parametrize("name", _models.RUNNABLE)
def test_lossless_check_is_exact(tmp_path: Path, name: str) -> None:
    report = check(_build(name, tmp_path), options=nnc.CodingOptions(lossless=True))
    assert report.exact and report.passed and report.format == "nnef"
    assert report.outputs and all(o.max_abs == 0 for o in report.outputs)
    assert report.tensors and report.nnr_bytes > 0


@pytest.mark.parametrize("name", ["cnn_bn", "mlp"])
def test_fixed_qp_errors_stay_within_half_a_step(tmp_path: Path, name: str) -> None:
    report = check(_build(name, tmp_path), options=nnc.CodingOptions(qp=QP, dq=False))
    testing.assert_errors_within_half_a_step(report, QP)
    assert all(o.snr_db > 20 for o in report.outputs)


def test_cli_lossless_check_passes_with_zero_tolerance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(_build("cnn_bn", tmp_path)), "--lossless", "--atol", "0"]) == 0
    assert "nnef" in capsys.readouterr().out.lower()
