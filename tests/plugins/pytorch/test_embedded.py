# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""NNR inside PyTorch archives (`.nnr.pt2`, `.nnr.pt`): same tensors as the `.nnr`, units moved unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import nnrconv
from nnrconv import nnc
from nnrconv._api import coded_units
from nnrconv.core import CodedTensor, FormatError, UnsupportedError
from nnrconv_pytorch import _archive, _embedded
from tests.plugins.pytorch import _models

# container -> the embedded file's suffix
SUFFIX = {"pt2": ".nnr.pt2", "script": ".nnr.pt", "state_dict": ".nnr.pt"}


def _bytes(model: nnrconv.Model) -> dict[str, bytes]:
    return {name: t.tobytes() for name, t in model.tensors.items()}


def _outputs(container: str, path: Path, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model in `path` run on `x` by torch itself (a state dict runs in `module`)."""
    with torch.no_grad():
        if container == "pt2":
            return torch.export.load(path).module()(x)
        if container == "script":
            return torch.jit.load(path)(x)
        module.load_state_dict(torch.load(path, weights_only=True))
        return module(x)


def _rewrite(path: Path, change: dict[str, bytes]) -> None:
    records = _archive.read_zip(path.read_bytes(), str(path))
    path.write_bytes(_archive.write_zip(_archive.fill(records, change)))


def _manifest(path: Path) -> tuple[list[_archive.Record], dict]:
    records = _archive.read_zip(path.read_bytes(), str(path))
    prefix = _archive.prefix_of(records)
    text = next(r.data for r in records if r.name == prefix + _embedded.MANIFEST)
    return records, json.loads(text)


@pytest.mark.parametrize("container", ["pt2", "script", "state_dict"])
def test_nnr_and_embedded_carry_the_same_units(tmp_path: Path, container: str) -> None:
    source, _, _ = _models.save("cnn", container, tmp_path)
    nnr, embedded, again = tmp_path / "m.nnr", tmp_path / f"m{SUFFIX[container]}", tmp_path / "again.nnr"
    nnrconv.convert(source, nnr)  # default: lossy, per-tensor SNR
    nnrconv.convert(nnr, embedded)  # units move as they are
    loaded, from_nnr = nnrconv.load(embedded), nnrconv.load(nnr)
    assert coded_units(loaded) == coded_units(from_nnr)
    assert list(loaded.tensors) == list(from_nnr.tensors)
    assert _bytes(loaded) == _bytes(from_nnr)
    assert all(isinstance(t, CodedTensor) for t in loaded if t.dtype.name == "FLOAT")
    # Back to .nnr: the very same bitstream, nothing re-quantized.
    nnrconv.convert(embedded, again)
    assert again.read_bytes() == nnr.read_bytes()
    # And to a plain archive: the tensors of decoding the .nnr, in a file torch loads.
    plain = tmp_path / f"plain{SUFFIX[container].removeprefix('.nnr')}"
    nnrconv.convert(embedded, plain)
    assert _bytes(nnrconv.load(plain)) == _bytes(from_nnr)
    assert not _embedded.is_embedded(r.name for r in _archive.read_zip(plain.read_bytes(), "plain"))


@pytest.mark.parametrize("container", ["pt2", "state_dict"])
def test_lossless_route_restores_tensors_and_outputs_exactly(tmp_path: Path, container: str) -> None:
    source, module, x = _models.save("cnn", container, tmp_path)
    embedded = tmp_path / f"m{SUFFIX[container]}"
    plain = tmp_path / f"plain{SUFFIX[container].removeprefix('.nnr')}"
    nnrconv.convert(source, embedded, options=nnc.CodingOptions(lossless=True))
    nnrconv.convert(embedded, plain)
    original = nnrconv.load(source)
    restored = nnrconv.load(plain)
    assert list(restored.tensors) == list(original.tensors)
    for key, tensor in original.tensors.items():
        a, b = torch.from_numpy(tensor.numpy().copy()), torch.from_numpy(restored.tensors[key].numpy().copy())
        assert a.dtype == b.dtype and torch.equal(a, b), key
    expected = _outputs(container, source, module, x)
    assert torch.equal(_outputs(container, plain, _models.build("cnn")[0], x), expected)


@pytest.mark.parametrize("container", ["pt2", "state_dict"])
def test_default_lossy_route_equals_the_nnr_route(tmp_path: Path, container: str) -> None:
    source, _, _ = _models.save("cnn", container, tmp_path)
    nnr, embedded = tmp_path / "m.nnr", tmp_path / f"m{SUFFIX[container]}"
    nnrconv.convert(source, nnr)
    nnrconv.convert(source, embedded)  # coded anew, with the same default options
    loaded, from_nnr = nnrconv.load(embedded), nnrconv.load(nnr)
    assert _bytes(loaded) == _bytes(from_nnr)
    assert coded_units(loaded) == coded_units(from_nnr)
    assert _bytes(loaded) != _bytes(nnrconv.load(source))  # it was lossy


def test_layout_is_the_archive_with_coded_records(tmp_path: Path) -> None:
    source, _, _ = _models.save("cnn", "pt2", tmp_path)
    embedded = tmp_path / "m.nnr.pt2"
    nnrconv.convert(source, embedded)
    records, manifest = _manifest(embedded)
    original = _archive.read_zip(source.read_bytes(), "original")
    prefix = _archive.prefix_of(records)
    # Same members in the same order, then the nnr/ members.
    assert [r.name for r in records[: len(original)]] == [r.name for r in original]
    assert [r.name for r in records[len(original) :]] == [
        prefix + _embedded.MANIFEST,
        prefix + _embedded.PARAMETER_SETS,
    ]
    assert manifest["kind"] == "program" and manifest["format"] == _embedded.FORMAT_ID
    by_name = {r.name: r.data for r in records}
    units = coded_units(nnrconv.load(embedded))
    assert units is not None and by_name[prefix + _embedded.PARAMETER_SETS] == units[0]
    for entry in manifest["tensors"]:
        assert by_name[entry["record"]] == units[1][entry["key"]]
        assert entry["nbytes"] == len(next(r.data for r in original if r.name == entry["record"]))
    assert {e["key"] for e in manifest["tensors"]} == set(units[1])


@pytest.mark.parametrize("container", ["pt2", "script", "state_dict"])
def test_torch_refuses_the_coded_archive(tmp_path: Path, container: str) -> None:
    source, _, _ = _models.save("cnn", container, tmp_path)
    embedded = tmp_path / f"m{SUFFIX[container]}"
    nnrconv.convert(source, embedded)
    load = {"pt2": torch.export.load, "script": torch.jit.load}.get(
        container, lambda p: torch.load(p, weights_only=True)
    )
    # The version records say 15938017 (no torch reads it); torch.export.load wraps that error.
    with pytest.raises(RuntimeError, match="15938017" if container != "pt2" else "deserializing"):
        load(embedded)


def test_corrupt_coded_record_names_the_tensor(tmp_path: Path) -> None:
    source, _, _ = _models.save("cnn", "pt2", tmp_path)
    embedded = tmp_path / "m.nnr.pt2"
    nnrconv.convert(source, embedded)
    records, manifest = _manifest(embedded)
    entry = next(e for e in manifest["tensors"] if e["key"] == "conv2.weight")
    data = next(r.data for r in records if r.name == entry["record"])
    _rewrite(embedded, {entry["record"]: data[:-5]})
    with pytest.raises(nnrconv.NNRConvError, match=r"conv2\.weight") as info:
        nnrconv.load(embedded)
    assert "\n" not in str(info.value) and str(embedded) in str(info.value)


def test_state_dict_cannot_become_a_program(tmp_path: Path) -> None:
    source, _, _ = _models.save("cnn", "state_dict", tmp_path)
    with pytest.raises(UnsupportedError, match="no graph"):
        nnrconv.convert(source, tmp_path / "m.nnr.pt2")


def test_restored_archive_goes_through_the_safety_checks(tmp_path: Path) -> None:
    source, _, _ = _models.save("mlp", "pt2", tmp_path)
    embedded = tmp_path / "m.nnr.pt2"
    nnrconv.convert(source, embedded)
    records = _archive.read_zip(embedded.read_bytes(), "m")
    config = next(r for r in records if r.name.endswith("_weights_config.json"))
    text = json.loads(config.data)
    for meta in text["config"].values():
        meta["use_pickle"] = True
    _rewrite(embedded, {config.name: json.dumps(text).encode()})
    with pytest.raises(FormatError, match="needs full unpickling"):
        nnrconv.load(embedded)


def test_malformed_manifest_is_a_format_error(tmp_path: Path) -> None:
    source, _, _ = _models.save("cnn", "state_dict", tmp_path)
    embedded = tmp_path / "m.nnr.pt"
    nnrconv.convert(source, embedded)
    records, manifest = _manifest(embedded)
    manifest["tensors"][0]["record"] = "elsewhere/data/99"
    prefix = _archive.prefix_of(records)
    _rewrite(embedded, {prefix + _embedded.MANIFEST: json.dumps(manifest).encode()})
    with pytest.raises(FormatError, match="dangling"):
        nnrconv.load(embedded)


class _Tied(torch.nn.Module):
    """An embedding and an output layer sharing one weight: one record, two state_dict keys."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(20, 8)
        self.out = torch.nn.Linear(8, 20, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.emb(x))


def test_tied_weight_keeps_its_second_unit_in_a_member(tmp_path: Path) -> None:
    torch.manual_seed(4)
    module, x = _Tied().eval(), torch.randint(0, 20, (2, 3))
    source = tmp_path / "tied.pt2"
    torch.export.save(torch.export.export(module, (x,)), source)
    nnr, embedded, again = tmp_path / "m.nnr", tmp_path / "m.nnr.pt2", tmp_path / "again.nnr"
    nnrconv.convert(source, nnr)
    nnrconv.convert(nnr, embedded)
    _, manifest = _manifest(embedded)
    assert ["record" in e for e in manifest["tensors"]] == [True, False]
    assert manifest["tensors"][1]["unit"].endswith(_embedded.UNITS + "1")
    nnrconv.convert(embedded, again)
    assert again.read_bytes() == nnr.read_bytes()
    plain = tmp_path / "plain.pt2"
    nnrconv.convert(embedded, plain)
    assert _bytes(nnrconv.load(plain)) == _bytes(nnrconv.load(nnr))
