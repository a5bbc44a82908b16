# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Shared checks of the ONNX plugin tests: tensor identity, onnxruntime runs, round trips."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx

import nnrconv
from nnrconv import nnc
from nnrconv.core import ArrayTensor, DType, Model, get_registry
from nnrconv.testing import assert_models_identical as assert_tensors_identical  # noqa: F401
from nnrconv.testing import tensor_bytes  # noqa: F401

LOSSLESS = nnc.CodingOptions(lossless=True)
"""The plugin tests assert bit-identical round trips; conversion is lossy by default."""


def carried_names(model: Model) -> list[str]:
    """Tensors a lossless encode carries as NDUs (the rest stay in the topology), sorted."""
    return sorted(k for k, t in model.tensors.items() if t.dtype.is_numpy_native and nnc.can_carry(t.numpy(), LOSSLESS))


def nnc_ready() -> bool:
    """Whether the NNC backend is complete enough for real .nnr round trips."""
    return all(hasattr(nnc, name) for name in ("encode_model", "decode_model", "can_carry"))


def onnx_format():  # type: ignore[no-untyped-def]
    return get_registry().get("onnx")


def simulate_nnr(model: Model) -> Model:
    """What `_api.encode` + `_api.decode` do, with the NNC coding itself left out.

    float32 tensors are "carried" (and come back flattened, 0-d ones as [1], as an NNR data
    unit may return them); everything else stays in the topology.
    """
    fmt = onnx_format()
    carried = {k for k, t in model.tensors.items() if t.dtype is DType.FLOAT}
    topology = fmt.topology_bytes(model, carried)
    decoded = {k: ArrayTensor(k, np.asarray(model.tensors[k].numpy(), dtype=np.float32).reshape(-1)) for k in carried}
    return fmt.from_topology(topology, decoded)


def nnr_roundtrip(source: Path, workdir: Path) -> tuple[Path, Path]:
    """source → workdir/m.nnr → workdir/back.onnx through the public API."""
    nnr, back = workdir / "m.nnr", workdir / "back.onnx"
    nnrconv.convert(source, nnr, options=LOSSLESS)
    nnrconv.convert(nnr, back)
    return nnr, back


def materialized(path: Path) -> onnx.ModelProto:
    """The model at `path` with any external data loaded into raw_data."""
    return onnx.load(str(path), load_external_data=True)


def _session(model: Path | bytes):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 4  # failures are asserted, not logged
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run_ort(model: Path | bytes, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs of onnxruntime (one thread, CPU) for `inputs`."""
    return [np.asarray(o) for o in _session(model).run(None, dict(inputs))]


def assert_same_outputs(first: list[np.ndarray], second: list[np.ndarray]) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), "runtime outputs differ"
