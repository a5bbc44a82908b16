# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""A language-model-sized bf16 checkpoint through NNR and back: memory, time, bits, SNR.

Usage: python benchmarks/llm_checkpoint.py [--layers 22] [--workdir DIR] [--keep] [-- nnrconv options]

Generates, in a temporary folder (never committed; about 2.2 GB for the default 1.1 B
parameters, plus the .nnr and the decoded copy), a sharded bfloat16 checkpoint with TinyLlama
1.1B's shapes (vocabulary 32000, hidden 2048, MLP 5632, grouped KV 256, `--layers` decoder
layers, 2 GB shards, `model.safetensors.index.json`, config and tokenizer files), Gaussian
weights of std 0.02 (norms near 1). Then, each in a fresh interpreter so that peak RSS is its
own: `nnrconv convert index m.nnr` and `nnrconv convert m.nnr out/model.safetensors.index.json`.
Prints per direction the wall time, Mparam/s, CPU time (all threads; Mparam/s per core: the
machine may be shared, so wall time alone understates it), and peak RSS above the interpreter's baseline
against the bound (twice the largest tensor in float32 + 64 MB); then bits per parameter, the
per-tensor SNR of the bfloat16 values that come back (worst, median), whether dtypes, shard
layout and metadata came back, and zstd -3 on the bf16 bytes for comparison.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_GENERATE = """
import json, sys
from pathlib import Path
import numpy as np
from nnrconv.core import ArrayTensor, DType
from nnrconv.core._narrow import bfloat16_bits
from nnrconv_pytorch import _shards
folder, layers = Path(sys.argv[1]), int(sys.argv[2])
vocab, hidden, mlp, kv = 32000, 2048, 5632, 256
shapes = [("model.embed_tokens.weight", (vocab, hidden))]
for i in range(layers):
    p = f"model.layers.{i}"
    shapes += [(f"{p}.self_attn.q_proj.weight", (hidden, hidden)), (f"{p}.self_attn.k_proj.weight", (kv, hidden)),
               (f"{p}.self_attn.v_proj.weight", (kv, hidden)), (f"{p}.self_attn.o_proj.weight", (hidden, hidden)),
               (f"{p}.mlp.gate_proj.weight", (mlp, hidden)), (f"{p}.mlp.up_proj.weight", (mlp, hidden)),
               (f"{p}.mlp.down_proj.weight", (hidden, mlp)), (f"{p}.input_layernorm.weight", (hidden,)),
               (f"{p}.post_attention_layernorm.weight", (hidden,))]
shapes += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]
rng = np.random.default_rng(0)
groups, size = [[]], 0
for name, shape in shapes:
    nbytes = 2 * int(np.prod(shape))
    if groups[-1] and size + nbytes > 2 * 1024**3:
        groups.append([]); size = 0
    groups[-1].append((name, shape)); size += nbytes
weight_map, total = {}, 0
for k, group in enumerate(groups):
    file = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
    tensors = []
    for name, shape in group:
        values = rng.standard_normal(shape, dtype=np.float32)
        values = values * 0.02 if len(shape) > 1 else 1.0 + 0.05 * values
        tensors.append(ArrayTensor(name, bfloat16_bits(values), dtype=DType.BFLOAT16))
    total += _shards.write_safetensors(folder / file, tensors, {"format": "pt"})
    weight_map.update({n: file for n, _ in group})
    del tensors
index = {"metadata": {"total_size": total}, "weight_map": weight_map}
(folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
config = {"model_type": "llama", "hidden_size": hidden, "num_hidden_layers": layers, "torch_dtype": "bfloat16"}
(folder / "config.json").write_text(json.dumps(config))
(folder / "tokenizer_config.json").write_text('{"model_max_length": 2048}')
print(sum(int(np.prod(s)) for _, s in shapes), max(int(np.prod(s)) for _, s in shapes))
"""

_CONVERT = """
import json, resource, sys, time
import nnrconv, nnrconv_pytorch._torchio
from nnrconv import nnc
from nnrconv.cli import main
def rss(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
base = rss()
started, cpu = time.perf_counter(), time.process_time()
code = main(["convert", "-q", *sys.argv[1:]])
assert code == 0, code
seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
print(json.dumps({"baseline": base, "peak": rss(), "seconds": seconds, "cpu": cpu, "code": code}))
"""


