# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Large checkpoints convert in bounded memory: peak RSS measured in a fresh interpreter.

A generated sharded bfloat16 checkpoint (about 50 MB, several shards) is converted to `.nnr`
and back in subprocesses; each reports its peak RSS above its own baseline (after importing
nnrconv and torch). The bound is the one the design promises: two float32 copies of the largest
tensor plus 64 MB, whatever the model's size.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnrconv.core import ArrayTensor, DType
from nnrconv.core._narrow import bfloat16_bits
from nnrconv_pytorch import _shards

pytestmark = pytest.mark.slow

_MEASURE = """
import json, resource, sys
import nnrconv, nnrconv_pytorch._torchio
from nnrconv import nnc
def rss(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
base = rss()
options = nnc.CodingOptions(lossless=True) if sys.argv[3] == "lossless" else None
nnrconv.convert(sys.argv[1], sys.argv[2], options=options)
print(json.dumps({"baseline": base, "peak": rss()}))
"""


def make_checkpoint(folder: Path, *, shards: int, layers_per_shard: int, hidden: int, seed: int = 0) -> int:
    """A bf16 checkpoint in transformers' layout; returns the largest tensor's element count."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    weight_map, total, largest = {}, 0, 0
    for shard in range(shards):
        file = f"model-{shard + 1:05d}-of-{shards:05d}.safetensors"
        tensors = []
        for layer in range(layers_per_shard):
            prefix = f"model.layers.{shard * layers_per_shard + layer}"
            for name, shape in (
                (f"{prefix}.mlp.up_proj.weight", (4 * hidden, hidden)),
                (f"{prefix}.norm.weight", (hidden,)),
            ):
                values = rng.standard_normal(shape, dtype=np.float32) * (0.02 if len(shape) > 1 else 1.0)
                tensors.append(ArrayTensor(name, bfloat16_bits(values), dtype=DType.BFLOAT16))
                largest = max(largest, int(np.prod(shape)))
        total += _shards.write_safetensors(folder / file, tensors, {"format": "pt"})
        weight_map.update({t.name: file for t in tensors})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text('{"torch_dtype": "bfloat16"}')
    return largest


def _peak(source: Path, target: Path, mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(source), str(target), mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report["peak"] - report["baseline"]


@pytest.mark.parametrize("mode", ["default", "lossless"])
def test_sharded_checkpoint_round_trip_stays_within_the_memory_bound(tmp_path: Path, mode: str) -> None:
    largest = make_checkpoint(tmp_path / "in", shards=4, layers_per_shard=6, hidden=512)  # 25 M params, 50 MB
    bound = 2 * 4 * largest + 64 * 1024 * 1024
    nnr = tmp_path / "m.nnr"
    out = tmp_path / "out"
    out.mkdir()
    encode_peak = _peak(tmp_path / "in" / "model.safetensors.index.json", nnr, mode)
    decode_peak = _peak(nnr, out / "model.safetensors.index.json", mode)
    assert encode_peak <= bound, (
        f"encoding peaked {encode_peak / 2**20:.0f} MiB above baseline (bound {bound / 2**20:.0f})"
    )
    assert decode_peak <= bound, (
        f"decoding peaked {decode_peak / 2**20:.0f} MiB above baseline (bound {bound / 2**20:.0f})"
    )
    names = sorted(p.name for p in (tmp_path / "in").iterdir())
    assert sorted(p.name for p in out.iterdir()) == names
    if mode == "lossless":
        for name in names:
            assert (out / name).read_bytes() == (tmp_path / "in" / name).read_bytes(), name


def test_encoding_a_big_tensor_stays_within_the_memory_bound(tmp_path: Path) -> None:
    """One 16.8 M-element bf16 tensor (the bound is then 2 x 64 MiB + 64 MiB): its float32
    values, int32 levels and payload may not all be held at once, nor the QP search's and SNR
    check's temporaries pile up on top (before the fix: 223 MiB above baseline; now about 150)."""
    largest = make_checkpoint(tmp_path / "in", shards=1, layers_per_shard=1, hidden=2048)
    assert largest == 8192 * 2048
    bound = 2 * 4 * largest + 64 * 1024 * 1024
    nnr = tmp_path / "m.nnr"
    peak = _peak(tmp_path / "in" / "model.safetensors.index.json", nnr, "default")
    assert peak <= bound, f"encoding peaked {peak / 2**20:.0f} MiB above baseline (bound {bound / 2**20:.0f})"
    assert nnr.stat().st_size < 2 * largest  # coded (about 7 bits per weight), not raw
