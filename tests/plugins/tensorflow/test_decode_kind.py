# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""A `.nnr` with a TensorFlow topology decodes to the kind it carries, without `--to`."""

from __future__ import annotations

from pathlib import Path

import nnrconv
from tests.plugins.tensorflow._helpers import LOSSLESS, assert_same_outputs, assert_tensors_identical, cli, run
from tests.plugins.tensorflow._models import sample_input


def test_savedmodel_nnr_decodes_to_a_folder(tf_models: dict[str, Path], tmp_path: Path) -> None:
    source = tf_models["mlp_savedmodel"]
    nnr = tmp_path / "m.nnr"
    nnrconv.convert(source, nnr, options=LOSSLESS)
    out = tmp_path / "outdir"
    done = cli(nnr, out, "-q")
    assert done.returncode == 0, done.stderr
    assert (out / "saved_model.pb").is_file()
    original, back = nnrconv.load(source), nnrconv.load(out)
    assert_tensors_identical(original, back)
    assert_same_outputs(run(original, sample_input("mlp")), run(back, sample_input("mlp")))


def test_frozen_graph_nnr_decodes_to_a_graph_file(tf_models: dict[str, Path], tmp_path: Path) -> None:
    source = tf_models["mlp.pb"]
    nnr = tmp_path / "m.nnr"
    nnrconv.convert(source, nnr, options=LOSSLESS)
    out = tmp_path / "frozen"
    assert nnrconv.convert(nnr, out).target_format == "tensorflow"
    assert out.is_file()
    assert_tensors_identical(nnrconv.load(source), nnrconv.load(out, "tensorflow"))
