# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Sizes of incremental updates against full codings and generic compression, in one run.

Usage: python benchmarks/update_sizes.py [--strength 0.01] [--seed 0]

Models: the PP-OCR v2.0 text-orientation classifier (`pip install --no-deps
rapidocr-onnxruntime==1.4.4`) when installed, and the bundled examples/tiny_cnn.onnx. Each is
"fine-tuned" twice in a row (every float tensor moved by seeded noise of `--strength` times its
spread; non-negative tensors by a factor e^(strength * noise)), giving a chain base -> t1 -> t2.

Per model: the ONNX file, a full NNR coding of t2 (nnrconv defaults), the update t1 -> t2 as
nnrconv writes it (bound by SHA-256, and by node id), the float32 difference t2 - t1 as raw bytes
and deflated (zlib level 9, the generic baseline), and the weight SNR of the restored t2.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nnrconv
from nnrconv import nnc
from nnrconv.core import ArrayTensor


def models() -> list[Path]:
    found = [Path(__file__).resolve().parents[1] / "examples" / "tiny_cnn.onnx"]
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
        if path.exists():
            found.append(path)
    return found


def tune(source: Path, target: Path, seed: int, strength: float) -> dict[str, np.ndarray]:
    model = nnrconv.load(source)
    rng = np.random.default_rng(seed)
    out = {}
    for name, tensor in list(model.tensors.items()):
        array = tensor.numpy()
        if array.dtype != np.float32 or array.size < 2:
            continue
        noise = rng.standard_normal(array.shape)
        if array.min() >= 0:
            new = (array * np.exp(strength * noise)).astype(np.float32)
        else:
            new = (array + noise * strength * float(array.std() or 1.0)).astype(np.float32)
        model.tensors[name] = ArrayTensor(name, new, role=tensor.role)
        out[name] = new
    nnrconv.save(model, target)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strength", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(
        f"{'model':<38} {'params':>9} {'onnx':>9} {'full nnr':>9} {'update':>9} {'upd (id)':>9} "
        f"{'f32 diff':>9} {'zlib diff':>9} {'update/full':>11} {'SNR t2 dB':>9}"
    )
    for source in models():
        with tempfile.TemporaryDirectory(prefix="nnrconv-upd-") as tmp:
            folder = Path(tmp)
            t1 = tune(source, folder / "t1.onnx", args.seed, args.strength)
            t2 = tune(folder / "t1.onnx", folder / "t2.onnx", args.seed + 1, args.strength)
            base, u1 = folder / "base.nnr", folder / "u1.nnr"
            nnrconv.convert(source, base)
            nnrconv.convert(folder / "t1.onnx", u1, base=base)
            chain = [base, u1]
            nnrconv.convert(folder / "t2.onnx", folder / "u2.nnr", base=chain)
            nnrconv.convert(folder / "t2.onnx", folder / "u2id.nnr", base=chain, parent_ref="id")
            nnrconv.convert(folder / "t2.onnx", folder / "full2.nnr")
            diff = b"".join((t2[n] - t1[n]).astype(np.float32).tobytes() for n in t2)
            restored = nnc.read_chain([(p.read_bytes(), p.name) for p in (*chain, folder / "u2.nnr")]).tensors
            signal = sum(float(np.sum(t2[n].astype(np.float64) ** 2)) for n in t2)
            noise = sum(float(np.sum((t2[n] - restored[n].values.reshape(t2[n].shape)) ** 2)) for n in t2)
            size = {p: (folder / f"{p}.nnr").stat().st_size for p in ("full2", "u2", "u2id")}
            params = sum(a.size for a in t2.values())
            print(
                f"{source.name:<38} {params:>9,} {source.stat().st_size:>9,} {size['full2']:>9,} {size['u2']:>9,} "
                f"{size['u2id']:>9,} {len(diff):>9,} {len(zlib.compress(diff, 9)):>9,} "
                f"{size['u2'] / size['full2']:>11.1%} {10 * np.log10(signal / noise):>9.1f}"
            )


if __name__ == "__main__":
    main()
