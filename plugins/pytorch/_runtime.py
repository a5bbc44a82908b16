# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Running `.pt2` programs and TorchScript modules for round-trip checks (one thread, no grad)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils import _pytree

from nnrconv.core import DType, FormatError, InputSpec, Model, UnsupportedError
from nnrconv_pytorch import _archive
from nnrconv_pytorch._torchio import _DTYPES, Native, to_numpy, to_torch

__all__ = ["input_specs", "run", "session"]


def _native(model: Model) -> Native:
    """The model's program or module, holding the model's current tensor values.

    NOTE: the module is built once, at load; a model that shares it may bring other values for
    its tensors (an embedded archive loads over zero placeholders and decodes on first access; a
    rate allocation's probe replaces tensors), so those are copied in before it runs. They are
    swapped in as new storage (`.data`), never written over the old: the loaded model's arrays
    view the module's first storage, and writing a probe's values there would change the model.
    """
    native = model.native
    if not isinstance(native, Native) or native.kind not in ("program", "script"):
        raise UnsupportedError("a PyTorch state dict has no graph to run; compare tensors with `nnrconv diff`")
    stale = {k: t for k, t in model.tensors.items() if k in native.held and native.held[k] is not t}
    if stale:
        slots = native.module.state_dict if native.kind == "program" else native.module.state_dict(keep_vars=True)
        with torch.no_grad():
            for key, tensor in stale.items():
                target = slots[key]
                target.data = to_torch(tensor).reshape(target.shape).to(target.dtype)
                native.held[key] = tensor
    return native


def _dtype(tensor: Any, name: str) -> DType:
    entry = _DTYPES.get(tensor.dtype)
    if entry is None:
        raise UnsupportedError(f"input {name!r}: element type {tensor.dtype} has no nnrconv DType")
    return entry[0]


def _example_inputs(native: Native) -> list[Any] | None:
    if native.kind == "program":
        example = native.module.example_inputs
        return None if example is None else list(_pytree.tree_leaves(example))
    try:
        traced = native.module._c._retrieve_traced_inputs()
    except (AttributeError, RuntimeError):
        return None
    try:
        inputs = dict(traced).get("forward")
    except (TypeError, ValueError):
        return None
    return None if not inputs else list(_pytree.tree_leaves(tuple(inputs)))


