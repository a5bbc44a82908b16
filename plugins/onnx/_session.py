# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Inference straight from a compressed model: an onnxruntime session with no plain file written.

The bitstream is decoded in memory and the rebuilt ModelProto handed to onnxruntime as bytes.
A protobuf message cannot exceed 2 GiB, so for larger models the main graph's initializers are
passed to onnxruntime as external initializers (OrtValues over the decoded arrays) instead of
being serialised, which also avoids a second copy of the weights.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nnrconv.core import FrameworkMissingError, Model, UnsupportedError

__all__ = ["inference_session"]

# Serialise the whole model below this size; above it, feed initializers separately.
INLINE_LIMIT = 2**31 - 2**26
EXTERNAL_MIN_BYTES = 1024


def inference_session(
    model: str | os.PathLike[str] | Model,
    *,
    providers: Sequence[str] | None = None,
    sess_options: Any = None,
) -> Any:
    """A ready `onnxruntime.InferenceSession` for a `.nnr`, a `.nnr.onnx` or a plain `.onnx`.

    Args:
        model: a path (any input `nnrconv.load` reads that holds an ONNX topology) or a `Model`.
        providers: onnxruntime execution providers (default: CPU).
        sess_options: an `onnxruntime.SessionOptions` to use.

    Raises:
        FrameworkMissingError: onnxruntime is not installed.
        UnsupportedError: the model does not hold an ONNX topology.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise FrameworkMissingError(
            "inference sessions need onnxruntime; install it with: pip install 'nnrconv[onnx]'"
        ) from exc
    import nnrconv
    from nnrconv_onnx._io import _rebuild

    if not isinstance(model, Model):
        path = Path(model)
        model = nnrconv.load(path)
    if model.source_format != "onnx":
        label = model.source_format or "no topology"
        raise UnsupportedError(f"an onnxruntime session needs an ONNX topology; this model has {label}")
    options = sess_options if sess_options is not None else ort.SessionOptions()
    providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
    if model.nbytes < INLINE_LIMIT:
        proto = _rebuild(model, strip=())
        return ort.InferenceSession(proto.SerializeToString(), options, providers=providers)
    return _session_with_external_initializers(ort, model, options, providers)


def _session_with_external_initializers(ort: Any, model: Model, options: Any, providers: list[str]) -> Any:
    """Serialise the graph without its large initializers and hand those over as OrtValues."""
    import onnx

    from nnrconv_onnx._io import _rebuild

    # Only large tensors go external: they hold the bytes, while small ones (shapes, axes) may
    # be read by graph resolution before onnxruntime substitutes external initializers.
    names = [
        t.name
        for t in model.native.graph.initializer
        if t.name in model.tensors and model.tensors[t.name].nbytes >= EXTERNAL_MIN_BYTES
    ]
    external = set(names)
    # The stripped initializers stay declared (name, type, dims) as external data that no file
    # backs; onnxruntime replaces them with the OrtValues before it reads them.
    proto = _rebuild(model, strip=external)
    for initializer in proto.graph.initializer:
        if initializer.name in external:
            initializer.data_location = onnx.TensorProto.EXTERNAL
            del initializer.external_data[:]
            entry = initializer.external_data.add()
            entry.key, entry.value = "location", "nnrconv-in-memory"
    arrays = [model.tensors[n].numpy() for n in names]
    values = [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays]
    options.add_external_initializers(names, values)
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=providers)
    # The OrtValues borrow the arrays' memory and must outlive the session: keep both on it.
    session._nnrconv_initializers = (arrays, values)
    return session
