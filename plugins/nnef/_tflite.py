# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`TfliteFormat`: TFLite flatbuffers as a read-only source of cross-format conversion to NNEF.

NOTE: the core converts a model between formats only after a format plugin has loaded it
(`nnrconv._api.convert`), so `nnrconv m.tflite m.nnef` needs a format that recognises `.tflite`.
This one reads the flatbuffer with nnef-tools' TFLite reader: the neutral graph and the constant
tensors, keyed by TFLite tensor name. It has no NNR topology code and cannot write, so a TFLite
model goes to NNEF (through `convert_model`) and from there anywhere, but not into NNR directly.
Like `_format`, this module is imported at discovery and imports no framework at module level.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from nnrconv.core import ArrayTensor, DType, FormatError, FormatPlugin, Graph, Model, Node, ValueInfo

__all__ = ["TfliteFormat"]

# A TFLite flatbuffer carries its file identifier at bytes 4..8.
_IDENTIFIER = b"TFL3"


class TfliteFormat(FormatPlugin):
    """TFLite flatbuffers (`.tflite`), read by nnef-tools' reader; converts to NNEF only."""

    name: ClassVar[str] = "tflite"
    description: ClassVar[str] = "TFLite flatbuffer (read-only; converts to NNEF through nnef-tools)"
    patterns: ClassVar[tuple[str, ...]] = ("*.tflite",)
    requires: ClassVar[tuple[str, ...]] = ("nnef_tools", "flatbuffers")
    install: ClassVar[str] = "pip install 'nnrconv[nnef]' flatbuffers"

    def sniff(self, path: Path, head: bytes) -> bool:
        """A file with the `TFL3` identifier at byte 4."""
        return path.is_file() and head[4:8] == _IDENTIFIER

    def load(self, path: Path) -> Model:
        """Read the operators and constant tensors (by tensor name) with nnef-tools' TFLite reader.

        Raises:
            FormatError: the file is not a TFLite flatbuffer nnef-tools can read.
        """
        from nnef_tools.io.tf.lite import Reader

        try:
            graph = Reader()(str(path))
        except Exception as exc:  # the generated flatbuffer code raises anything on bad bytes
            raise FormatError(f"{path}: not a TFLite model nnef-tools can read: {exc}") from exc
        return _model(graph)


def _model(source) -> Model:  # type: ignore[no-untyped-def]
    names: dict[int, str] = {}

    def name_of(tensor) -> str:  # type: ignore[no-untyped-def]
        # TFLite does not require unique names; keep the first and number the rest.
        key = id(tensor)
        if key not in names:
            base = tensor.name or "tensor"
            taken = set(names.values())
            name, n = base, 1
            while name in taken:
                n += 1
                name = f"{base}#{n}"
            names[key] = name
        return names[key]

    def info(tensor) -> ValueInfo:  # type: ignore[no-untyped-def]
        dtype = DType.from_numpy(np.dtype(tensor.dtype)) if tensor.dtype is not None else DType.UNDEFINED
        return ValueInfo(name_of(tensor), dtype, tensor.shape)

    graph = Graph(
        name=source.name or "tflite",
        nodes=[
            Node(op.type, [name_of(t) for t in op.inputs], [name_of(t) for t in op.outputs], name=op.name or "")
            for op in source.operations
        ],
        inputs=[info(t) for t in source.inputs],
        outputs=[info(t) for t in source.outputs],
    )
    tensors = {}
    for tensor in source.tensors:
        if tensor.data is not None and isinstance(tensor.data, np.ndarray):
            name = name_of(tensor)
            tensors[name] = ArrayTensor(name, np.ascontiguousarray(tensor.data))
    return Model(graph, tensors, source_format="tflite")
