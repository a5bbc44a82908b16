# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Throughput of the default coding of a bfloat16 checkpoint: nnrconv vs NNCodec vs zstd.

Usage: python benchmarks/bf16_throughput.py [--hidden 2048] [--mlp 5632] [--kv 256] [--repeat 1]

Generates one TinyLlama-shaped decoder layer of bfloat16 weights (q, k, v, o, gate, up, down
projections and two norms; 44 M parameters by default) as a safetensors file in a temporary
folder, and reports per coder the encode and decode speed as Mparam/s per core (parameters over
CPU seconds of all threads: the machine may be shared, so CPU time is what a core delivers) and
as wall-clock Mparam/s on one thread and on all cores.

- nnrconv: `nnrconv.encode` / `nnrconv.decode` of the loaded file with the default options
  (bfloat16 at 40 dB: SNR-driven QP search, trellis quantization, CABAC, integrity record),
  `jobs` 1 and all cores.
- NNCodec 2.1.3 (when importable, see tests/nnc/_nncodec_ref.py): its DeepCABAC core on each
  tensor's float32 view at the QP nnrconv chose for it (one quantization and one CABAC pass; its
  QP search and its bfloat16 handling, which fails, are not counted), single thread.
- zstd (the `zstd` command, level 3): the raw bfloat16 file, one thread and all threads, exact.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nnrconv
from nnrconv import nnc
from nnrconv.core import ArrayTensor, DType
from nnrconv.core._narrow import bfloat16_bits, bfloat16_values
from nnrconv_pytorch import _safetensors

QPD = 2


def _layer(hidden: int, mlp: int, kv: int) -> list[ArrayTensor]:
    rng = np.random.default_rng(0)
    shapes = [
        ("q_proj.weight", (hidden, hidden)),
        ("k_proj.weight", (kv, hidden)),
        ("v_proj.weight", (kv, hidden)),
        ("o_proj.weight", (hidden, hidden)),
        ("gate_proj.weight", (mlp, hidden)),
        ("up_proj.weight", (mlp, hidden)),
        ("down_proj.weight", (hidden, mlp)),
        ("input_layernorm.weight", (hidden,)),
        ("post_attention_layernorm.weight", (hidden,)),
    ]
    tensors = []
    for name, shape in shapes:
        values = rng.standard_normal(shape, dtype=np.float32)
        values = values * 0.02 if len(shape) > 1 else 1.0 + 0.05 * values
        tensors.append(ArrayTensor(f"model.layers.0.{name}", bfloat16_bits(values), dtype=DType.BFLOAT16))
    return tensors


def _timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of this process and its children, result)."""

    def children() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    wall, cpu, child = time.perf_counter(), time.process_time(), children()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu + children() - child, result


def _row(coder: str, params: int, size: int, enc: tuple[float, float], dec: tuple[float, float]) -> None:
    (enc_wall, enc_cpu), (dec_wall, dec_cpu) = enc, dec
    print(
        f"{coder:<24}{8 * size / params:>7.2f}  {params / enc_cpu / 1e6:>8.2f} {params / enc_wall / 1e6:>8.2f}"
        f"  {params / dec_cpu / 1e6:>8.2f} {params / dec_wall / 1e6:>8.2f}"
    )


def _nncodec(tensors: list[ArrayTensor], qps: dict[str, int]) -> None:
    try:
        from tests.nnc import _nncodec_ref as ref

        ref.import_nnc_core()
        sys.modules.setdefault("torchvision", types.ModuleType("torchvision"))
        from nncodec.extensions import deepCABAC
    except Exception as exc:  # pragma: no cover - depends on the environment
        print(f"{'NNCodec 2.1.3':<24}not importable ({exc!r})")
        return
    from benchmarks.cabac_vs_nncodec import ref_decode, ref_encode

    hdsp_off = (deepCABAC.HdspMode.AlwaysOff, np.array((0, 0), np.int8))
    views = {t.name: bfloat16_values(t.numpy()).reshape(t.shape[0], -1) for t in tensors if t.name in qps}
    enc_wall = enc_cpu = dec_wall = dec_cpu = 0.0
    size = 0
    for name, w in views.items():
        wall, cpu, payload = _timed(lambda w=w, name=name: ref_encode(deepCABAC, hdsp_off, w, qps[name], True))
        enc_wall, enc_cpu, size = enc_wall + wall, enc_cpu + cpu, size + len(payload)
        wall, cpu, _ = _timed(lambda w=w, p=payload: ref_decode(deepCABAC, hdsp_off, p, w.shape, True))
        dec_wall, dec_cpu = dec_wall + wall, dec_cpu + cpu
    coded = sum(w.size for w in views.values())
    _row("NNCodec core, 1 thread", coded, size, (enc_wall, enc_cpu), (dec_wall, dec_cpu))


def _zstd(path: Path, params: int, threads: int) -> None:
    packed = path.with_suffix(".zst")
    enc = _timed(
        lambda: subprocess.run(["zstd", "-q", "-f", "-3", f"-T{threads}", str(path), "-o", str(packed)], check=True)
    )
    dec = _timed(
        lambda: subprocess.run(["zstd", "-q", "-d", "-f", "-c", str(packed)], check=True, stdout=subprocess.DEVNULL)
    )
    _row(f"zstd -3, {threads} thread(s)", params, packed.stat().st_size, enc[:2], dec[:2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--mlp", type=int, default=5632)
    parser.add_argument("--kv", type=int, default=256)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    tensors = _layer(args.hidden, args.mlp, args.kv)
    params = sum(t.numpy().size for t in tensors)
    with tempfile.TemporaryDirectory(prefix="nnrconv-throughput-") as work:
        path = Path(work) / "layer.safetensors"
        path.write_bytes(_safetensors.write_bytes(tensors))
        print(f"one decoder layer: {params / 1e6:.1f} M bfloat16 parameters, {cores} cores (maybe shared)")
        print(f"{'coder':<24}{'bits':>7}  {'encode Mparam/s':>17}  {'decode Mparam/s':>17}")
        print(f"{'':<24}{'/param':>7}  {'per core':>8} {'wall':>8}  {'per core':>8} {'wall':>8}")
        qps: dict[str, int] = {}
        for jobs in (1, cores):
            model = nnrconv.load(path)
            options = nnc.CodingOptions(jobs=jobs)
            enc = _timed(lambda options=options, model=model: nnrconv.encode(model, options=options))
            data = enc[2]
            dec = _timed(lambda data=data, jobs=jobs: nnrconv.decode(data, jobs=jobs))
            _row(f"nnrconv, {jobs} thread(s)", params, len(data), enc[:2], dec[:2])
            qps = {u.tensor: u.qp for u in nnc.inspect_units(data) if u.tensor and u.qp is not None}
        _nncodec(tensors, qps)
        if shutil.which("zstd"):
            for threads in (1, cores):
                _zstd(path, params, threads)


if __name__ == "__main__":
    main()