def _input_names(native: Native) -> list[str]:
    """User inputs: the program's USER_INPUT specs, or the TorchScript forward schema without `self`.

    TorchScript arguments that have a default value are left to it (not fed).
    """
    if native.kind == "program":
        return [s.arg.name for s in native.module.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    try:
        arguments = list(native.module.forward.schema.arguments)[1:]
    except (AttributeError, RuntimeError):
        return [v.debugName().split(".")[0] for v in list(native.module.graph.inputs())[1:]]
    return [a.name for a in arguments if not a.has_default_value()]


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


def _traced_specs(native: Native, names: list[str]) -> list[InputSpec] | None:
    """Specs from the archive's ``traced_inputs.pkl`` (what `torch.jit.trace` stores), if it fits.

    `torch.jit.load` does not give the traced inputs back, so the pickle is read with the
    plugin's restricted unpickler (inert stand-ins: shape and storage type only).
    """
    if not any(r.name.endswith("/traced_inputs.pkl") for r in native.records):
        return None
    try:
        traced = _archive.read_script_pickle(native.records, "traced_inputs.pkl", "TorchScript archive")
    except FormatError:
        return None
    refs = traced.get("forward") if isinstance(traced, dict) else None
    if not isinstance(refs, (list, tuple)) or len(refs) != len(names):
        return None
    specs = []
    for name, ref in zip(names, refs, strict=True):
        if not isinstance(ref, _archive._TensorRef) or not isinstance(ref.storage, _archive._StorageRef):
            return None
        scalar = _STORAGE_DTYPES.get(ref.storage.type_name.rsplit(".", 1)[-1])
        if scalar is None or not all(isinstance(d, int) for d in ref.size):
            return None
        specs.append(InputSpec(name, _dtype(torch.empty(0, dtype=scalar), name), tuple(ref.size)))
    return specs


def _unknown(name: str) -> InputSpec:
    """A TorchScript input whose shape nothing records: its element type is UNDEFINED and shape ().

    The name is all `nnrconv check --inputs file.npz` needs; without `--inputs`, the core's random
    inputs refuse UNDEFINED with "pass inputs with --inputs file.npz".
    """
    return InputSpec(name, DType.UNDEFINED, ())


def input_specs(model: Model) -> list[InputSpec]:
    """The user inputs, with the shapes of the stored example inputs (free dimensions 1 otherwise).

    TorchScript inputs with neither stored example inputs nor a static shape come back as
    `InputSpec(name, DType.UNDEFINED, ())`: the names are known (from the forward schema), so a
    check can take the inputs from an `.npz`, but none can be made up.

    Raises:
        UnsupportedError: a state dict, or a `.pt2` input that is not a tensor.
    """
    native = _native(model)
    names = _input_names(native)
    example = _example_inputs(native)
    if example is not None and len(example) == len(names) and all(isinstance(t, torch.Tensor) for t in example):
        return [InputSpec(n, _dtype(t, n), tuple(t.shape)) for n, t in zip(names, example, strict=True)]
    if native.kind == "program":
        specs = []
        placeholders = {n.name: n for n in native.module.graph.nodes if n.op == "placeholder"}
        for name in names:
            value = placeholders[name].meta.get("val")
            if not isinstance(value, torch.Tensor):
                raise UnsupportedError(f"input {name!r} is not a tensor; the PyTorch runner cannot feed it")
            dims = tuple(d if isinstance(d, int) else 1 for d in value.shape)
            specs.append(InputSpec(name, _dtype(value, name), dims))
        return specs
    traced = _traced_specs(native, names)
    if traced is not None:
        return traced
    values = list(native.module.graph.inputs())[1:]
    types = {v.debugName().split(".")[0]: v.type() for v in values}
    specs = []
    for index, name in enumerate(names):
        kind = types.get(name, values[index].type() if index < len(values) else None)
        try:
            sizes = kind.sizes() if kind is not None and hasattr(kind, "sizes") else None
            scalar = kind.dtype() if kind is not None and hasattr(kind, "dtype") else None
        except RuntimeError:
            sizes = scalar = None
        if sizes is None or scalar is None:
            specs.append(_unknown(name))
            continue
        dims = tuple(1 if d is None else d for d in sizes)
        specs.append(InputSpec(name, _dtype(torch.empty(0, dtype=scalar), name), dims))
    return specs


@contextmanager
def _deterministic() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(threads)


def run(model: Model, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every output (pytree leaves, in order) of the program or module for `inputs`.

    Raises:
        UnsupportedError: a state dict, a missing input, or torch failing to run the model.
    """
    native = _native(model)
    names = _input_names(native)
    missing = [n for n in names if n not in inputs]
    if missing:
        raise UnsupportedError(f"input {missing[0]!r} is missing; the model takes {', '.join(names)}")
    args = [torch.from_numpy(np.array(inputs[n], copy=True)) for n in names]
    with _deterministic():
        try:
            outputs = native.module.module()(*args) if native.kind == "program" else native.module(*args)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnsupportedError(f"torch cannot run the model: {first}") from exc
    leaves = [leaf for leaf in _pytree.tree_leaves(outputs) if isinstance(leaf, torch.Tensor)]
    if native.kind == "program":
        specs = native.module.graph_signature.output_specs
        out_names = [getattr(s.arg, "name", f"output_{i}") for i, s in enumerate(specs) if s.kind.name == "USER_OUTPUT"]
    else:
        out_names = []
    if len(out_names) != len(leaves):
        out_names = [f"output_{i}" for i in range(len(leaves))]
    return {name: to_numpy(leaf, name)[0] for name, leaf in zip(out_names, leaves, strict=True)}


def session(model: Model) -> Any:
    """The runtime's own object: the `ExportedProgram` (call `.module()`) or the `ScriptModule`.

    It is the object `load` built in memory (`torch.export.load` / `torch.jit.load` over bytes).
    """
    return _native(model).module
