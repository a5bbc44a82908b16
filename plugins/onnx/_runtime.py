# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Running ONNX models in onnxruntime, for round-trip checks."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from nnrconv.core import DType, FrameworkMissingError, InputSpec, Model, UnsupportedError
from nnrconv_onnx._io import _rebuild


def input_specs(model: Model) -> list[InputSpec]:
    """Graph inputs that are not initializers; symbolic or unknown dimensions become 1."""
    graph = model.native.graph
    initialized = {t.name for t in graph.initializer}
    specs = []
    for value in graph.input:
        if value.name in initialized:
            continue
        tensor_type = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise UnsupportedError(f"input {value.name!r} is not a tensor; the ONNX runner cannot feed it")
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in tensor_type.shape.dim)
        specs.append(InputSpec(value.name, DType(tensor_type.elem_type), dims))
    return specs


def run(model: Model, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run in onnxruntime on one thread (so identical models give identical outputs)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise FrameworkMissingError(
            "running ONNX models needs onnxruntime; install it with: pip install 'nnrconv[onnx]'"
        ) from exc
    proto = _rebuild(model, strip=())
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        results = session.run(names, dict(inputs))
    except (ort.capi.onnxruntime_pybind11_state.Fail, ort.capi.onnxruntime_pybind11_state.InvalidArgument) as exc:
        raise UnsupportedError(f"onnxruntime cannot run the model: {str(exc).splitlines()[0]}") from exc
    except onnx.checker.ValidationError as exc:  # pragma: no cover - defensive
        raise UnsupportedError(f"the model is not valid ONNX: {exc}") from exc
    return dict(zip(names, (np.asarray(r) for r in results), strict=True))
