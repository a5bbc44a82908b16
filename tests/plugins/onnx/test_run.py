# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`nnrconv run` and `nnrconv.session` on ONNX models from `.nnr` and `.nnr.onnx`."""

from pathlib import Path

import numpy as np
import onnxruntime as ort

import nnrconv
from tests._run_kit import assert_runs_like_plain, compressed, plain_outputs

EXAMPLE = Path(__file__).parents[3] / "examples" / "tiny_cnn.onnx"


def test_run_from_nnr_and_embedded_matches_the_plain_model(tmp_path):
    assert_runs_like_plain(EXAMPLE, tmp_path, "m.nnr.onnx")


def test_session_is_an_onnxruntime_session_computing_the_same(tmp_path):
    feed, expected = plain_outputs(EXAMPLE, tmp_path / "x.npz")
    for path in compressed(EXAMPLE, tmp_path, "m.nnr.onnx"):
        session = nnrconv.session(path)
        assert isinstance(session, ort.InferenceSession)
        got = session.run(None, feed)
        np.testing.assert_allclose(got[0], next(iter(expected.values())), rtol=1e-5, atol=1e-6)
