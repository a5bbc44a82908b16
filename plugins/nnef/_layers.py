# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Which weights an NNEF graph applies linearly to which activation (for error compensation).

Covered, when the weight is a float `variable` the graph feeds in directly (no `graph.quant`
entry, which the interpreter would dequantize):
- `conv` with `groups = 1` and a 2-D filter [C_out, C_in, kh, kw] on an NCHW input, with explicit
  non-negative `padding` (zeros unless it is all zero: other borders are not a zero pad) or the
  empty `padding = []`. That one is the interpreter's own 'same' padding (`_same_padding` in
  nnef-tools: total = max(0, (⌈u/s⌉ - 1)·s + (k - 1)·d + 1 - u), the odd pixel after): with
  stride 1 it does not depend on the input size; otherwise it is computed from the input's shape
  as `nnef.infer_shapes` gives it, and `activations` drops an input whose run-time size differs.
- `linear(input, filter, bias)`: y = x · filterᵀ, kind "linear".
- `matmul(A, B)` with a 2-D variable B and `transposeA = false`: "linear" when `transposeB`,
  else "matmul".
Grouped, depthwise, 1-D/3-D and transposed convolutions, `separable_conv`, and weights reached
through other operations (reshape, transpose, a fragment) are left out: coded as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nnef
import numpy as np

from nnrconv.core import Model, WeightInput
from nnrconv_nnef._io import native

__all__ = ["activations", "weight_inputs"]


@dataclass(frozen=True, slots=True)
class _Sized:
    """A convolution whose padding was computed for its input's spatial size."""

    use: WeightInput
    spatial: tuple[int, int]


def _parsed(model: Model) -> Any:
    document = native(model)
    quant = document.quant_text.decode() if document.quant_text is not None else None
    return nnef.parse_string(document.graph_text.decode(), quant)


def _input_shapes(graph: Any) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape by `nnef.infer_shapes`; empty when the graph defeats it."""
    try:
        nnef.infer_shapes(graph)
    except (nnef.Error, AssertionError, KeyError, TypeError, ValueError):
        return {}
    return {name: tuple(int(d) for d in t.shape) for name, t in graph.tensors.items() if t.shape is not None}


def _same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """nnef-tools' 'same' padding of one axis (before, after)."""
    span = (kernel - 1) * dilation + 1
    total = max(0, ((size + stride - 1) // stride - 1) * stride + span - size)
    return total // 2, (total + 1) // 2


def _pairs(value: Any) -> list[tuple[int, int]] | None:
    try:
        pairs = [(int(a), int(b)) for a, b in value]
    except (TypeError, ValueError):
        return None
    return pairs if all(a >= 0 and b >= 0 for a, b in pairs) else None


def _conv(
    op: Any, weight: str, activation: str, dims: tuple[int, ...], shapes: Mapping[str, tuple[int, ...]]
) -> _Sized | WeightInput | None:
    attrs = op.attribs
    stride = tuple(int(s) for s in attrs.get("stride") or (1, 1))
    dilation = tuple(int(d) for d in attrs.get("dilation") or (1, 1))
    if len(dims) != 4 or attrs.get("groups", 1) != 1 or len(stride) != 2 or len(dilation) != 2:
        return None
    padding = attrs.get("padding") or []
    if padding:
        pairs = _pairs(padding)
        if pairs is None or len(pairs) != 2:
            return None
        if any(pairs[0] + pairs[1]) and attrs.get("border", "constant") != "constant":
            return None
        (top, bottom), (left, right) = pairs
        return WeightInput(weight, activation, "conv", stride, (top, left, bottom, right), dilation)  # type: ignore[arg-type]
    if attrs.get("border", "constant") != "constant":
        return None
    shape = shapes.get(activation)
    if stride == (1, 1):  # the total pad is (k - 1)·d whatever the size
        spatial = (1, 1)
    elif shape is not None and len(shape) == 4:
        spatial = (shape[2], shape[3])
    else:
        return None
    (top, bottom), (left, right) = (
        _same_pads(spatial[axis], int(dims[2 + axis]), stride[axis], dilation[axis]) for axis in (0, 1)
    )
    use = WeightInput(weight, activation, "conv", stride, (top, left, bottom, right), dilation)  # type: ignore[arg-type]
    return use if stride == (1, 1) else _Sized(use, spatial)


def _uses(model: Model) -> list[WeightInput | _Sized]:
    graph = _parsed(model)
    labels = {
        str(op.outputs["output"]): str(op.attribs["label"])
        for op in graph.operations
        if op.name == "variable" and not graph.tensors[str(op.outputs["output"])].quantization
    }
    shapes: dict[str, tuple[int, ...]] | None = None
    found: list[WeightInput | _Sized] = []
    seen: set[str] = set()
    for op in graph.operations:
        if op.name not in ("conv", "linear", "matmul"):
            continue
        first, second = ("input", "filter") if op.name != "matmul" else ("A", "B")
        source, weight_ref = op.inputs.get(first), op.inputs.get(second)
        if not isinstance(source, nnef.Identifier) or not isinstance(weight_ref, nnef.Identifier):
            continue
        label = labels.get(str(weight_ref))
        tensor = model.tensors.get(label) if label is not None else None
        if label is None or tensor is None or label in seen or not tensor.dtype.is_floating_point:
            continue
        dims = tuple(int(d) for d in tensor.shape)
        activation = str(source)
        use: WeightInput | _Sized | None = None
        if op.name == "conv":
            if shapes is None and op.attribs.get("padding") == []:
                shapes = _input_shapes(graph)
            use = _conv(op, label, activation, dims, shapes or {})
        elif len(dims) == 2 and op.name == "linear":
            use = WeightInput(label, activation, "linear")
        elif len(dims) == 2 and not op.attribs.get("transposeA", False):
            use = WeightInput(label, activation, "linear" if op.attribs.get("transposeB", False) else "matmul")
        if use is not None:
            seen.add(label)  # a weight shared by two layers is compensated for the first only
            found.append(use)
    return found


def weight_inputs(model: Model) -> list[WeightInput]:
    """Every `conv`/`linear`/`matmul` weight the interpreter applies as the module docstring says."""
    return [u.use if isinstance(u, _Sized) else u for u in _uses(model)]


def activations(model: Model, inputs: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    """The tensors `names` of one interpreter run, less any input of a 'same'-padded strided
    convolution whose spatial size is not the one its padding was computed for (that layer then
    gets no rows from this run rather than wrong ones)."""
    from nnrconv_nnef._runner import run

    values = run(model, inputs, names)
    for sized in (u for u in _uses(model) if isinstance(u, _Sized)):
        value = values.get(sized.use.activation)
        if value is not None and (value.ndim != 4 or tuple(value.shape[2:]) != sized.spatial):
            del values[sized.use.activation]
    return values
