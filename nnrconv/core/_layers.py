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
        kind: "conv": 2-D convolution, one group, weight (C_out, C_in, kh, kw) and input
            (N, C_in, H, W), or with `layout` "hwio" weight (kh, kw, C_in, C_out) and input
            (N, H, W, C_in) (TensorFlow's); "matmul": y = x · W with weight (d, C_out) (then the
            weight's *second* axis is the output; the rate layer transposes) and input (..., d);
            "linear": y = x · Wᵀ with weight (C_out, d) (PyTorch's and NNEF's) and input (..., d).
        strides, pads (top, left, bottom, right), dilations: the convolution's geometry.
        layout: a convolution's weight and input layout, "oihw" (with NCHW inputs) or "hwio"
            (with NHWC inputs).
    """

    weight: str
    activation: str
    kind: Literal["conv", "matmul", "linear"]
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    layout: Literal["oihw", "hwio"] = "oihw"

    def oihw_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """A convolution weight's shape as (C_out, C_in, kh, kw), whatever its layout."""
        return (shape[3], shape[2], shape[0], shape[1]) if self.layout == "hwio" and len(shape) == 4 else shape
