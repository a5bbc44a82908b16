# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""--force replaces a SavedModel folder nnrconv wrote, and never one holding anything else."""

from __future__ import annotations

from pathlib import Path

from nnrconv.cli import main
from nnrconv_tensorflow._format import TensorFlowFormat
from tests.plugins.tensorflow import _models


def _run(capsys, *args: object) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_force_replaces_an_own_savedmodel_only(tmp_path: Path, capsys) -> None:
    source = _models.saved_model("mlp", tmp_path / "src_savedmodel")
    assert TensorFlowFormat().is_own_output(source)  # a Keras export has the standard layout
    bitstream = tmp_path / "m.nnr"
    assert _run(capsys, source, bitstream, "--lossless", "-q")[0] == 0
    target = tmp_path / "out_savedmodel"
    assert _run(capsys, bitstream, target, "-q")[0] == 0
    assert TensorFlowFormat().is_own_output(target)
    assert _run(capsys, bitstream, target, "--force", "-q")[0] == 0
    assert (target / "saved_model.pb").is_file()
    (target / "variables" / "notes.txt").write_text("mine")
    code, err = _run(capsys, bitstream, target, "--force")
    assert code == 7 and "did not write" in err
    assert (target / "variables" / "notes.txt").read_text() == "mine"
