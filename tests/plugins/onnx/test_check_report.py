# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`nnrconv check` reports: degenerate outputs, --worst, --samples, --inputs, and --json always JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnrconv.cli import main

LAYERS = 12


def _model(path: Path) -> Path:
    """x → 12 MatMuls → logits, plus an output that is zero whatever x is (x · 0)."""
    rng = np.random.default_rng(0)
    inits, nodes, current = [], [], "x"
    for i in range(LAYERS):
        inits.append(numpy_helper.from_array((rng.standard_normal((8, 8)) * 0.3).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [current, f"w{i}"], [f"h{i}"]))
        current = f"h{i}"
    inits.append(numpy_helper.from_array(np.zeros((1, 8), np.float32), "zero"))
    nodes += [helper.make_node("Identity", [current], ["logits"]), helper.make_node("Mul", ["x", "zero"], ["dead"])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 8]) for n in ("logits", "dead")],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_text_report_flags_degenerate_outputs_and_lists_the_worst(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = _model(tmp_path / "m.onnx")
    assert main(["check", str(path), "--worst", "3", "--samples", "4"]) == 0
    out = capsys.readouterr().out
    logits = next(line for line in out.splitlines() if line.startswith("  logits"))
    assert "cosine 0.99" in logits and "argmax agreement" in logits and "DEGENERATE" not in logits
    dead = next(line for line in out.splitlines() if line.startswith("  dead"))
    assert "SNR n/a dB" in dead and "DEGENERATE (all-zero)" in dead
    assert "warning: degenerate outputs: SNR is meaningless for dead (all-zero)" in out
    assert "inputs: synthesized (seed 0, 4 samples): x [1, 8] float32" in out
    assert f"of {LAYERS + 1} bit-identical; the 3 of lowest SNR:" in out
    listed = [line for line in out.splitlines() if line.startswith("  w") or line.startswith("  zero")]
    assert len(listed) == 3 and all("identical" not in line for line in listed)
    assert main(["check", str(path)]) == 0
    assert "the 10 of lowest SNR" in capsys.readouterr().out  # the default in text


def test_json_lists_every_weight_unless_limited(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _model(tmp_path / "m.onnx")
    assert main(["check", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["tensors"]) == doc["weights_total"] == LAYERS + 1
    outputs = {o["name"]: o for o in doc["outputs"]}
    assert outputs["dead"]["degenerate"] == "all-zero" and outputs["dead"]["snr_db"] is None
    assert outputs["logits"]["snr_db"] > 30 and 0.99 < outputs["logits"]["cosine"] <= 1
    assert doc["warnings"] and "dead" in doc["warnings"][0]
    assert main(["check", str(path), "--json", "--worst", "2"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["tensors"]) == doc["weights_listed"] == 2
    snrs = [t["snr_db"] for t in doc["tensors"]]
    assert snrs == sorted(snrs)


def test_inputs_folder_and_stacked_npz(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _model(tmp_path / "m.onnx")
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "stack.npz", x=rng.standard_normal((5, 2, 8)).astype(np.float32))
    assert main(["check", str(path), "--json", "--lossless", "--inputs", str(tmp_path / "stack.npz")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["exact"] and doc["outputs"][0]["feeds"] == 5 and doc["outputs"][0]["shape"] == [2, 8]
    folder = tmp_path / "feeds"
    folder.mkdir()
    for i in range(3):
        np.savez(folder / f"{i}.npz", x=rng.standard_normal((1, 8)).astype(np.float32))
    assert main(["check", str(path), "--json", "--inputs", str(folder)]) == 0
    assert json.loads(capsys.readouterr().out)["outputs"][0]["feeds"] == 3


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--inputs", "{tmp}/bad.npz"], 3, "bad.npz: cannot read inputs"),
        (["--input-shape", "x:1,9"], 2, "dimension 1 is fixed at 8"),
        (["--input-shape", "x"], 2, "expected NAME:DIMS"),
        (["--samples", "0"], 2, "--samples"),
        (["--qp", "-38", "--lossless"], 2, "choose different modes"),
    ],
)
def test_json_errors_are_json_with_the_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], code: int, message: str
) -> None:
    path = _model(tmp_path / "m.onnx")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    args = ["check", str(path), "--json", *(a.replace("{tmp}", str(tmp_path)) for a in extra)]
    assert main(args) == code
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["exit_code"] == code and message in doc["error"] and captured.err == ""
    # Without --json the same error goes to stderr (click adds its usage lines to usage errors).
    assert main([a for a in args if a != "--json"]) == code
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err
