# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""A third-party format gets what built-in ones get: with no topology code it carries its topology
through NNR (an NNR_TPL_UNREC unit whose data is a manifest naming the format, `nnrconv._topology`),
and its own container can hold NNR units read through the embedding seam."""

import base64
import json
from pathlib import Path

import numpy as np
import pytest

import nnrconv
from nnrconv import _topology, nnc, testing
from nnrconv.core import (
    ArrayTensor,
    CodedUnit,
    DType,
    EmbeddedModel,
    FormatPlugin,
    Graph,
    LazyTensor,
    Model,
    UnsupportedError,
)


class ToyGraph(FormatPlugin):
    """A JSON model: a list of ops and float32 weights (base64), standing in for any new framework."""

    name = "toygraph"
    patterns = ("*.toy",)

    def load(self, path: Path) -> Model:
        return self._model(json.loads(path.read_text()), {})

    def save(self, model: Model, path: Path) -> None:
        path.write_text(json.dumps(self._document(model, carried=())))

    def topology_bytes(self, model: Model, carried) -> bytes:
        return json.dumps(self._document(model, carried)).encode()

    def from_topology(self, topology: bytes, tensors) -> Model:
        return self._model(json.loads(topology), tensors)

    # NNR inside the container: a JSON header line, then the parameter sets and units, raw.
    embedded_patterns = ("*.nnr.toy",)

    def save_embedded(self, model: Model, path: Path, parameter_sets: bytes, ndus) -> None:
        document = self._document(model, carried=ndus)
        document["nnr"] = {"parameter_sets": len(parameter_sets), "units": {k: len(v) for k, v in ndus.items()}}
        path.write_bytes(json.dumps(document).encode() + b"\n" + parameter_sets + b"".join(ndus.values()))

    def extract_embedded(self, path: Path):
        header, _, body = path.read_bytes().partition(b"\n")
        document = json.loads(header)
        if "nnr" not in document:
            return None
        at = document["nnr"]["parameter_sets"]
        units = {}
        for name, size in document["nnr"]["units"].items():
            shape = tuple(document["weights"][name]["shape"])
            units[name] = CodedUnit(body[at : at + size], DType.FLOAT, shape)
            at += size
        model = self._model(document, {name: _placeholder(name, unit) for name, unit in units.items()})
        return EmbeddedModel(model, body[: document["nnr"]["parameter_sets"]], units)

    def _document(self, model: Model, carried) -> dict:
        weights = {
            name: {"shape": list(t.shape), "data": None if name in carried else base64.b64encode(t.tobytes()).decode()}
            for name, t in model.tensors.items()
        }
        return {"ops": model.metadata["ops"].split(","), "weights": weights}

    def _model(self, document: dict, decoded) -> Model:
        tensors = {}
        for name, entry in document["weights"].items():
            if entry["data"] is None:
                tensors[name] = decoded[name]
            else:
                array = np.frombuffer(base64.b64decode(entry["data"]), np.float32).reshape(entry["shape"])
                tensors[name] = ArrayTensor(name, array)
        return Model(Graph(name="toy"), tensors, source_format=self.name, metadata={"ops": ",".join(document["ops"])})


def _placeholder(name: str, unit: CodedUnit) -> LazyTensor:
    return LazyTensor(name, unit.dtype, unit.shape, lambda: pytest.fail("read before the seam decoded it"))


@pytest.fixture
def toy(tmp_path):
    rng = np.random.default_rng(0)
    weights = {"fc.w": rng.normal(size=(16, 8)).astype(np.float32), "fc.b": rng.normal(size=8).astype(np.float32)}
    document = {
        "ops": ["matmul", "add", "relu"],
        "weights": {
            k: {"shape": list(v.shape), "data": base64.b64encode(v.tobytes()).decode()} for k, v in weights.items()
        },
    }
    path = tmp_path / "m.toy"
    path.write_text(json.dumps(document))
    return path


def test_a_third_party_topology_travels_in_an_unrecognised_topology_unit(toy, tmp_path):
    fmt = ToyGraph()
    testing.assert_plugin_contract(fmt)
    with testing.registered(fmt):
        back = testing.assert_lossless_round_trip(toy, tmp_path)
        assert json.loads(back.read_text())["ops"] == ["matmul", "add", "relu"]
        nnr = tmp_path / f"{toy.name}.nnr"
        decoded = nnc.decode_model(nnr.read_bytes())
        assert decoded.topology_storage_format == nnc.TopologyStorageFormat.NNR_TPL_UNREC
        assert _topology.unpack(decoded.topology)[0] == "toygraph"
        assert set(decoded.tensors) == {"fc.w", "fc.b"}  # any NNR decoder still gets every tensor by name
    with pytest.raises(UnsupportedError, match=r"format 'toygraph'.*no installed plugin has that name"):
        nnrconv.load(nnr)


def test_a_format_without_code_or_topology_is_refused(tmp_path):
    class Opaque(FormatPlugin):
        name = "opaque"
        patterns = ("*.opq",)

        def load(self, path):
            return Model(Graph(), {"w": ArrayTensor("w", np.ones(4, np.float32))}, source_format=self.name)

    (tmp_path / "m.opq").write_bytes(b"x")
    with testing.registered(Opaque()), pytest.raises(UnsupportedError, match="does not write its topology"):
        nnrconv.convert(tmp_path / "m.opq", tmp_path / "m.nnr")


def test_the_manifest_is_only_recognised_by_its_magic():
    assert _topology.unpack(_topology.pack("x", b"\0body")) == ("x", b"\0body")
    assert _topology.unpack(b"") is None and _topology.unpack(b"nnrconv.plugin-topology/1\0x") is None


def test_a_third_party_container_holds_nnr_units_through_the_seam(toy, tmp_path):
    with testing.registered(ToyGraph()):
        embedded = tmp_path / "m.nnr.toy"
        loaded = testing.assert_embedded_round_trip(toy, embedded)
        assert set(loaded.tensors) == {"fc.w", "fc.b"} and loaded.metadata["ops"] == "matmul,add,relu"
        testing.assert_corrupt_unit_refused(embedded)
