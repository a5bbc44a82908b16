# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Native → .nnr → native for generated models in every PyTorch container, through API and CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import nnrconv
from nnrconv import nnc
from nnrconv.core import DType, Model, TensorRole
from tests.plugins.pytorch import _models

LOSSLESS = nnc.CodingOptions(lossless=True)


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nnrconv", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def assert_tensors_identical(first: Model, second: Model) -> None:
    assert list(first.tensors) == list(second.tensors)
    for key, a in first.tensors.items():
        b = second.tensors[key]
        assert (a.dtype, a.shape) == (b.dtype, b.shape), key
        assert a.tobytes() == b.tobytes(), f"tensor {key!r} differs"


def _reload(path: Path, container: str):  # type: ignore[no-untyped-def]
    if container == "pt2":
        return torch.export.load(path).module()
    return torch.jit.load(path)


def _float_keys(model: Model) -> list[str]:
    return [k for k, t in model.tensors.items() if t.dtype is DType.FLOAT]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("models")
    cache: dict[tuple[str, str], tuple[Path, torch.nn.Module, torch.Tensor]] = {}

    def get(name: str, container: str) -> tuple[Path, torch.nn.Module, torch.Tensor]:
        if (name, container) not in cache:
            sub = folder / f"{name}-{container}"
            sub.mkdir()
            cache[(name, container)] = _models.save(name, container, sub)
        return cache[(name, container)]

    return get


