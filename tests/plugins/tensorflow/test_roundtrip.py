# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""TensorFlow -> NNR -> TensorFlow: every variable bit-identical and TensorFlow outputs identical."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import nnrconv
from nnrconv import nnc
from nnrconv.core import DType
from tests.plugins.tensorflow import _models
from tests.plugins.tensorflow._helpers import (
    assert_same_outputs,
    assert_tensors_identical,
    cli,
    exact_nnr,
    nnr_roundtrip,
    run,
    simulate_nnr,
    tf_format,
)

NAMES = [f"{kind}{suffix}" for kind in _models.KINDS for suffix in ("_savedmodel", ".pb")] + ["mlp_tfsave"]


def _kind(name: str) -> str:
    return name.split("_")[0].split(".")[0]


def _back_name(name: str) -> str:
    return "back.pb" if name.endswith(".pb") else "back_savedmodel"


@pytest.mark.parametrize("name", NAMES)
def test_topology_roundtrip_is_exact(name: str, tf_models: dict[str, Path], tmp_path: Path) -> None:
    fmt = tf_format()
    original = fmt.load(tf_models[name])
    restored = simulate_nnr(original)
    assert_tensors_identical(original, restored)
    out = tmp_path / _back_name(name)
    fmt.save(restored, out)
    x = _models.sample_input(_kind(name))
    assert_same_outputs(run(original, x), run(fmt.load(out), x))


@pytest.mark.parametrize("name", NAMES)
def test_nnr_roundtrip_through_convert(name: str, tf_models: dict[str, Path], tmp_path: Path) -> None:
    source = tf_models[name]
    nnr, back = nnr_roundtrip(source, tmp_path, _back_name(name))
    original, restored = nnrconv.load(source), nnrconv.load(back)
    assert_tensors_identical(original, restored)
    assert_tensors_identical(original, nnrconv.load(nnr))
    x = _models.sample_input(_kind(name))
    assert_same_outputs(run(original, x), run(restored, x))


def test_lossless_backend_carries_every_dtype_exactly(tf_models: dict[str, Path]) -> None:
    original = tf_format().load(tf_models["dtypes.pb"])
    assert_tensors_identical(original, exact_nnr(original))


def test_lossy_default_still_rebuilds_a_runnable_model(tf_models: dict[str, Path], tmp_path: Path) -> None:
    source = tf_models["cnn_savedmodel"]
    nnrconv.convert(source, tmp_path / "m.nnr")
    nnrconv.convert(tmp_path / "m.nnr", tmp_path / "back_savedmodel")
    original, restored = nnrconv.load(source), nnrconv.load(tmp_path / "back_savedmodel")
    assert_tensors_identical(nnrconv.load(tmp_path / "m.nnr"), restored)
    x = _models.sample_input("cnn")
    expected, got = run(original, x), run(restored, x)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=0.1, atol=0.1)


@pytest.mark.parametrize("name", ["cnn_savedmodel", "lstm.pb"])
def test_inspect_shows_one_tef_topology_and_an_ndu_per_float32_weight(
    name: str, tf_models: dict[str, Path], tmp_path: Path
) -> None:
    source = tf_models[name]
    nnr = tmp_path / "m.nnr"
    nnrconv.convert(source, nnr)  # default coding carries float32 tensors only
    result = cli("inspect", "--json", nnr)
    assert result.returncode == 0, result.stderr
    units = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    topologies = [u["topology_storage_format"] for u in units if u["unit_type"] == "NNR_TPL"][1:]  # record first
    assert topologies == ["NNR_TPL_TEF"]
    model = nnrconv.load(source)
    floats = sorted(k for k, t in model.tensors.items() if t.dtype is DType.FLOAT)
    carried = sorted(k for k, t in model.tensors.items() if nnc.can_carry(t.dtype.storage_dtype))
    ndus = sorted(u["tensor"] for u in units if u["unit_type"] == "NNR_NDU")
    assert ndus == carried and set(floats) <= set(ndus)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cnn_savedmodel", "lstm.pb"])
def test_cli_roundtrip(name: str, tf_models: dict[str, Path], tmp_path: Path) -> None:
    source, nnr, back = tf_models[name], tmp_path / "m.nnr", tmp_path / _back_name(name)
    for args in ((source, nnr, "--lossless"), (nnr, back)):
        result = cli(*args)
        assert result.returncode == 0, result.stderr
    original, restored = nnrconv.load(source), nnrconv.load(back)
    assert_tensors_identical(original, restored)
    x = _models.sample_input(_kind(name))
    assert_same_outputs(run(original, x), run(restored, x))
