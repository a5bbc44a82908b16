# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""examples/federated: a few rounds of federated averaging with NNR updates, run small."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[1] / "examples" / "federated" / "federated_nnr.py"


def _example():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("federated_nnr", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_nnr_updates_train_as_well_as_float_updates_and_travel_smaller(tmp_path, capsys):
    records = _example().run(rounds=3, clients=4, epochs=1, workdir=tmp_path)
    out = capsys.readouterr().out
    assert "round 3: accuracy" in out
    assert records[-1]["accuracy"] > records[0]["accuracy"] - 0.02
    for r in records:
        assert abs(r["accuracy"] - r["accuracy_float"]) < 0.02  # quantized updates lose nothing measurable
        assert r["uplink_nnr"] < 0.5 * r["uplink_float"]
        assert r["downlink_nnr"] < 0.5 * r["downlink_float"]
    assert (tmp_path / "global-3.nnr").exists()


def test_flower_aggregation_agrees():
    try:
        import flwr  # noqa: F401
    except ImportError:
        pytest.skip(
            "flwr is not installed: flwr 1.42 requires packaging<26, protobuf<7 and rich<15, below this "
            "project's pins (pip install nnrconv[federated] in an environment without those pins)"
        )
    records = _example().run(rounds=1, clients=3, epochs=1)
    assert records[0]["flower_snr_db"] is not None and records[0]["flower_snr_db"] > 40
