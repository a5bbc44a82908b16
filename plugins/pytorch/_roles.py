# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Tensor roles of PyTorch models: from the exported graph, the TorchScript module tree, or (for
bare state dicts) the keys' suffixes. nnc codes WEIGHT tensors at the weight step and the others
finer, so a norm's scale must not pass for a weight.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import torch

from nnrconv.core import Tensor, TensorRole

_MODULE_ROLES: dict[str, dict[str, TensorRole]] = {
    "batchnorm": {
        "weight": TensorRole.BN_GAMMA,
        "bias": TensorRole.BN_BETA,
        "running_mean": TensorRole.BN_MEAN,
        "running_var": TensorRole.BN_VAR,
    },
}


def _role_in_module(module_type: str, attribute: str) -> TensorRole:
    kind = module_type.lower()
    if "batchnorm" in kind:
        return _MODULE_ROLES["batchnorm"].get(attribute, TensorRole.OTHER)
    if "norm" in kind:  # LayerNorm, GroupNorm...: a scale and a shift, coded finer like NNCodec's 1-D rule
        return TensorRole.BIAS if attribute.startswith("bias") else TensorRole.OTHER
    if any(k in kind for k in ("conv", "linear", "lstm", "gru", "rnn", "embedding", "bilinear")):
        if attribute.startswith("weight"):
            return TensorRole.WEIGHT
        if attribute.startswith("bias"):
            return TensorRole.BIAS
    return TensorRole.OTHER


def from_names(keys: Collection[str]) -> dict[str, TensorRole]:
    """Roles of state_dict keys from their suffixes, only for when the module types are unknown.

    A module with ``running_mean`` is a batch norm; otherwise ``weight*`` and ``bias*`` are
    weights and biases.
    """
    prefixes = {k.rsplit(".", 1)[0] for k in keys if k.endswith(".running_mean")}
    roles = {}
    for key in keys:
        prefix, _, attribute = key.rpartition(".")
        roles[key] = _role_in_module("batchnorm" if prefix in prefixes else "linear", attribute)
    return roles


def from_program(program: Any) -> dict[str, TensorRole]:
    """Roles from the exported graph: which ATen op takes each parameter or buffer, and where."""
    signature = program.graph_signature
    placeholders = {**signature.inputs_to_parameters, **signature.inputs_to_buffers}
    roles: dict[str, TensorRole] = {}

    def mark(arg: Any, role: TensorRole) -> None:
        name = getattr(arg, "name", None)
        if name in placeholders:
            roles.setdefault(placeholders[name], role)

    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        target = str(node.target)
        args = list(node.args)
        if "embedding" in target and args:
            mark(args[0], TensorRole.WEIGHT)
        elif any(op in target for op in ("conv", "linear")) and len(args) > 1:
            mark(args[1], TensorRole.WEIGHT)
            if len(args) > 2:
                mark(args[2], TensorRole.BIAS)
        elif "batch_norm" in target and len(args) >= 5:
            for arg, role in zip(
                args[1:5], (TensorRole.BN_GAMMA, TensorRole.BN_BETA, TensorRole.BN_MEAN, TensorRole.BN_VAR), strict=True
            ):
                mark(arg, role)
        elif any(op in target for op in ("lstm", "gru", "rnn")):
            lists = [a for a in args if isinstance(a, (list, tuple))]
            params = max(lists, key=lambda a: sum(getattr(x, "name", None) in placeholders for x in a), default=[])
            for arg in params:
                dims = len(getattr(arg, "meta", {}).get("val", torch.empty(0)).shape)
                mark(arg, TensorRole.WEIGHT if dims >= 2 else TensorRole.BIAS)
        elif "norm" in target and len(args) >= 4:  # layer/group norm: its scale stays OTHER (1-D rule)
            mark(args[3], TensorRole.BIAS)
    return roles


def from_script(module: Any) -> dict[str, TensorRole]:
    """Roles from the TorchScript module tree: each tensor's owning module type and attribute."""
    roles: dict[str, TensorRole] = {}
    for prefix, sub in module.named_modules():
        kind = getattr(sub, "original_name", type(sub).__name__)
        for name, _ in [*sub.named_parameters(recurse=False), *sub.named_buffers(recurse=False)]:
            roles[f"{prefix}.{name}" if prefix else name] = _role_in_module(kind, name)
    return roles


def assign(tensors: Mapping[str, Tensor], roles: Mapping[str, TensorRole]) -> None:
    """Set each tensor's role. A WEIGHT of fewer than two dimensions becomes OTHER: guessed from a
    name, a 1-D ``weight`` is a norm's scale, which nnc then codes finer by its dimensions."""
    for key, tensor in tensors.items():
        role = roles.get(key, TensorRole.OTHER)
        tensor.role = TensorRole.OTHER if role is TensorRole.WEIGHT and len(tensor.shape) < 2 else role