def _run(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"failed: {done.stderr.strip()[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


def _per_tensor_snr(original: Path, restored: Path) -> tuple[list[float], bool]:
    import nnrconv
    from nnrconv import nnc
    from nnrconv.core import DType
    from nnrconv.core._narrow import bfloat16_values

    a, b = nnrconv.load(original), nnrconv.load(restored)
    snrs, dtypes_ok = [], list(a.tensors) == list(b.tensors)
    for name, tensor in a.tensors.items():
        other = b.tensors[name]
        dtypes_ok = dtypes_ok and other.dtype is DType.BFLOAT16 and other.shape == tensor.shape
        snrs.append(nnc.snr_db(bfloat16_values(tensor.numpy()), bfloat16_values(other.numpy())))
        tensor.release()  # type: ignore[attr-defined]
        other.release()  # type: ignore[attr-defined]
    return snrs, dtypes_ok


def _headers_match(original: Path, restored: Path) -> bool:
    from nnrconv_pytorch._safetensors import read_metadata

    for shard in sorted(original.glob("*.safetensors")):
        other = restored / shard.name
        if not other.exists() or read_metadata(shard) != read_metadata(other):
            return False
    index = json.loads((original / "model.safetensors.index.json").read_text())
    again = json.loads((restored / "model.safetensors.index.json").read_text())
    return index == again and (restored / "config.json").read_bytes() == (original / "config.json").read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=22, help="decoder layers (22: 1.1 B parameters)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to generate (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("options", nargs="*", help="nnrconv coding options, after --")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nnrconv-llm-", dir=args.workdir))
    try:
        src, out = work / "in", work / "out"
        src.mkdir()
        out.mkdir()
        params, largest = (int(v) for v in _run(_GENERATE, str(src), str(args.layers)).split())
        bound = 2 * 4 * largest + 64 * 2**20
        nnr = work / "m.nnr"
        print(f"checkpoint: {params / 1e9:.3f} B bf16 parameters, largest tensor {largest / 1e6:.1f} M elements")
        print(f"memory bound: {bound / 2**20:.0f} MiB above baseline")
        for label, a, b in (
            ("encode", str(src / "model.safetensors.index.json"), str(nnr)),
            ("decode", str(nnr), str(out / "model.safetensors.index.json")),
        ):
            extra = args.options if label == "encode" else []
            report = json.loads(_run(_CONVERT, a, b, *extra))
            peak = (report["peak"] - report["baseline"]) / 2**20
            rate = params / report["seconds"] / 1e6
            verdict = "within" if peak * 2**20 <= bound else "ABOVE"
            seconds = report["seconds"]
            per_core = params / report["cpu"] / 1e6
            print(
                f"{label}: {seconds:7.1f} s  {rate:5.2f} Mparam/s  (CPU {report['cpu']:7.1f} s, {per_core:5.2f} "
                f"Mparam/s per core)  peak RSS +{peak:6.0f} MiB ({verdict} bound)"
            )
        print(f"size: {nnr.stat().st_size / 2**20:.0f} MiB, {8 * nnr.stat().st_size / params:.2f} bits/param")
        snrs, dtypes_ok = _per_tensor_snr(src / "model.safetensors.index.json", out / "model.safetensors.index.json")
        finite = [s for s in snrs if math.isfinite(s)]
        median = statistics.median(finite) if finite else math.inf
        print(
            f"per-tensor SNR: worst {min(snrs):.1f} dB, median {median:.1f} dB; "
            f"names, dtypes and shapes {'restored' if dtypes_ok else 'DIFFER'}; "
            f"shards, metadata, index, config {'restored' if _headers_match(src, out) else 'DIFFER'}"
        )
        if shutil.which("zstd"):
            started = time.perf_counter()
            packed = sum(
                len(subprocess.run(["zstd", "-q", "-3", "-T0", "-c", str(p)], capture_output=True, check=True).stdout)
                for p in sorted(src.glob("*.safetensors"))
            )
            seconds = time.perf_counter() - started
            rate = params / seconds / 1e6
            print(f"zstd -3 on the bf16 shards: {8 * packed / params:.2f} bits/param (exact), {rate:.1f} Mparam/s")
    finally:
        if args.keep:
            print(f"kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
