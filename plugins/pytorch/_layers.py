# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Which weights a `.pt2` program or TorchScript module applies linearly to which activation, and
those activations for one run (for error-compensating quantization).

Covered, read from the graph the runtime executes (never from module types, which a custom
`forward` may bypass): 2-D convolutions with one group, not transposed, with integer or 'valid'
padding, or 'same' (stride 1; the total padding d·(k-1) split with the odd pixel at the bottom
and right, as ATen's `_convolution_mode` pads) → "conv" (OIHW on NCHW); `linear` → "linear";
`matmul`/`mm`/`addmm` (beta = alpha = 1, as decompositions write a linear layer) whose second
operand is a 2-D weight → "matmul", or "linear" when the weight reaches it through one transpose
(`t`, `permute [1, 0]`, `transpose 0 1`). The weight must be the parameter or buffer itself (a
`.pt2` placeholder lifted from the state dict, a TorchScript `GetAttr` chain from `self`),
transposed at most: a weight cast, scaled or sliced on the way is left out, as are
grouped, 1-D and 3-D convolutions and nodes inside TorchScript control-flow blocks. A `.pt2`
program whose inputs have a fixed first dimension other than 1 lists nothing (see
`_runs_one_sample`).

Activations are named as the graph names them: the FX node name in a `.pt2` program, the value's
debug name in TorchScript's inlined graph. A program runs its `module()` (what `run` calls)
through an FX interpreter that keeps the named values; a TorchScript module runs a copy of its
inlined forward graph that also returns them, on the module's own attributes. Nothing is
unpickled or loaded beyond what `load` already did.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from nnrconv.core import Model, UnsupportedError, WeightInput
from nnrconv_pytorch import _runtime
from nnrconv_pytorch._torchio import Native, to_numpy

__all__ = ["activations", "weight_inputs"]

_CONV_FX = {"aten.conv2d.default", "aten.conv2d.padding", "aten.convolution.default", "aten._convolution.default"}
_CONV_SCRIPT = {"aten::conv2d", "aten::_convolution_mode", "aten::convolution", "aten::_convolution"}
_LINEAR = {"aten.linear.default", "aten::linear"}
_MATMUL = {"aten.matmul.default", "aten.mm.default", "aten::matmul", "aten::mm"}
_ADDMM = {"aten.addmm.default", "aten::addmm"}  # bias + x·W (beta = alpha = 1): a decomposed linear
_OPS = _CONV_FX | _CONV_SCRIPT | _LINEAR | _MATMUL | _ADDMM
_TRANSPOSE_ALL = {"aten.t.default", "aten::t"}
_TRANSPOSES = _TRANSPOSE_ALL | {"aten.permute.default", "aten.transpose.int", "aten::permute", "aten::transpose"}


# -- convolution geometry --------------------------------------------------------------------------


def _pair(value: Any) -> tuple[int, int] | None:
    """An int or a 1- or 2-long int list as (h, w); None for anything else (a SymInt, 3-D)."""
    items = [value] if isinstance(value, int) else list(value) if isinstance(value, (list, tuple)) else []
    if not items or len(items) > 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        return None
    return (items[0], items[-1])


def _conv(
    weight: str, activation: str, shape: tuple[int, ...], args: Sequence[Any], long_form: bool
) -> WeightInput | None:
    """The conv use of `weight` from the op's arguments (input, weight, bias, stride, padding,
    dilation, then groups, or transposed, output_padding, groups in the `convolution` form)."""
    if len(shape) != 4:
        return None
    stride, padding, dilation = (_pair(a) for a in args[3:6]) if len(args) >= 6 else (None, None, None)
    groups = args[8] if long_form else args[6]
    if long_form and args[6] is not False:
        return None  # transposed
    if stride is None or dilation is None or groups != 1:
        return None
    if padding is None:
        if args[4] == "valid":
            padding = (0, 0)
        elif args[4] == "same" and stride == (1, 1):
            total = [d * (k - 1) for d, k in zip(dilation, shape[2:], strict=True)]
            top, left = total[0] // 2, total[1] // 2
            pads = (top, left, total[0] - top, total[1] - left)
            return WeightInput(weight, activation, "conv", stride, pads, dilation)
        else:
            return None
    pads = (padding[0], padding[1], padding[0], padding[1])
    return WeightInput(weight, activation, "conv", stride, pads, dilation)


def _operands(op: str, args: Sequence[Any]) -> tuple[Any, Any] | None:
    """(activation, weight) operands of the op; None for an `addmm` that scales (beta, alpha)."""
    if op in _ADDMM:
        return (args[1], args[2]) if len(args) >= 5 and args[3] == 1 and args[4] == 1 else None
    return (args[0], args[1]) if len(args) >= 2 else None


def _swaps_two_axes(op: str, args: Sequence[Any]) -> bool:
    """Whether a transpose op on a 2-D tensor exchanges its two axes (`t`, `permute [1, 0]`,
    `transpose` of axes 0 and 1 in any spelling)."""
    if op in _TRANSPOSE_ALL:
        return True
    axes = args[1] if "permute" in op else args[1:3]
    if not isinstance(axes, (list, tuple)) or not all(isinstance(a, int) for a in axes) or len(axes) != 2:
        return False
    return [a % 2 for a in axes] == [1, 0] if "permute" in op else {a % 2 for a in axes} == {0, 1}


def _use(
    op: str, weight: str, activation: str, shape: tuple[int, ...], args: Sequence[Any], transposed: bool
) -> WeightInput | None:
    """How the op applies `weight` (read through one transpose when `transposed`)."""
    if op in _CONV_FX or op in _CONV_SCRIPT:
        long_form = op.endswith(("convolution.default", "convolution"))
        return None if transposed else _conv(weight, activation, shape, args, long_form)
    if len(shape) != 2:
        return None
    # linear takes (C_out, d) and matmul (d, C_out): a transpose between weight and op swaps them
    return WeightInput(weight, activation, "linear" if (op in _LINEAR) != transposed else "matmul")


def _float_shape(model: Model, key: str | None) -> tuple[int, ...] | None:
    tensor = model.tensors.get(key) if key is not None else None
    if tensor is None or not tensor.dtype.is_floating_point or not tensor.dtype.is_numpy_native:
        return None
    return tuple(tensor.shape)


# -- .pt2 programs ---------------------------------------------------------------------------------


def _fx_arguments(node: Any) -> list[Any] | None:
    """Every schema argument of an ATen call, defaults filled in; None for another target."""
    schema = getattr(node.target, "_schema", None)
    if schema is None:
        return None
    values = []
    for index, argument in enumerate(schema.arguments):
        if index < len(node.args):
            values.append(node.args[index])
        elif argument.name in node.kwargs:
            values.append(node.kwargs[argument.name])
        elif argument.has_default_value():
            values.append(argument.default_value)
        else:
            return None
    return values


def _program_uses(model: Model, program: Any) -> list[WeightInput]:
    signature = program.graph_signature
    keys = {**signature.inputs_to_buffers, **signature.inputs_to_parameters}
    found = []
    for node in program.graph.nodes:
        op = str(node.target) if node.op == "call_function" else ""
        args = _fx_arguments(node) if op in _OPS else None
        operands = _operands(op, args) if args is not None else None
        if operands is None or not all(isinstance(a, torch.fx.Node) for a in operands):
            continue
        source, weight = operands
        transposed = False
        if weight.op == "call_function" and str(weight.target) in _TRANSPOSES:
            inner = _fx_arguments(weight)
            if inner is None or not isinstance(inner[0], torch.fx.Node):
                continue
            transposed = _swaps_two_axes(str(weight.target), inner)
            weight = inner[0] if transposed else weight
        key = keys.get(weight.name) if weight.op == "placeholder" else None
        shape = _float_shape(model, key)
        if key is None or shape is None or (source.op == "placeholder" and source.name in keys):
            continue
        use = _use(op, key, source.name, shape, args, transposed)
        if use is not None:
            found.append(use)
    return found


def _runs_one_sample(program: Any) -> bool:
    """Whether no user input has a static first dimension other than 1.

    NOTE: the rate layer runs the calibration samples one by one (first axis sliced to 1); a
    program exported with a fixed batch of 2 refuses them (its shape guards), so it lists no
    layer rather than failing the conversion: its weights are coded as before.
    """
    users = {s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"}
    for node in program.graph.nodes:
        value = node.meta.get("val") if node.op == "placeholder" and node.name in users else None
        if isinstance(value, torch.Tensor) and value.ndim and isinstance(value.shape[0], int) and value.shape[0] != 1:
            return False
    return True


class _Recorder(torch.fx.Interpreter):
    """Runs a graph module as is and keeps the values of the nodes it is asked for."""

    def __init__(self, module: torch.fx.GraphModule, wanted: set[str]) -> None:
        super().__init__(module)
        self.wanted, self.kept = wanted, {}

    def run_node(self, n: torch.fx.Node) -> Any:
        value = super().run_node(n)
        if n.name in self.wanted:
            self.kept[n.name] = value
        return value


def _program_values(native: Native, args: list[torch.Tensor], names: Sequence[str]) -> dict[str, Any]:
    module = native.module.module()
    known = {n.name for n in module.graph.nodes if n.op != "output"}
    _known_or_refuse(names, known)
    recorder = _Recorder(module, set(names))
    recorder.run(*args)
    return recorder.kept


# -- TorchScript modules ---------------------------------------------------------------------------


def _attribute_path(value: Any, self_value: Any) -> str | None:
    """'a.b.weight' for a chain of `prim::GetAttr` from `self`; None for anything else."""
    parts = []
    while value.unique() != self_value.unique():
        node = value.node()
        if node.kind() != "prim::GetAttr":
            return None
        parts.append(node.s("name"))
        value = next(iter(node.inputs()))
    return ".".join(reversed(parts)) if parts else None


def _constant(value: Any) -> Any:
    """A constant argument's Python value (int lists rebuilt from `prim::ListConstruct`)."""
    node = value.node()
    if node.kind() == "prim::Constant":
        return value.toIValue()
    if node.kind() == "prim::ListConstruct":
        return [_constant(v) for v in node.inputs()]
    return None


def _script_uses(model: Model, graph: Any) -> list[WeightInput]:
    self_value = next(iter(graph.inputs()))
    found = []
    for node in graph.nodes():  # the top block only: values inside control flow cannot be returned
        op = node.kind()
        inputs = list(node.inputs())
        if op not in _OPS or len(inputs) < 2 or (op in _CONV_SCRIPT and len(inputs) < 7):
            continue
        args = [*inputs[:3], *(_constant(v) for v in inputs[3:])]
        operands = _operands(op, args)
        if operands is None:
            continue
        source, weight = operands
        transposed = False
        if weight.node().kind() in _TRANSPOSES:
            inner = list(weight.node().inputs())
            transposed = _swaps_two_axes(weight.node().kind(), [inner[0], *(_constant(v) for v in inner[1:])])
            weight = inner[0] if transposed else weight
        key = _attribute_path(weight, self_value)
        shape = _float_shape(model, key)
        if key is None or shape is None or not source.type().isSubtypeOf(torch._C.TensorType.get()):
            continue
        use = _use(op, key, source.debugName(), shape, args, transposed)
        if use is not None:
            found.append(use)
    return found


_SCRIPT_FUNCTIONS: weakref.WeakKeyDictionary[Any, dict[tuple[str, ...], Any]] = weakref.WeakKeyDictionary()


def _script_function(module: Any, names: tuple[str, ...]) -> Any:
    """The module's inlined forward returning (its output, *the values `names`), built once per
    module and set of names. It reads the module's own attributes (its `self` is the module)."""
    cache = _SCRIPT_FUNCTIONS.setdefault(module, {})
    if names in cache:
        return cache[names]
    graph = module.inlined_graph  # a fresh copy each time: editing it leaves `forward` alone
    values = {v.debugName(): v for v in graph.inputs()}
    values.update({v.debugName(): v for node in graph.nodes() for v in node.outputs()})
    _known_or_refuse(names, {n for n, v in values.items() if v.type().isSubtypeOf(torch._C.TensorType.get())})
    ret = graph.return_node()
    returned = [*ret.inputs(), *(values[n] for n in names)]
    pack = graph.create("prim::TupleConstruct", returned)
    pack.output().setType(torch._C.TupleType([v.type() for v in returned]))
    pack.insertBefore(ret)
    while len(list(ret.inputs())):
        ret.removeInput(0)
    ret.addInput(pack.output())
    graph.lint()
    cache[names] = torch._C._create_function_from_graph("nnrconv_forward_with_activations", graph)
    return cache[names]


def _script_values(native: Native, args: list[torch.Tensor], names: Sequence[str]) -> dict[str, Any]:
    module = native.module
    schema = list(module.forward.schema.arguments)[1:]
    full = list(args)
    for argument in schema[len(args) :]:  # what `run` leaves to the defaults
        if not argument.has_default_value():
            raise UnsupportedError(f"input {argument.name!r} has no value to run the module with")
        full.append(argument.default_value)
    function = _script_function(module, tuple(names))
    outputs = function(module._c, *full)
    return dict(zip(names, outputs[1:], strict=True))


# -- entry points ----------------------------------------------------------------------------------


def _known_or_refuse(names: Sequence[str], known: set[str]) -> None:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UnsupportedError(f"the model's graph has no tensor named {unknown[0]!r} to return")


def weight_inputs(model: Model) -> list[WeightInput]:
    """Every covered conv/linear/matmul of the graph whose weight is a float tensor of the model;
    a weight used twice is listed for its first use only; empty for a state dict."""
    native = model.native
    if not isinstance(native, Native) or native.kind not in ("program", "script") or native.module is None:
        return []
    if native.kind == "program":
        if not _runs_one_sample(native.module):
            return []
        uses = _program_uses(model, native.module)
    else:
        uses = _script_uses(model, native.module.inlined_graph)
    seen: set[str] = set()
    found = []
    for use in uses:
        if use.weight not in seen:
            seen.add(use.weight)
            found.append(use)
    return found


def activations(model: Model, inputs: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    """The tensors `names` (graph node / value names) of one run on `inputs`, as `run` runs it.

    Raises:
        UnsupportedError: a state dict, a missing input, a name the graph does not have, or torch
            failing to run the model.
    """
    native = _runtime._native(model)  # copies the model's current tensor values in first
    order = _runtime._input_names(native)
    missing = [n for n in order if n not in inputs]
    if missing:
        raise UnsupportedError(f"input {missing[0]!r} is missing; the model takes {', '.join(order)}")
    args = [torch.from_numpy(np.array(inputs[n], copy=True)) for n in order]
    with _runtime._deterministic():
        try:
            if native.kind == "program":
                values = _program_values(native, args, names)
            else:
                values = _script_values(native, args, names)
        except UnsupportedError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnsupportedError(f"torch cannot run the model: {first}") from exc
    result = {}
    for name in names:
        value = values.get(name)
        if not isinstance(value, torch.Tensor):
            raise UnsupportedError(f"the model's value {name!r} is not a tensor in this run")
        result[name] = to_numpy(value, name)[0]
    return result
