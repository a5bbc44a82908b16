# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Inference sessions straight from compressed models match the restored plain model exactly."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import nnrconv
import nnrconv_onnx
from nnrconv.core import UnsupportedError
from nnrconv_onnx import _session

EXAMPLE = Path(__file__).parents[3] / "examples" / "tiny_cnn.onnx"


@pytest.fixture
def coded(tmp_path):
    target = tmp_path / "m.nnr"
    nnrconv.convert(EXAMPLE, target)
    plain = tmp_path / "plain.onnx"
    nnrconv.convert(target, plain)
    return target, plain


def _outputs(session, x):
    return session.run(None, {"input": x})


def test_session_from_nnr_matches_restored_model(coded):
    nnr, plain = coded
    x = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)
    expected = _outputs(ort.InferenceSession(str(plain), providers=["CPUExecutionProvider"]), x)
    got = _outputs(nnrconv_onnx.inference_session(nnr), x)
    assert all(np.array_equal(a, b) for a, b in zip(expected, got, strict=True))
    assert not any(p.suffix == ".onnx" and p != plain for p in nnr.parent.iterdir())


def test_large_model_path_feeds_initializers_without_serialising_them(coded, monkeypatch):
    nnr, plain = coded
    monkeypatch.setattr(_session, "INLINE_LIMIT", 0)
    x = np.random.default_rng(4).standard_normal((1, 3, 32, 32)).astype(np.float32)
    session = nnrconv_onnx.inference_session(nnr)
    assert len(session._nnrconv_initializers[0]) == 3  # the tensors of 1 KiB and more
    expected = _outputs(ort.InferenceSession(str(plain), providers=["CPUExecutionProvider"]), x)
    assert all(np.array_equal(a, b) for a, b in zip(expected, _outputs(session, x), strict=True))


def test_a_model_without_onnx_topology_is_refused():
    model = nnrconv.Model(nnrconv.core.Graph(), {}, source_format="")
    with pytest.raises(UnsupportedError, match="needs an ONNX topology"):
        nnrconv_onnx.inference_session(model)
