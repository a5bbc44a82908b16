# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`nnrconv run` and `nnrconv.session` on NNEF from `.nnr` and `.nnr.nnef`; the interpreter is built in memory."""

import tempfile
from pathlib import Path

import numpy as np
import pytest

import nnrconv
from tests._run_kit import assert_runs_like_plain, compressed, plain_outputs
from tests.plugins.nnef import _models

pytest.importorskip("nnef_tools")


def _no_temporary_folder(*args: object, **kwargs: object) -> str:
    raise AssertionError("the model went through a temporary folder")


@pytest.mark.parametrize("name", ["cnn_bn", "mlp", "nested_labels"])
def test_run_from_nnr_and_embedded_matches_the_plain_model(tmp_path: Path, name: str) -> None:
    source, _ = _models.MODELS[name](tmp_path / f"{name}.nnef")
    assert_runs_like_plain(source, tmp_path, "m.nnr.nnef")


def test_session_is_the_interpreter_and_writes_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nnef_tools.interpreter.pytorch import Interpreter

    source, _ = _models.MODELS["cnn_bn"](tmp_path / "cnn.nnef")
    feed, expected = plain_outputs(source, tmp_path / "x.npz")
    paths = compressed(source, tmp_path, "m.nnr.nnef")
    monkeypatch.setattr(tempfile, "mkdtemp", _no_temporary_folder)
    for path in paths:
        interpreter = nnrconv.session(path)
        assert isinstance(interpreter, Interpreter)
        got = interpreter(list(feed.values()))
        for name, value in expected.items():
            np.testing.assert_allclose(np.asarray(got[name]), value, rtol=1e-5, atol=1e-6)
