# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`nnrconv check`: round trips through NNR judged by the native runtime's outputs."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from nnrconv import _api, nnc
from nnrconv._check import check, snr_db
from nnrconv.cli import main
from nnrconv.core import ArrayTensor

EXAMPLE = Path(__file__).parents[1] / "examples" / "tiny_cnn.onnx"
pytest.importorskip("onnxruntime")
LOSSLESS = nnc.CodingOptions(lossless=True)


def test_lossless_round_trip_is_reported_exact():
    report = check(EXAMPLE, options=LOSSLESS)
    assert report.exact and report.passed
    assert [o.name for o in report.outputs] == ["logits"]
    assert report.outputs[0].max_abs == 0 and report.outputs[0].argmax_agreement == 1.0
    assert len(report.tensors) == 10 and all(t.snr_db == math.inf for t in report.tensors)
    assert report.parameters == 5468 and report.nnr_bytes > 0
    assert math.isclose(report.bits_per_parameter, 8 * report.nnr_bytes / report.parameters)


def test_json_report(capsys):
    assert main(["check", str(EXAMPLE), "--json", "--atol", "0", "--lossless"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["exact"] is True and doc["passed"] is True
    assert doc["outputs"][0]["snr_db"] == "inf"
    assert doc["sizes"]["nnr_bytes"] > 0 and set(doc["seconds"]) >= {"encode", "decode", "run_original"}


@pytest.fixture
def lossy_decode(monkeypatch):
    """Perturb one decoded weight by a known amount, as quantization would."""
    original = _api.decode

    def perturbed(data, *, source="<bytes>", jobs=None):
        model = original(data, source=source, jobs=jobs)
        tensor = model.tensors["fc.weight"]
        noisy = tensor.numpy() + np.float32(1e-3)
        model.tensors["fc.weight"] = ArrayTensor(tensor.name, noisy, role=tensor.role)
        return model

    monkeypatch.setattr(_api, "decode", perturbed)


def test_tolerances_decide_the_exit_code(lossy_decode, capsys):
    assert main(["check", str(EXAMPLE), "--lossless"]) == 0
    out = capsys.readouterr().out
    assert "LOSSY" in out and "fc.weight" in out
    assert main(["check", str(EXAMPLE), "--atol", "1e-9", "--lossless"]) == 1
    assert "exceeds tolerance" in capsys.readouterr().out
    assert main(["check", str(EXAMPLE), "--atol", "1.0", "--lossless"]) == 0


def test_lossy_weight_report_matches_the_perturbation(lossy_decode):
    report = check(EXAMPLE, options=LOSSLESS)
    fc = next(t for t in report.tensors if t.name == "fc.weight")
    assert not fc.bit_identical and fc.max_abs == pytest.approx(1e-3, rel=1e-3)
    assert 0 < report.outputs[0].max_abs < 1e-1
    assert not report.exact


def test_inputs_file(tmp_path):
    rng = np.random.default_rng(7)
    np.savez(tmp_path / "in.npz", input=rng.standard_normal((1, 3, 32, 32)).astype(np.float32))
    assert check(EXAMPLE, inputs=tmp_path / "in.npz", options=LOSSLESS).exact
    np.savez(tmp_path / "wrong.npz", image=np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(Exception, match=r"wrong\.npz: input 'input' is missing and array 'image' is not an input"):
        check(EXAMPLE, inputs=tmp_path / "wrong.npz")


def test_snr():
    a = np.ones(100)
    assert snr_db(a, a) == math.inf
    assert snr_db(a, a + 0.1) == pytest.approx(20.0)


def test_default_check_is_lossy_at_the_snr_target():
    report = check(EXAMPLE)
    assert not report.exact and report.passed
    lossy = [t for t in report.tensors if not t.bit_identical]
    assert lossy and all(t.snr_db >= nnc.DEFAULT_SNR_DB for t in lossy)
    assert report.outputs[0].argmax_agreement == 1.0 and report.outputs[0].snr_db > 30


@pytest.mark.parametrize(
    ("args", "mode"), [([], "snr"), (["--snr", "30"], "snr"), (["--qp", "-38"], "qp"), (["--lossless"], "lossless")]
)
def test_cli_coding_options_reach_the_check(monkeypatch, capsys, args, mode):
    seen = []
    original = _api.encode

    def spy(model, **kwargs):
        seen.append(kwargs["options"])
        return original(model, **kwargs)

    monkeypatch.setattr(_api, "encode", spy)
    assert main(["check", str(EXAMPLE), "--no-dq", "--scan-order", "2", "--jobs", "1", *args]) == 0
    (options,) = seen
    assert (options.mode, options.dq, options.scan_order, options.jobs) == (mode, False, 2, 1)
    if args[:1] == ["--snr"]:
        assert options.snr_db == 30


def test_cli_refuses_two_modes(capsys):
    assert main(["check", str(EXAMPLE), "--qp", "-38", "--lossless"]) == 2
    assert "--qp and --lossless" in capsys.readouterr().err
