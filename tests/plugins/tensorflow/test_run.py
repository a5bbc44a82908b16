# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`nnrconv run` and `nnrconv.session` on frozen graphs and SavedModels from `.nnr` and embedded files."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import nnrconv
from tests._run_kit import assert_runs_like_plain, compressed, plain_outputs


def _no_temporary_folder(*args: object, **kwargs: object) -> str:
    raise AssertionError("the model went through a temporary folder")


EMBEDDED = {"mlp.pb": "m.nnr.pb", "mlp_savedmodel": "m.nnr_savedmodel"}


@pytest.mark.parametrize("name", ["mlp.pb", "cnn.pb", "mlp_savedmodel"])
def test_run_from_nnr_and_embedded_matches_the_plain_model(
    tf_models: dict[str, Path], tmp_path: Path, name: str
) -> None:
    assert_runs_like_plain(tf_models[name], tmp_path, EMBEDDED.get(name, "m.nnr.pb"))


@pytest.mark.parametrize("name", ["mlp.pb", "mlp_savedmodel"])
def test_session_is_a_concrete_function(
    tf_models: dict[str, Path], tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed, expected = plain_outputs(tf_models[name], tmp_path / "x.npz")
    paths = compressed(tf_models[name], tmp_path, EMBEDDED[name])
    monkeypatch.setattr(tempfile, "mkdtemp", _no_temporary_folder)  # SavedModels go through ram://
    for path in paths:
        function = nnrconv.session(path)
        assert isinstance(function, tf.types.experimental.ConcreteFunction)
        if name.endswith(".pb"):
            got = function(*(tf.constant(v) for v in feed.values()))
        else:
            got = function(**{k: tf.constant(v) for k, v in feed.items()})
        assert sorted(got) == sorted(expected)
        for key, value in expected.items():
            np.testing.assert_allclose(got[key].numpy(), value, rtol=1e-5, atol=1e-6)
