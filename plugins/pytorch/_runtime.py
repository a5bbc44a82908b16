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

from nnrconv.core import DType, InputSpec, Model, UnsupportedError
from nnrconv_pytorch._torchio import _DTYPES, Native, to_numpy

__all__ = ["input_specs", "run"]


def _native(model: Model) -> Native:
    native = model.native
    if not isinstance(native, Native) or native.kind not in ("program", "script"):
        raise UnsupportedError("a PyTorch state dict has no graph to run; compare its tensors instead (nnrconv diff)")
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
    if native.kind == "program":
        return [s.arg.name for s in native.module.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    return [v.debugName().split(".")[0] for v in list(native.module.graph.inputs())[1:]]


def input_specs(model: Model) -> list[InputSpec]:
    """The user inputs, with the shapes of the stored example inputs (free dimensions 1 otherwise).

    Raises:
        UnsupportedError: a state dict, or a module whose input shapes cannot be told.
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
    specs = []
    for name, value in zip(names, list(native.module.graph.inputs())[1:], strict=True):
        kind = value.type()
        sizes = kind.sizes() if hasattr(kind, "sizes") else None
        scalar = kind.dtype() if hasattr(kind, "dtype") else None
        if sizes is None or scalar is None:
            raise UnsupportedError(
                f"the TorchScript module stores no example inputs and input {name!r} has no static shape; "
                "pass the inputs yourself"
            )
        specs.append(InputSpec(name, _dtype(torch.empty(0, dtype=scalar), name), tuple(d or 1 for d in sizes)))
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
