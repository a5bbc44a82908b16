# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`nnrconv check` on a real trained classifier (PP-OCR text-orientation, MobileNetV3-small)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from nnrconv import nnc
from nnrconv._check import check
from nnrconv.cli import main
from nnrconv.nnc import cabac

# Located without importing the package: its __init__ needs OpenCV, which the model file does not.
_SPEC = importlib.util.find_spec("rapidocr_onnxruntime")
MODEL = (
    Path(_SPEC.submodule_search_locations[0]) / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    if _SPEC and _SPEC.submodule_search_locations
    else Path("missing")
)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not MODEL.is_file(), reason="pip install --no-deps rapidocr-onnxruntime==1.4.4 (scripts/setup does)"
    ),
]


def test_lossless_round_trip_is_exact():
    report = check(MODEL, options=nnc.CodingOptions(lossless=True))
    assert report.exact and report.passed
    assert report.parameters > 130_000
    assert all(o.max_abs == 0 for o in report.outputs)


def test_lossy_errors_follow_the_quantization_step():
    qp = -38
    report = check(MODEL, options=nnc.CodingOptions(qp=qp, dq=False))
    step = cabac.step_size(qp)
    floats = [t for t in report.tensors if t.dtype == "FLOAT" and np.prod(t.shape) >= 16]
    assert floats and not report.exact
    # Uniform reconstruction: no weight moves by more than half a step (1-D tensors use a finer QP).
    assert max(t.max_abs for t in floats) <= step / 2 * (1 + 1e-6)
    assert min(t.snr_db for t in floats) > 20
    (logits,) = report.outputs
    assert logits.argmax_agreement is not None and logits.argmax_agreement >= 0.9
    assert 0 < logits.max_abs < 0.1


def test_exit_codes_follow_atol(capsys):
    assert main(["check", str(MODEL), "--lossless", "--atol", "0"]) == 0
    assert main(["check", str(MODEL), "--qp", "-30", "--atol", "1e-9"]) == 1
    assert "exceeds tolerance" in capsys.readouterr().out
