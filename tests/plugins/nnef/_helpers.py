# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Shared checks of the NNEF plugin tests: file identity, tensor identity, NNR simulation, CLI."""

from __future__ import annotations

import inspect
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

import nnrconv
from nnrconv import nnc
from nnrconv.core import ArrayTensor, DType, Model, get_registry


def nnef_format():  # type: ignore[no-untyped-def]
    return get_registry().get("nnef")


def model_files(path: Path) -> dict[str, bytes]:
    """Relative path -> content of every file of a model folder or `.tgz`."""
    if path.is_dir():
        return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def assert_same_files(first: Path, second: Path) -> None:
    a, b = model_files(first), model_files(second)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name] == b[name], f"{name} differs"


def assert_tensors_identical(first: Model, second: Model) -> None:
    assert list(first.tensors) == list(second.tensors)
    for key, a in first.tensors.items():
        b = second.tensors[key]
        assert (a.dtype, a.shape, a.role) == (b.dtype, b.shape, b.role), key
        assert np.ascontiguousarray(a.numpy()).tobytes() == np.ascontiguousarray(b.numpy()).tobytes(), key


def _lossless_options() -> object | None:
    options = getattr(nnc, "CodingOptions", None)
    return None if options is None else options(lossless=True)


def carried_labels(path: Path) -> list[str]:
    """Variables the NNC backend carries in NDUs under lossless coding (as `nnrconv.encode` decides)."""
    options = _lossless_options()
    tensors = nnrconv.load(path).tensors.items()
    if options is None:
        return [k for k, t in tensors if nnc.can_carry(t.dtype.storage_dtype)]
    return [k for k, t in tensors if nnc.can_carry(np.asarray(t.numpy()), options)]  # type: ignore[call-arg]


def convert_lossless(source: Path, target: Path) -> None:
    """`nnrconv.convert` into NNR with lossless coding (the API's default is lossy)."""
    options = _lossless_options()
    if options is not None and "options" in inspect.signature(nnrconv.convert).parameters:
        nnrconv.convert(source, target, options=options)  # type: ignore[call-arg]
    else:
        nnrconv.convert(source, target)


def simulate_nnr(model: Model) -> Model:
    """What `_api.encode` + `_api.decode` do without the NNC coding: float32 travels flattened."""
    fmt = nnef_format()
    carried = {k for k, t in model.tensors.items() if t.dtype is DType.FLOAT}
    topology = fmt.topology_bytes(model, carried)
    decoded = {k: ArrayTensor(k, np.array(model.tensors[k].numpy(), np.float32).reshape(-1)) for k in carried}
    return fmt.from_topology(topology, decoded)


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nnrconv", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def assert_same_outputs(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> None:
    assert list(first) == list(second)
    for name, a in first.items():
        b = second[name]
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert a.tobytes() == b.tobytes(), f"output {name!r} differs"
