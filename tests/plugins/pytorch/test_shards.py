# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Hugging Face sharded checkpoints: read by index or folder, written back with the same layout."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

import nnrconv
from nnrconv import nnc
from nnrconv.core import ArrayTensor, BitstreamError, DType, FormatError
from nnrconv.core._narrow import bfloat16_bits, bfloat16_values
from nnrconv_pytorch import _safetensors, _shards

LOSSLESS = nnc.CodingOptions(lossless=True)


def make_checkpoint(folder: Path, *, shards: int = 3, rows: int = 64, seed: int = 0) -> Path:
    """A small bf16 checkpoint in transformers' layout: index, shards, config and tokenizer files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    weight_map = {}
    total = 0
    for shard in range(shards):
        file = f"model-{shard + 1:05d}-of-{shards:05d}.safetensors"
        tensors = [
            ArrayTensor(
                f"model.layers.{shard}.mlp.weight",
                bfloat16_bits((rng.standard_normal((rows, 48)) * 0.02).astype(np.float32)),
                dtype=DType.BFLOAT16,
            ),
            ArrayTensor(
                f"model.layers.{shard}.norm.weight",
                bfloat16_bits(1 + 0.1 * rng.standard_normal(rows).astype(np.float32)),
                dtype=DType.BFLOAT16,
            ),
        ]
        total += _shards.write_safetensors(folder / file, tensors, {"format": "pt"})
        weight_map.update({t.name: file for t in tensors})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (folder / "config.json").write_text('{"model_type": "llama", "torch_dtype": "bfloat16"}')
    (folder / "tokenizer.model").write_bytes(bytes(range(256)))
    (folder / "pytorch_model.bin").write_bytes(b"not carried")
    return folder / "model.safetensors.index.json"


def _tensors(header: dict) -> list[tuple[str, dict]]:
    return [(k, v) for k, v in header.items() if k != "__metadata__"]


def _header(path: Path) -> dict:
    (length,) = struct.unpack("<Q", path.read_bytes()[:8])
    return json.loads(path.read_bytes()[8 : 8 + length])


def test_decoding_into_a_bare_folder_writes_the_checkpoint_by_its_index(tmp_path: Path) -> None:
    from nnrconv.cli import main

    index = make_checkpoint(tmp_path / "in")
    nnr = tmp_path / "m.nnr"
    nnrconv.convert(index, nnr, options=LOSSLESS)
    out = tmp_path / "out"
    out.mkdir()
    assert main([str(nnr), str(out), "-q"]) == 0
    names = sorted(p.name for p in index.parent.iterdir() if p.name != "pytorch_model.bin")
    assert sorted(p.name for p in out.iterdir()) == names
    for name in names:
        assert (out / name).read_bytes() == (index.parent / name).read_bytes(), name
    assert main([str(nnr), str(out), "-q"]) == 7  # the index exists: never replaced without --force
    (out / "model-00002-of-00003.safetensors").write_bytes(b"stale")
    assert main([str(nnr), str(out), "-q", "--force"]) == 0
    assert (out / "model-00002-of-00003.safetensors").read_bytes() == (
        index.parent / "model-00002-of-00003.safetensors"
    ).read_bytes()


def test_a_model_without_shard_layout_keeps_the_folder_rule(tmp_path: Path) -> None:
    from nnrconv.cli import main

    single = tmp_path / "w.safetensors"
    single.write_bytes(_safetensors.write_bytes([ArrayTensor("w", np.ones((8, 8), np.float32))]))
    nnr = tmp_path / "w.nnr"
    nnrconv.convert(single, nnr)
    out = tmp_path / "out"
    out.mkdir()
    assert main([str(nnr), str(out), "-q"]) == 7  # an existing folder is not a file to write into
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("by", ["index", "folder"])
def test_lossless_checkpoint_comes_back_byte_identical(tmp_path: Path, by: str) -> None:
    index = make_checkpoint(tmp_path / "in")
    nnr = tmp_path / "m.nnr"
    nnrconv.convert(index if by == "index" else index.parent, nnr, options=LOSSLESS)
    out = tmp_path / "out"
    out.mkdir()
    nnrconv.convert(nnr, out / "model.safetensors.index.json")
    for name in ("model-00001-of-00003.safetensors", "model-00003-of-00003.safetensors", "config.json"):
        assert (out / name).read_bytes() == (index.parent / name).read_bytes(), name
    assert (out / "tokenizer.model").read_bytes() == bytes(range(256))  # binary files travel too
    assert not (out / "pytorch_model.bin").exists()  # other weight formats do not
    assert json.loads((out / "model.safetensors.index.json").read_text()) == json.loads(index.read_text())


def test_lossy_checkpoint_keeps_layout_dtypes_and_metadata(tmp_path: Path) -> None:
    index = make_checkpoint(tmp_path / "in")
    nnr = tmp_path / "m.nnr"
    nnrconv.convert(index, nnr)
    out = tmp_path / "out"
    out.mkdir()
    nnrconv.convert(nnr, out / "model.safetensors.index.json")
    for shard in sorted(index.parent.glob("*.safetensors")):
        before, after = _header(shard), _header(out / shard.name)
        assert after["__metadata__"] == {"format": "pt"}
        assert list(after) == list(before)
        assert all((after[k]["dtype"], after[k]["shape"]) == (v["dtype"], v["shape"]) for k, v in _tensors(before))
    original, restored = nnrconv.load(index), nnrconv.load(out)
    assert list(restored.tensors) == list(original.tensors)
    for name, tensor in original.tensors.items():
        assert restored.tensors[name].dtype is DType.BFLOAT16
        snr = nnc.snr_db(bfloat16_values(tensor.numpy()), bfloat16_values(restored.tensors[name].numpy()))
        assert snr > 39, name  # bfloat16 defaults to 40 dB; 1-D norms (60 dB) often round back exactly
    data = nnr.read_bytes()
    assert nnc.decode_model(data).topology.startswith(b"nnrconv-pytorch state_dict 1\n")  # NNCodec reads text


def test_single_safetensors_keeps_its_metadata(tmp_path: Path) -> None:
    source = tmp_path / "m.safetensors"
    tensors = [ArrayTensor("w", np.ones((4, 4), np.float32))]
    _shards.write_safetensors(source, tensors, {"format": "pt", "note": "kept"})
    nnr, back = tmp_path / "m.nnr", tmp_path / "back.safetensors"
    nnrconv.convert(source, nnr, options=LOSSLESS)
    nnrconv.convert(nnr, back)
    assert back.read_bytes() == source.read_bytes()


def test_a_state_dict_written_as_an_index_is_sharded(tmp_path: Path) -> None:
    source = tmp_path / "m.safetensors"
    _shards.write_safetensors(source, [ArrayTensor("w", np.ones((4, 4), np.float32))])
    out = tmp_path / "out"
    out.mkdir()
    nnrconv.convert(source, out / "model.safetensors.index.json")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == {"w": "model-00001-of-00001.safetensors"}
    assert index["metadata"]["total_size"] == 64


@pytest.mark.parametrize("bad", ["../evil.json", "/etc/passwd", "a/b.safetensors", ".."])
def test_layout_names_from_a_bitstream_must_be_plain(bad: str) -> None:
    with pytest.raises(BitstreamError, match="plain file name"):
        _shards.layout_from_manifest({"shards": [{"file": bad, "keys": []}], "files": {}})
    with pytest.raises(BitstreamError, match="plain file name"):
        _shards.layout_from_manifest({"shards": [], "files": {bad: {"text": ""}}})


def test_missing_shard_is_named(tmp_path: Path) -> None:
    index = make_checkpoint(tmp_path / "in")
    (index.parent / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(FormatError, match=r"model-00002-of-00003\.safetensors is missing"):
        nnrconv.load(index)
