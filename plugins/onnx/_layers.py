# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Which weights an ONNX graph applies linearly to which activation (for error compensation).

Covered: `Conv` with one group, 2-D kernels and explicit pads (the bulk of a vision network's
parameters), and `MatMul` whose second operand is a 2-D weight. Grouped and depthwise
convolutions, `Gemm` and weights inside subgraphs or functions are left out: they are coded as
before, without compensation.
"""

from __future__ import annotations

import onnx

from nnrconv.core import Model, WeightInput
from nnrconv_onnx._io import _native

__all__ = ["weight_inputs"]


def _conv(node: onnx.NodeProto, weight: str, dims: tuple[int, ...]) -> WeightInput | None:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    if len(dims) != 4 or attrs.get("group", 1) != 1 or auto_pad not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        return None
    pads = tuple(int(p) for p in attrs.get("pads", (0, 0, 0, 0)))
    strides = tuple(int(s) for s in attrs.get("strides", (1, 1)))
    dilations = tuple(int(d) for d in attrs.get("dilations", (1, 1)))
    if len(pads) != 4 or len(strides) != 2 or len(dilations) != 2:
        return None
    return WeightInput(weight, node.input[0], "conv", strides, pads, dilations)  # type: ignore[arg-type]


def weight_inputs(model: Model) -> list[WeightInput]:
    """Every main-graph Conv/MatMul whose weight is one of the model's float tensors."""
    proto = _native(model)
    found: list[WeightInput] = []
    seen: set[str] = set()
    for node in proto.graph.node:
        if node.op_type not in ("Conv", "MatMul") or len(node.input) < 2 or node.domain not in ("", "ai.onnx"):
            continue
        weight = node.input[1]
        tensor = model.tensors.get(weight)
        if tensor is None or weight in seen or not tensor.dtype.is_floating_point:
            continue
        dims = tuple(tensor.shape)
        use = (
            _conv(node, weight, dims)
            if node.op_type == "Conv"
            else (WeightInput(weight, node.input[0], "matmul") if len(dims) == 2 else None)
        )
        if use is not None:
            seen.add(weight)  # a weight shared by two layers is compensated for the first only
            found.append(use)
    return found
