# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`nnrconv check` on TensorFlow models: lossless is exact, a fixed QP stays within half a step."""

from __future__ import annotations

from pathlib import Path

import pytest

from nnrconv import nnc, testing
from nnrconv._check import check
from nnrconv.cli import main
from tests.plugins.tensorflow._helpers import LOSSLESS

QP = -38


@pytest.mark.parametrize("name", ["cnn_savedmodel", "cnn.pb", "lstm.pb", "mlp_tfsave"])
def test_lossless_check_is_exact(name: str, tf_models: dict[str, Path]) -> None:
    report = check(tf_models[name], options=LOSSLESS)
    assert report.exact and report.passed and report.format == "tensorflow"
    assert report.outputs and all(o.max_abs == 0 for o in report.outputs)
    assert report.tensors and report.nnr_bytes > 0


@pytest.mark.parametrize("name", ["cnn_savedmodel", "lstm.pb"])
def test_fixed_qp_errors_stay_within_half_a_step(name: str, tf_models: dict[str, Path]) -> None:
    report = check(tf_models[name], options=nnc.CodingOptions(qp=QP, dq=False))
    testing.assert_errors_within_half_a_step(report, QP)
    assert all(o.snr_db > 20 for o in report.outputs)


@pytest.mark.parametrize("name", ["mlp_savedmodel", "mlp.pb"])
def test_cli_lossless_check_passes_with_zero_tolerance(
    name: str, tf_models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", str(tf_models[name]), "--lossless", "--atol", "0"]) == 0
    assert "tensorflow" in capsys.readouterr().out.lower()
