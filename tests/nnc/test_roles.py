# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Tensor roles reach the codec: a plugin's role, not the number of dimensions, decides whether a
tensor is coded at the weight QP or at the finer QP of non-weights."""

import numpy as np

from nnrconv import _api, nnc
from nnrconv.core import ArrayTensor, Graph, Model, TensorRole

_ARRAY = np.random.default_rng(0).normal(size=(32, 32)).astype(np.float32)


def _unit_size(roles: dict[str, TensorRole] | None) -> int:
    _, ndus = nnc.encode_parts({"t": _ARRAY}, nnc.CodingOptions(qp=-20, roles=roles))
    return len(ndus["t"])


def test_a_two_dimensional_bias_gets_the_finer_non_weight_step():
    """A role decides; OTHER (unclassified) and no role fall back to the number of dimensions."""
    weight, bias = _unit_size({"t": TensorRole.WEIGHT}), _unit_size({"t": TensorRole.BIAS})
    assert bias > weight  # finer step: more levels, more bits
    assert _unit_size({"t": TensorRole.BN_VAR}) == bias
    assert _unit_size(None) == _unit_size({"t": TensorRole.OTHER}) == weight  # unclassified: 2-D is a weight


def test_the_api_passes_each_tensors_role():
    def coded(role: TensorRole) -> bytes:
        model = Model(Graph(name="tensors"), {"t": ArrayTensor("t", _ARRAY, role=role)}, source_format="")
        return _api.encode(model, options=nnc.CodingOptions(qp=-20))

    assert len(coded(TensorRole.BN_GAMMA)) > len(coded(TensorRole.WEIGHT))
