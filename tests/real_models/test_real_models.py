# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Every real trained model of the catalog, through every stage that applies to it.

Stages: lossless round trip (bit-exact tensors and outputs), the default lossy `check` against
the catalog's criterion, the embedded round trip (NNR inside the native container, restored
exactly), and cross-format conversion (ONNX → NNEF, outputs matching onnxruntime, then the NNEF
model's own lossless round trip). A model whose wheel is missing is skipped with its install line;
a stage failing because of work tracked elsewhere is a strict xfail naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.real_models import _stages
from tests.real_models.catalog import CATALOG, INSTALL, WHEELS, RealModel

pytestmark = pytest.mark.slow


def _params(stage: str, applies: Callable[[RealModel], bool] = lambda m: True) -> list:
    params = []
    for model in CATALOG:
        if not applies(model):
            continue
        marks = [pytest.mark.skipif(not model.path.exists(), reason=f"{model.install} (scripts/setup does)")]
        if stage in model.xfail:
            marks.append(pytest.mark.xfail(strict=True, reason=model.xfail[stage]))
        params.append(pytest.param(model, id=model.id, marks=marks))
    return params


def test_catalog_is_consistent() -> None:
    ids = [m.id for m in CATALOG]
    assert len(ids) == len(set(ids)) >= 15
    assert {"onnx", "pytorch", "tensorflow"} <= {m.format for m in CATALOG}
    for model in CATALOG:
        assert model.wheel in INSTALL


@pytest.mark.parametrize("model", _params("lossless"))
def test_lossless_round_trip_is_bit_exact(model: RealModel, tmp_path: Path) -> None:
    assert _stages.lossless_round_trip(model, tmp_path) > 0


@pytest.mark.parametrize("model", _params("check"))
def test_default_lossy_check_meets_the_criterion(model: RealModel) -> None:
    report = _stages.default_check(model)
    assert not report.exact


@pytest.mark.parametrize("model", _params("embedded", lambda m: m.embedded is not None))
def test_embedded_round_trip_restores_the_model(model: RealModel, tmp_path: Path) -> None:
    assert _stages.embedded_round_trip(model, tmp_path) > 0


@pytest.mark.parametrize("model", _params("cross", lambda m: m.cross is not None))
def test_cross_format_keeps_outputs(model: RealModel, tmp_path: Path) -> None:
    converted, worst = _stages.cross_format(model, tmp_path)
    assert worst <= model.cross_atol + model.cross_rtol
    # The converted model is a real model of the other family: its own lossless round trip.
    feed = _stages.inputs_of(model)
    assert feed is not None
    _stages.lossless_file_round_trip(converted, _stages.renamed_inputs(converted, feed), tmp_path / "again")


def test_setup_installs_every_wheel() -> None:
    setup = (Path(__file__).resolve().parents[2] / "scripts" / "setup").read_text()
    for wheel, version in WHEELS.items():
        assert f"{wheel}=={version}" in setup, f"scripts/setup does not install {wheel}=={version}"
