# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""examples/federated: federated averaging with NNR updates, plain and under Flower, run small."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).parents[2] / "examples" / "federated"


def _example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _flower() -> None:
    try:
        import flwr  # noqa: F401
    except ImportError:
        pytest.skip(
            "flwr is not importable: scripts/setup installs it (--no-deps, see README 'Federated'); "
            "pip install nnrconv[federated] outside this project's pins"
        )


def test_nnr_updates_train_as_well_as_float_updates_and_travel_smaller(tmp_path, capsys):
    records = _example("federated_nnr").run(rounds=3, clients=4, epochs=1, workdir=tmp_path)
    out = capsys.readouterr().out
    assert "round 3: accuracy" in out
    assert records[-1]["accuracy"] > records[0]["accuracy"] - 0.02
    for r in records:
        assert abs(r["accuracy"] - r["accuracy_float"]) < 0.02  # quantized updates lose nothing measurable
        assert r["uplink_nnr"] < 0.5 * r["uplink_float"]
        assert r["downlink_nnr"] < 0.5 * r["downlink_float"]
    assert (tmp_path / "global-3.nnr").exists()


def test_flower_federation_with_nnr_parameters(tmp_path, capsys):
    _flower()
    records = _example("flower_nnr").run(rounds=3, clients=3, epochs=1, workdir=tmp_path)
    out = capsys.readouterr().out
    assert "round 3: accuracy" in out and "Flower's FedAvg agrees" in out
    assert records[-1]["accuracy"] > 0.8  # Flower's loop trained through the NNR chain
    for r in records:
        assert abs(r["accuracy"] - r["accuracy_float"]) < 0.02
        assert r["flower_snr_db"] > 40  # nnrconv.merge = Flower's FedAvg, to the coding precision
        assert r["uplink_nnr"] < 0.4 * r["uplink_float"]
        assert r["downlink_nnr"] < 0.5 * r["downlink_float"]
    # round 1 sent the full model to each client; later rounds only the merged update
    assert records[1]["downlink_nnr"] == 3 * (tmp_path / "global-1.nnr").stat().st_size
    from nnrconv import nnc

    chain = [(tmp_path / f"global-{i}.nnr").read_bytes() for i in range(4)]
    assert len(nnc.read_chain([(b, str(i)) for i, b in enumerate(chain)]).tensors) == 4


def test_plain_loop_checks_against_flower_fedavg():
    _flower()
    records = _example("federated_nnr").run(rounds=1, clients=3, epochs=1)
    assert records[0]["flower_snr_db"] is not None and records[0]["flower_snr_db"] > 40
