# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Fixtures of the TensorFlow plugin tests: the generated models are built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

from tests.plugins.tensorflow import _models


@pytest.fixture(scope="session")
def tf_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> path: "<kind>_savedmodel" (keras export), "<kind>.pb" (frozen), "mlp_tfsave", "dtypes.pb"."""
    root = tmp_path_factory.mktemp("tf_models")
    built: dict[str, Path] = {}
    for kind in _models.KINDS:
        built[f"{kind}_savedmodel"] = _models.saved_model(kind, root / f"{kind}_savedmodel")
        built[f"{kind}.pb"] = _models.frozen_graph(kind, root / f"{kind}.pb")
    built["mlp_tfsave"] = _models.saved_model("mlp", root / "mlp_tfsave", export=False)
    built["dtypes.pb"] = _models.dtypes_graph(root / "dtypes.pb")
    return built


@pytest.fixture(scope="session")
def keras_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """"keras" -> family.keras, "h5" -> family.h5 (the same generated model)."""
    from tests.plugins.tensorflow import _family_models

    return _family_models.save_keras(tmp_path_factory.mktemp("keras"))


@pytest.fixture(scope="session")
def tflite_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """"float" -> cnn.tflite, "int8" -> cnn_int8.tflite (full-integer quantized)."""
    from tests.plugins.tensorflow import _family_models

    return _family_models.save_tflite(tmp_path_factory.mktemp("tflite"))
