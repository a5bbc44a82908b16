# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Every model the onnx package ships for its backend tests (light, pytorch-converted, simple).

Each goes ONNX → NNR → ONNX: all tensors must come back bit-identical, and wherever
onnxruntime can run the original, the restored model must give identical outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper, version_converter

from tests.plugins.onnx._helpers import (
    assert_same_outputs,
    assert_tensors_identical,
    nnc_ready,
    nnr_roundtrip,
    onnx_format,
    run_ort,
    simulate_nnr,
)

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
FOLDERS = ("light", "pytorch-converted", "simple")
UPGRADE_OPSET = 13
MODELS = sorted(p for folder in FOLDERS for p in (DATA / folder).rglob("*.onnx"))


def _inputs(path: Path, model: onnx.ModelProto) -> dict[str, np.ndarray] | None:
    """The test's recorded inputs, else seeded random ones for static tensor inputs, else None."""
    initializers = {t.name for t in model.graph.initializer}
    names = [v for v in model.graph.input if v.name not in initializers]
    recorded = sorted((path.parent / "test_data_set_0").glob("input_*.pb"), key=lambda p: int(p.stem[6:]))
    if recorded:
        if len(recorded) != len(names):
            return None
        return {v.name: numpy_helper.to_array(onnx.load_tensor(str(p))) for v, p in zip(names, recorded, strict=True)}
    rng = np.random.default_rng(0)
    inputs = {}
    for value in names:
        tensor_type = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
        if not value.type.HasField("tensor_type") or any(d < 0 for d in dims):
            return None
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        inputs[value.name] = rng.standard_normal(dims).astype(dtype)
    return inputs


def _upgraded(path: Path) -> bytes:
    # onnxruntime dropped kernels of some op-set 6 operators; the same upgrade applied to the
    # original and to the restored model still compares their weights through the runtime.
    return version_converter.convert_version(onnx.load(str(path)), UPGRADE_OPSET).SerializeToString()


def _runtime_pair(original: Path, restored: Path, inputs: dict[str, np.ndarray] | None) -> tuple | None:
    """(original outputs, restored outputs), upgrading both if needed; None if the runtime cannot run it.

    Only the original may fail to run: once it runs, the restored model must run too.
    """
    if inputs is None:
        return None
    for load in (lambda p: p, _upgraded):
        try:
            expected = run_ort(load(original), inputs)
        except Exception:
            continue
        return expected, run_ort(load(restored), inputs)
    return None


@pytest.mark.parametrize("path", MODELS, ids=[str(p.relative_to(DATA)) for p in MODELS])
def test_backend_model_roundtrip(path: Path, tmp_path: Path) -> None:
    fmt = onnx_format()
    original = fmt.load(path)
    if nnc_ready():
        _, back = nnr_roundtrip(path, tmp_path)
        restored = fmt.load(back)
    else:
        restored = simulate_nnr(original)
        back = tmp_path / "back.onnx"
        fmt.save(restored, back)
    assert_tensors_identical(original, restored)
    assert_tensors_identical(original, fmt.load(back))
    outputs = _runtime_pair(path, back, _inputs(path, original.native))
    if outputs is not None:
        assert_same_outputs(*outputs)


def test_walk_found_the_backend_models() -> None:
    assert len(MODELS) >= 100, f"only {len(MODELS)} backend models under {DATA}"
