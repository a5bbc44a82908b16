# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Running ONNX models in onnxruntime, for round-trip checks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from nnrconv.core import FrameworkMissingError, Model, UnsupportedError
from nnrconv_onnx._io import _rebuild


def run(model: Model, inputs: Mapping[str, np.ndarray], extra: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Run in onnxruntime on one thread (so identical models give identical outputs); `extra`
    intermediate tensors are returned too (as graph outputs added to a copy of the graph)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise FrameworkMissingError(
            "running ONNX models needs onnxruntime; install it with: pip install 'nnrconv[onnx]'"
        ) from exc
    proto = _rebuild(model, strip=())
    known = {o.name for o in proto.graph.output}
    proto.graph.output.extend(onnx.ValueInfoProto(name=n) for n in dict.fromkeys(extra) if n not in known)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 4  # failures surface as exceptions; the log would add stderr lines
    run_options = ort.RunOptions()
    run_options.log_severity_level = 4
    try:
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        results = session.run(names, dict(inputs), run_options)
    except (ort.capi.onnxruntime_pybind11_state.Fail, ort.capi.onnxruntime_pybind11_state.InvalidArgument) as exc:
        raise UnsupportedError(f"onnxruntime cannot run the model: {str(exc).splitlines()[0]}") from exc
    except onnx.checker.ValidationError as exc:  # pragma: no cover - defensive
        raise UnsupportedError(f"the model is not valid ONNX: {exc}") from exc
    return dict(zip(names, (np.asarray(r) for r in results), strict=True))
