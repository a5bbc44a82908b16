# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Shared checks of the TensorFlow plugin tests: tensor identity, simulated and real NNR round trips."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

import nnrconv
from nnrconv import nnc
from nnrconv.core import ArrayTensor, DType, Model, Tensor, get_registry
from nnrconv.testing import assert_models_identical as assert_tensors_identical  # noqa: F401
from nnrconv.testing import tensor_bytes  # noqa: F401

Carry = Callable[[Tensor], bool]


def tf_format():  # type: ignore[no-untyped-def]
    return get_registry().get("tensorflow")


def float32_only(tensor: Tensor) -> bool:
    return tensor.dtype is DType.FLOAT


def simulate_nnr(model: Model, carry: Carry = float32_only) -> Model:
    """topology_bytes + from_topology with the carried tensors handed back flat, as NDUs return them."""
    fmt = tf_format()
    carried = {k for k, t in model.tensors.items() if carry(t)}
    topology = fmt.topology_bytes(model, carried)
    decoded = {k: ArrayTensor(k, np.asarray(model.tensors[k].numpy()).reshape(-1)) for k in carried}
    return fmt.from_topology(topology, decoded)


def exact_nnr(model: Model) -> Model:
    """A real NNR bitstream, coded lossless by the backend, decoded and rebuilt by the plugin."""
    fmt = tf_format()
    options = nnc.CodingOptions(lossless=True)
    carried = [t for t in model if nnc.can_carry(t.numpy(), options)]
    topology = fmt.topology_bytes(model, {t.name for t in carried})
    data = nnc.encode_model(((t.name, t.numpy()) for t in carried), topology, fmt.topology_code, options=options)
    decoded = nnc.decode_model(data)
    assert decoded.topology_storage_format == 4
    return fmt.from_topology(decoded.topology, {k: ArrayTensor(k, v) for k, v in decoded.tensors.items()})


def run(model: Model, x: np.ndarray) -> dict[str, np.ndarray]:
    fmt = tf_format()
    specs = fmt.input_specs(model)
    assert len(specs) == 1
    return fmt.run(model, {specs[0].name: x})


def assert_same_outputs(first: Mapping[str, np.ndarray], second: Mapping[str, np.ndarray]) -> None:
    assert sorted(first) == sorted(second)
    for key, a in first.items():
        b = second[key]
        assert a.dtype == b.dtype and a.shape == b.shape, key
        assert np.array_equal(a, b), f"TensorFlow output {key!r} differs"


LOSSLESS = nnc.CodingOptions(lossless=True)


def nnr_roundtrip(source: Path, workdir: Path, back_name: str) -> tuple[Path, Path]:
    """source -> workdir/m.nnr (lossless) -> workdir/back_name through `nnrconv.convert`."""
    nnr, back = workdir / "m.nnr", workdir / back_name
    nnrconv.convert(source, nnr, options=LOSSLESS)
    nnrconv.convert(nnr, back)
    return nnr, back


def cli(*args: str | Path, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nnrconv", *map(str, args)], capture_output=True, text=True, timeout=300, env=env
    )