@pytest.mark.parametrize("container", _models.CONTAINERS)
@pytest.mark.parametrize("name", _models.MODELS)
def test_nnr_roundtrip(name: str, container: str, saved, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, module, example = saved(name, container)
    nnr, back = tmp_path / "m.nnr", tmp_path / ("back" + "".join(path.suffixes))
    nnrconv.convert(path, nnr, options=LOSSLESS)
    nnrconv.convert(nnr, back)
    original, restored = nnrconv.load(path), nnrconv.load(back)
    assert_tensors_identical(original, restored)
    assert {t.dtype for t in original.tensors.values()} >= {DType.FLOAT}
    if name == "mlp":
        assert {t.dtype for t in restored.tensors.values()} >= {DType.BOOL, DType.FLOAT16, DType.BFLOAT16, DType.INT32}
    if container == "state_dict":
        reloaded = torch.load(back, weights_only=True)
        for key, value in module.state_dict().items():
            assert reloaded[key].dtype == value.dtype and torch.equal(reloaded[key], value), key
        return
    with torch.no_grad():
        expected = module(example)
        assert torch.equal(_reload(path, container)(example), expected)
        assert torch.equal(_reload(back, container)(example), expected)
    fmt = nnrconv.core.get_registry().get("pytorch")
    inputs = {spec.name: example.numpy() for spec in fmt.input_specs(original)} if container == "pt2" else None
    if inputs is not None:
        first, second = fmt.run(original, inputs), fmt.run(restored, inputs)
        assert list(first) == list(second)
        assert all(np.array_equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("container", ["pt2", "script"])
def test_roles_come_from_the_module_structure(container: str, saved) -> None:  # type: ignore[no-untyped-def]
    cnn = nnrconv.load(saved("cnn", container)[0]).tensors
    assert cnn["conv1.weight"].role is TensorRole.WEIGHT and cnn["conv1.bias"].role is TensorRole.BIAS
    assert [cnn[f"bn1.{a}"].role for a in ("weight", "bias", "running_mean", "running_var")] == [
        TensorRole.BN_GAMMA,
        TensorRole.BN_BETA,
        TensorRole.BN_MEAN,
        TensorRole.BN_VAR,
    ]
    assert cnn["bn1.num_batches_tracked"].dtype is DType.INT64
    assert cnn["bn1.num_batches_tracked"].numpy().item() == 3
    lstm = nnrconv.load(saved("lstm", container)[0]).tensors
    assert lstm["lstm.weight_ih_l0"].role is TensorRole.WEIGHT and lstm["lstm.bias_hh_l0"].role is TensorRole.BIAS


def test_topology_holds_no_carried_payload(saved) -> None:  # type: ignore[no-untyped-def]
    for container in ("pt2", "script"):
        path = saved("cnn", container)[0]
        model = nnrconv.load(path)
        data = nnrconv.encode(model, compress_topology=False, options=LOSSLESS)
        topology = nnc.decode_model(data).topology
        floats = _float_keys(model)
        weight = model.tensors["conv1.weight"].tobytes()
        assert weight not in topology, container
        assert len(topology) < path.stat().st_size - sum(model.tensors[k].nbytes for k in floats) + 4096


def test_bare_float_state_dict_has_an_empty_topology_like_nncodec(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "fc.pt"
    torch.save(torch.nn.Linear(4, 3).state_dict(), path)
    decoded = nnc.decode_model(nnrconv.encode(nnrconv.load(path), options=LOSSLESS))
    assert decoded.topology == b"" and decoded.topology_storage_format == 3
    assert sorted(decoded.tensors) == ["bias", "weight"]
    # And an empty NNR_TPL_PYT topology (what NNCodec writes) decodes to a state dict.
    back = nnrconv.decode(nnc.encode_model(list(decoded.tensors.items()), b"", 3))
    assert sorted(back.tensors) == ["bias", "weight"] and back.source_format == "pytorch"


def _bn_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3))
    module.train()(torch.randn(2, 2, 5, 5))
    return module.state_dict()


def test_state_dict_with_int64_buffers_has_a_text_topology(tmp_path: Path) -> None:
    from nnrconv_pytorch import PyTorchFormat, _topology

    state = _bn_state_dict()
    assert state["1.num_batches_tracked"].shape == ()
    path = tmp_path / "bn.pt"
    torch.save(state, path)
    model = nnrconv.load(path)
    data = nnrconv.encode(model, options=LOSSLESS)  # compress_topology on: still raw text
    decoded = nnc.decode_model(data)
    topology = decoded.topology
    assert topology.startswith(_topology.TEXT_MAGIC) and b"\0" not in topology and topology in data
    manifest = json.loads(topology[len(_topology.TEXT_MAGIC) :].decode("utf-8"))
    assert manifest["keys"] == list(state)
    assert manifest["dtypes"]["1.num_batches_tracked"] == "INT64" and manifest["shapes"]["1.num_batches_tracked"] == []
    assert not PyTorchFormat().deflate_topology(topology)
    assert_tensors_identical(model, nnrconv.decode(data))
    back = nnrconv.decode(data)
    assert back.tensors["1.num_batches_tracked"].numpy().dtype == np.int64
    assert back.tensors["1.num_batches_tracked"].shape == ()
    # The earlier binary form of the same manifest (MAGIC + length + JSON, no body) still reads.
    legacy = _topology.pack("state_dict", {k: v for k, v in manifest.items()}, b"")
    assert PyTorchFormat().deflate_topology(legacy)
    old = nnc.encode_model(list(decoded.tensors.items()), legacy, 3, compress_topology=True, options=LOSSLESS)
    assert_tensors_identical(model, nnrconv.decode(old))


def test_state_dict_with_uncarried_buffers_keeps_the_binary_topology(tmp_path: Path) -> None:
    from nnrconv_pytorch import _topology

    state = {**_bn_state_dict(), "mask": torch.tensor([True, False, True]), "half": torch.randn(4).bfloat16()}
    path = tmp_path / "mixed.pt"
    torch.save(state, path)
    model = nnrconv.load(path)
    data = nnrconv.encode(model, compress_topology=False, options=LOSSLESS)
    topology = nnc.decode_model(data).topology
    assert topology.startswith(_topology.MAGIC)
    assert _topology.unpack(topology).body  # the uncarried tensors travel in the topology
    assert_tensors_identical(model, nnrconv.decode(data))
    assert_tensors_identical(model, nnrconv.decode(nnrconv.encode(model, options=LOSSLESS)))


def test_checkpoint_with_module_prefix_comes_back_as_a_plain_state_dict(saved, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, module, _ = saved("cnn", "checkpoint")
    model = nnrconv.load(path)
    assert list(model.tensors) == list(module.state_dict())
    nnr, back = tmp_path / "m.nnr", tmp_path / "back.pth"
    nnrconv.convert(path, nnr, options=LOSSLESS)
    nnrconv.convert(nnr, back)
    reloaded = torch.load(back, weights_only=True)
    assert list(reloaded) == list(module.state_dict())
    assert all(torch.equal(reloaded[k], v) for k, v in module.state_dict().items())


def test_safetensors_roundtrip(saved, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, _, _ = saved("mlp", "state_dict")
    source = tmp_path / "m.safetensors"
    nnrconv.convert(path, source)
    nnr, back = tmp_path / "m.nnr", tmp_path / "back.safetensors"
    nnrconv.convert(source, nnr, options=LOSSLESS)
    nnrconv.convert(nnr, back)
    assert_tensors_identical(nnrconv.load(path), nnrconv.load(back))
    assert back.read_bytes() == source.read_bytes()


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_cli_roundtrip_and_inspect(name: str, saved, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, module, example = saved(name, "pt2")
    nnr, back = tmp_path / "m.nnr", tmp_path / "back.pt2"
    for source, target in ((path, nnr), (nnr, back)):
        result = _cli(source, target, *(["--lossless"] if target == nnr else []))
        assert result.returncode == 0, result.stderr
    with torch.no_grad():
        assert torch.equal(torch.export.load(back).module()(example), module(example))
    result = _cli("inspect", "--json", nnr)
    assert result.returncode == 0, result.stderr
    units = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    topologies = [u["topology_storage_format"] for u in units if u["unit_type"] == "NNR_TPL"][1:]  # record first
    assert topologies == ["NNR_TPL_PYT"]
    model = nnrconv.load(path)
    ndus = [u["tensor"] for u in units if u["unit_type"] == "NNR_NDU"]
    # One NDU per float32 tensor; lossless coding may carry integer buffers too, never twice.
    assert len(ndus) == len(set(ndus)) and set(_float_keys(model)) <= set(ndus) <= set(model.tensors)
