# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Which weights a TensorFlow graph applies linearly to which activation (error compensation).

Read from the model's flat graph (`_flat`): a frozen GraphDef as it is, a SavedModel's serving
signature or a Keras model traced, with calls inlined and variables frozen. Covered: `Conv2D` in
NHWC whose filter is a 4-D float model tensor (HWIO) and whose input has as many channels as the
filter (TensorFlow runs a filter with fewer input channels as a grouped convolution: left out),
and `MatMul` whose second operand is a 2-D float model tensor (`transpose_b` false: y = x·W,
"matmul"; true: y = x·Wᵀ, "linear"; `transpose_a` true: left out). The weight may reach the
layer through value-preserving ops (Identity, ReadVariableOp, Snapshot, ...) only: a Reshape,
Cast or Transpose on the way changes what the weight is, so such layers are left out. Padding:
VALID is none, EXPLICIT is read from `explicit_paddings`, SAME is TensorFlow's own split (the odd
pixel at the bottom/right) of the input's spatial size, which must then be static in the graph,
else the layer is left out. A convolution whose output a BatchToSpaceND crops (a dilated
convolution as Keras runs it, by space-to-batch) is left out: some of its windows make no
output. Depthwise, 3-D and transposed convolutions, NCHW convolutions, layers inside lowered
while loops (recurrent cells) and TFLite models are not covered: their weights are coded as before.

Activation names are the layer inputs' tensor names in the flat graph (`image:0`,
`StatefulPartitionedCall/model/re_lu/Relu:0`), fetched NHWC as TensorFlow has them (the rate
layer transposes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from nnrconv.core import Model, UnsupportedError, WeightInput
from nnrconv_tensorflow import _flat

__all__ = ["activations", "same_pads", "weight_inputs"]

# Ops whose output is their first input, value for value and shape for shape.
_VALUE_PRESERVING = frozenset(
    {"Identity", "ReadVariableOp", "Snapshot", "StopGradient", "PreventGradient", "CheckNumerics"}
)
_MAX_HOPS = 32


def same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's SAME padding of one spatial axis: (before, after), the odd pixel after."""
    span = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + span - size, 0)
    return total // 2, total - total // 2


def _const_source(tensor: tf.Tensor) -> str | None:
    """The Const node a tensor is, looking back through value-preserving ops; None otherwise."""
    op = tensor.op
    for _ in range(_MAX_HOPS):
        if op.type == "Const":
            return op.name
        if op.type not in _VALUE_PRESERVING or not op.inputs:
            return None
        op = op.inputs[0].op
    return None


def _inside_loops(graph: tf.Graph) -> set[str]:
    """Ops of a lowered while loop (from an Enter up to its Exit): they run once per iteration,
    and a session cannot fetch their tensors."""
    todo = [op for op in graph.get_operations() if op.type == "Enter"]
    inside: set[str] = set()
    while todo:
        op = todo.pop()
        if op.name in inside or op.type == "Exit":
            continue
        inside.add(op.name)
        for output in op.outputs:
            todo.extend(output.consumers())
        todo.extend(op._control_outputs)  # constants of the loop body hang on its pivot
    return inside


def _pair(values: Sequence[int]) -> tuple[int, int] | None:
    """The (H, W) entries of an NHWC attribute list; None unless N and C are 1."""
    if len(values) != 4 or values[0] != 1 or values[3] != 1:
        return None
    return int(values[1]), int(values[2])


def _conv(op: tf.Operation, weight: str, shape: tuple[int, ...]) -> WeightInput | None:
    if len(shape) != 4 or op.get_attr("data_format") not in (b"NHWC", "NHWC"):
        return None
    strides, dilations = _pair(op.get_attr("strides")), _pair(op.get_attr("dilations"))
    x = op.inputs[0].shape
    if strides is None or dilations is None or x.rank != 4 or x[3] != shape[2]:
        return None  # unknown or different channel count: possibly a grouped convolution
    padding = op.get_attr("padding")
    padding = padding.decode() if isinstance(padding, bytes) else padding
    if padding == "VALID":
        pads = (0, 0, 0, 0)
    elif padding == "EXPLICIT":
        explicit = [int(p) for p in op.get_attr("explicit_paddings")]
        if len(explicit) != 8 or any(explicit[i] for i in (0, 1, 6, 7)):
            return None
        pads = (explicit[2], explicit[4], explicit[3], explicit[5])
    elif padding == "SAME" and x[1] is not None and x[2] is not None:
        top, bottom = same_pads(int(x[1]), shape[0], strides[0], dilations[0])
        left, right = same_pads(int(x[2]), shape[1], strides[1], dilations[1])
        pads = (top, left, bottom, right)
    else:
        return None
    if not all(_keeps_every_output(c) for c in op.outputs[0].consumers()):
        return None
    return WeightInput(weight, op.inputs[0].name, "conv", strides, pads, dilations, layout="hwio")


def _keeps_every_output(consumer: tf.Operation) -> bool:
    """False for a BatchToSpaceND that crops: TensorFlow's dilated convolution by space-to-batch
    (what Keras emits) convolves padded windows whose outputs it then drops, so H would count them."""
    if consumer.type != "BatchToSpaceND":
        return True
    crops = consumer.inputs[2].op
    return crops.type == "Const" and not np.any(tf.make_ndarray(crops.get_attr("value")))


def _matmul(op: tf.Operation, weight: str, shape: tuple[int, ...]) -> WeightInput | None:
    if len(shape) != 2 or op.get_attr("transpose_a"):
        return None
    return WeightInput(weight, op.inputs[0].name, "linear" if op.get_attr("transpose_b") else "matmul")


def weight_inputs(model: Model) -> list[WeightInput]:
    """Every Conv2D / MatMul of the flat graph whose weight is one of the model's float tensors.

    A model TensorFlow cannot import or load has none.
    """
    try:
        flat = _flat.flat_graph(model)
    except UnsupportedError:
        return []
    found: list[WeightInput] = []
    seen: set[str] = set()
    looped = _inside_loops(flat.graph)
    for op in flat.graph.get_operations():
        if op.type not in ("Conv2D", "MatMul") or len(op.inputs) != 2 or op.name in looped:
            continue
        weight = flat.keys.get(_const_source(op.inputs[1]) or "")
        tensor = model.tensors.get(weight) if weight else None
        if weight is None or tensor is None or weight in seen or not tensor.dtype.is_floating_point:
            continue
        shape = tuple(int(d) for d in tensor.shape)
        use = _conv(op, weight, shape) if op.type == "Conv2D" else _matmul(op, weight, shape)
        if use is not None:
            seen.add(weight)  # a weight shared by two layers is compensated for the first only
            found.append(use)
    return found


def activations(model: Model, inputs: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    """The tensors `names` (TensorFlow tensor names of the flat graph) of one session run on `inputs`.

    Raises:
        UnsupportedError: a name is no tensor of the graph, or TensorFlow cannot run the model.
    """
    return _flat.run(_flat.flat_graph(model), inputs, list(names))
