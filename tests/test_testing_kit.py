# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The plugin test kit, applied to a built-in format and to the example third-party one."""

import sys
from pathlib import Path

import numpy as np
import pytest

from nnrconv import testing
from nnrconv.core import ArrayTensor, FormatPlugin, Graph, Model, get_registry

EXAMPLE = Path(__file__).parents[1] / "examples" / "tiny_cnn.onnx"
THIRD_PARTY = Path(__file__).parent / "thirdparty" / "nnrconv-npz"


def test_builtin_onnx_passes_the_kit(tmp_path):
    fmt = get_registry().get("onnx")
    testing.assert_plugin_contract(fmt)
    back = testing.assert_lossless_round_trip(EXAMPLE, tmp_path)
    assert back.exists() and back.parent == tmp_path / "back"


@pytest.fixture
def npz_format(monkeypatch):
    monkeypatch.syspath_prepend(str(THIRD_PARTY))
    from nnrconv_npz import NpzFormat

    yield NpzFormat()
    sys.modules.pop("nnrconv_npz", None)


def test_third_party_format_in_process(npz_format, tmp_path):
    testing.assert_plugin_contract(npz_format)
    np.savez(tmp_path / "w.npz", a=np.arange(12, dtype=np.float32).reshape(3, 4), b=np.ones(3, np.float32))
    with testing.registered(npz_format):
        assert "npz" in get_registry().names()
        testing.assert_lossless_round_trip(tmp_path / "w.npz", tmp_path)
    assert "npz" not in get_registry().names()


def test_kit_catches_a_lossy_format(tmp_path):
    class Rounding(FormatPlugin):
        """Loses precision when saving: the kit must notice."""

        name = "rounding"
        patterns = ("*.rnd",)
        weights_only = True

        def load(self, path):
            data = np.frombuffer(path.read_bytes(), dtype=np.float32).copy()
            return Model(Graph(), {"w": ArrayTensor("w", data)}, source_format=self.name)

        def save(self, model, path):
            path.write_bytes(np.round(model.tensors["w"].numpy(), 1).astype(np.float32).tobytes())

    (tmp_path / "m.rnd").write_bytes(np.linspace(0, 1, 7, dtype=np.float32).tobytes())
    with testing.registered(Rounding()), pytest.raises(AssertionError, match="'w' is not bit-identical"):
        testing.assert_lossless_round_trip(tmp_path / "m.rnd", tmp_path)


def test_contract_rejects_a_bad_topology_code():
    class Bad(FormatPlugin):
        name = "bad"
        patterns = ("*.bad",)
        topology_code = 9

    with pytest.raises(AssertionError, match="topology code 9"):
        testing.assert_plugin_contract(Bad())


def test_step_assertion_catches_a_weight_beyond_half_a_step():
    from nnrconv._check import CheckReport, TensorReport
    from nnrconv.nnc import cabac

    half = cabac.step_size(-38) / 2
    report = CheckReport("m", "x", 10, 5, 4, 10.0, None, None)
    report.tensors = [TensorReport("w", "FLOAT", (2, 2), False, half * 0.9, 40.0)]
    testing.assert_errors_within_half_a_step(report, -38)
    report.tensors = [TensorReport("w", "FLOAT", (2, 2), False, half * 1.5, 40.0)]
    with pytest.raises(AssertionError, match="'w' moved by"):
        testing.assert_errors_within_half_a_step(report, -38)


def test_string_tensors_compare_by_value():
    from nnrconv.core import DType

    def model(*words):
        array = np.array([w.encode() for w in words], dtype=object)
        return Model(Graph(), {"s": ArrayTensor("s", array, dtype=DType.STRING)})

    testing.assert_models_identical(model("a", "bc"), model("a", "bc"))
    with pytest.raises(AssertionError, match="'s' is not bit-identical"):
        testing.assert_models_identical(model("a", "bc"), model("a", "bd"))
