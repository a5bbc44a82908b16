# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`nnrconv run`: printed summaries, --output files, --json, and one-line errors with their exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import nnrconv
from nnrconv import _run
from nnrconv.cli import main
from nnrconv.core import ArrayTensor, Graph, Model

EXAMPLE = Path(__file__).parent.parent / "examples" / "tiny_cnn.onnx"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The example as .nnr (default coding), an input feed, and its plain outputs."""
    root = tmp_path_factory.mktemp("run")
    nnr = root / "m.nnr"
    nnrconv.convert(EXAMPLE, nnr)
    x = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.savez(root / "x.npz", input=x)
    return {"root": root, "nnr": nnr, "x": root / "x.npz"}


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_prints_name_shape_dtype_and_statistics(capsys, files):
    code, out, err = _cli(capsys, "run", files["nnr"], "--inputs", files["x"])
    expected = _run.run(files["nnr"], files["x"]).outputs["logits"]
    assert code == 0 and err == ""
    (line,) = [s for s in out.splitlines() if s.strip().startswith("logits")]
    assert "[1, 10] float32" in line and f"max {expected.max():.4g}" in line and f"min {expected.min():.4g}" in line


def test_json_and_output_file_hold_the_outputs(capsys, files, tmp_path):
    target = tmp_path / "y.npz"
    code, out, _ = _cli(capsys, "run", files["nnr"], "--inputs", files["x"], "--output", target, "--json")
    document = json.loads(out)
    assert code == 0 and document["format"] == "onnx" and document["feeds"] == 1
    (summary,) = document["outputs"]
    with np.load(target) as saved:
        y = saved["logits"]
    assert summary["shape"] == [1, 10] and summary["dtype"] == "float32"
    assert summary["max"] == pytest.approx(float(y.max())) and summary["nonfinite"] == 0
    np.testing.assert_array_equal(y, _run.run(files["nnr"], files["x"]).outputs["logits"])
    # The output is never overwritten without --force, and is with it.
    code, _, err = _cli(capsys, "run", files["nnr"], "--inputs", files["x"], "--output", target)
    assert code == 7 and "--force" in err and len(err.strip().splitlines()) == 1
    assert _cli(capsys, "run", files["nnr"], "--inputs", files["x"], "--output", target, "--force")[0] == 0


def test_stacked_samples_give_stacked_outputs(files, tmp_path):
    x = np.random.default_rng(4).standard_normal((3, 1, 3, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "three.npz", input=x)
    result = _run.run(files["nnr"], tmp_path / "three.npz")
    assert result.feeds == 3 and result.outputs["logits"].shape == (3, 1, 10)
    np.savez(tmp_path / "one.npz", input=x[1])
    one = _run.run(files["nnr"], tmp_path / "one.npz").outputs["logits"]
    np.testing.assert_array_equal(result.outputs["logits"][1], one)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"other": np.zeros((1, 3, 32, 32), np.float32)}, "input 'input' is missing"),
        ({"input": np.zeros((1, 3, 32, 32), np.float32), "extra": np.zeros(1)}, "array 'extra' is not an input"),
        ({"input": np.zeros((3, 32, 32), np.float32)}, "has 3 dimensions"),
        ({"input": np.zeros((1, 3, 32, 32), np.float64)}, "is float64"),
        ({"input": np.zeros((1, 4, 32, 32), np.float32)}, "fixes it at 3"),
    ],
    ids=["missing", "extra", "rank", "dtype", "shape"],
)
def test_misfit_inputs_are_one_line_errors(capsys, files, tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    code, out, err = _cli(capsys, "run", files["nnr"], "--inputs", tmp_path / "bad.npz")
    assert code == 3 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err and "bad.npz" in err


def test_json_errors_are_json(capsys, files, tmp_path):
    code, out, _ = _cli(capsys, "run", files["nnr"], "--inputs", tmp_path / "absent.npz", "--json")
    assert code == 3 and json.loads(out)["exit_code"] == 3


def test_tensors_without_topology_have_nothing_to_run(capsys, files, tmp_path):
    tensors = {"w": ArrayTensor("w", np.ones((4, 4), np.float32))}
    (tmp_path / "w.nnr").write_bytes(nnrconv.encode(Model(Graph(name="tensors"), tensors, source_format="")))
    code, _, err = _cli(capsys, "run", tmp_path / "w.nnr", "--inputs", files["x"])
    assert code == 5 and "no graph to run" in err
    with pytest.raises(nnrconv.NNRConvError, match="no graph to run"):
        nnrconv.session(tmp_path / "w.nnr")


def test_a_weights_file_has_nothing_to_run(capsys, files, tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.ones(4, 4)}, tmp_path / "w.pt")
    nnrconv.convert(tmp_path / "w.pt", tmp_path / "w.nnr")
    code, _, err = _cli(capsys, "run", tmp_path / "w.nnr", "--inputs", files["x"])
    assert code == 5 and "no graph to run" in err
