# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""nnef-tools' PyTorch interpreter built in memory, for a model read from a folder or decoded from NNR.

NOTE: `Interpreter` also accepts a parsed `nnef.Graph`; the graph is parsed from the model's own
`graph.nnef` (and `graph.quant`) text, and each variable's data comes from the very bytes `save`
would write to its `.dat` file, read by `nnef.read_tensor` as the interpreter's folder reader
does. So no model file is written, and the interpreter sees exactly what it would read from disk.
"""

from __future__ import annotations

import importlib.util
import io
import warnings
from typing import Any

from nnrconv.core import FormatError, FrameworkMissingError, Model, UnsupportedError
from nnrconv_nnef._io import dat_bytes, native

__all__ = ["interpreter"]

_RUNTIME = ("nnef_tools", "torch")


class _Stream:
    """A read-only byte stream that says it cannot seek: `nnef.read_tensor` then reads with
    `np.frombuffer` instead of `np.fromfile`, which needs a real file."""

    def __init__(self, data: bytes) -> None:
        self._buffer = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._buffer.read(size)

    def seekable(self) -> bool:
        return False


def interpreter(model: Model, device: str = "cpu") -> Any:
    """A `nnef_tools.interpreter.pytorch.Interpreter` for `model`: call it with the input arrays
    in graph-input order; it returns the outputs by name.

    Raises:
        FrameworkMissingError: nnef_tools or torch is not installed.
        UnsupportedError: the model did not come from NNEF, or the interpreter cannot build it.
    """
    missing = [m for m in _RUNTIME if importlib.util.find_spec(m) is None]
    if missing:
        raise FrameworkMissingError(
            f"running NNEF models needs {', '.join(missing)}; install it with: pip install nnef-tools torch"
        )
    import nnef
    from nnef_tools.interpreter.pytorch import Interpreter

    document = native(model)
    quant = document.quant_text.decode() if document.quant_text is not None else None
    try:
        graph = nnef.parse_string(document.graph_text.decode(), quant)
    except nnef.Error as exc:
        raise FormatError(f"nnef cannot parse the graph: {exc}") from exc
    for operation in graph.operations:
        if operation.name != "variable":
            continue
        label = operation.attribs["label"]
        record = document.records.get(label)
        if record is None:
            raise FormatError(f"variable {label!r} has no tensor in the model")
        data = nnef.read_tensor(_Stream(dat_bytes(record, model.tensors)))
        name = operation.outputs["output"]
        tensor = graph.tensors[name]
        graph.tensors[name] = nnef.Tensor(tensor.name, tensor.dtype, list(data.shape), data, tensor.quantization)
    try:
        with warnings.catch_warnings():
            # nnef-tools' operators trip torch deprecation warnings; they are not the user's.
            warnings.simplefilter("ignore", UserWarning)
            return Interpreter(graph, device=device)
    except (NotImplementedError, KeyError, AssertionError, TypeError, ValueError) as exc:
        raise UnsupportedError(f"nnef-tools' interpreter cannot build this model: {exc!r}") from exc
