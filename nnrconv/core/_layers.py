# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""How a weight tensor meets the activations it multiplies: what error compensation needs.

NOTE: error-compensating quantization (GPTQ-style) chooses each weight's rounding knowing the
correlation of the layer's inputs (E[x xᵀ], one matrix per layer). Only the format knows which
tensor a weight multiplies and how (a convolution's window, a matrix product's side); this record
says it in plain terms, and the rate layer (`nnrconv._rate._hessian`) does the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["WeightInput"]


@dataclass(frozen=True, slots=True)
class WeightInput:
    """One weight applied linearly to one activation of a run.

    Attributes:
        weight: the model's tensor name. Its first axis is the output (channel or column).
        activation: the name under which `FormatPlugin.activations` returns the input.
        kind: "conv": 2-D convolution, weight (C_out, C_in, kh, kw), input (N, C_in, H, W), one
            group; "matmul": y = x · W with weight (d, C_out) (then the weight's *second* axis is
            the output; the rate layer transposes) and input (..., d).
        strides, pads (top, left, bottom, right), dilations: the convolution's geometry.
    """

    weight: str
    activation: str
    kind: Literal["conv", "matmul"]
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
