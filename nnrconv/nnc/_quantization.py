# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Quantization of float32 weights to DeepCABAC levels and back, exactly as NNCodec 2.1.3 does.

Users reach these names through `nnrconv.nnc.cabac`; the work is done by the compiled core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nnrconv.nnc import _cabac
from nnrconv.nnc._tensor_coding import checked_levels, matrix_view


@dataclass(frozen=True, slots=True)
class QuantizedTensor:
    """Integer levels and the QP they were made with (raised if int32 would overflow)."""

    levels: np.ndarray
    qp: int


def step_size(qp: int, qp_density: int = 2) -> float:
    """Δ = (k + (qp mod k))·2^(⌊qp/k⌋ - qp_density), k = 2^qp_density, in float32 precision."""
    return _cabac.step_size(int(qp), int(qp_density))


def quantize(
    weights: np.ndarray,
    qp: int,
    qp_density: int = 2,
    *,
    dq_flag: bool = True,
    scan_order: int = 0,
    lambda_scale: float = 0.0,
    cabac_unary_length_minus1: int = 10,
) -> QuantizedTensor:
    """Quantize float32 weights to int32 levels exactly as NNCodec does.

    Uniform quantization rounds w/Δ; dependent quantization runs the 8-state trellis in scan order
    (minimum squared error) and returns the reconstruction levels 2k - sgn(k)·(state & 1).

    With `lambda_scale` > 0 the decisions also weigh an estimate of the CABAC bits (NNCodec's
    rate-distortion quantization, `lambda_scale` in its pipelines): fewer bits for more error,
    the more so the larger the value. Uniform quantization then picks, per weight in scan order,
    the cheapest of 0, max(1, r - 1) and r (r = round(|w|/Δ)); the trellis adds the rate to every
    branch. The estimate adapts contexts as levels are chosen, with `cabac_unary_length_minus1`
    greater-than flags: NNCodec's pipeline passes that value (not the + 1 it codes with), so pass
    the value the tensor's NDU header will carry to get NNCodec's levels. Ignored at lambda 0.

    Raises:
        TypeError: weights is not a float32 array.
        ValueError: weights is strided or not finite, lambda_scale is negative, not finite, or
            positive below 1e-9 (after rounding to float32, as NNCodec receives it), or
            cabac_unary_length_minus1 is outside 0..255.
    """
    if not isinstance(weights, np.ndarray):
        raise TypeError(f"weights must be a numpy float32 array, got {type(weights).__name__}")
    if weights.dtype != np.float32:
        raise TypeError(f"weights must have dtype float32, got {weights.dtype}")
    if not weights.flags.c_contiguous:
        raise ValueError("weights must be C-contiguous; pass np.ascontiguousarray(weights)")
    lam = float(lambda_scale)
    if not (math.isfinite(lam) and lam >= 0.0):
        raise ValueError(f"lambda_scale {lambda_scale!r} must be a finite number >= 0")
    if not 0 <= int(cabac_unary_length_minus1) <= 255:
        raise ValueError(f"cabac_unary_length_minus1 {cabac_unary_length_minus1!r} is not in 0..255")
    shape = weights.shape or (1,)
    rows, width = matrix_view(shape)
    raw, used_qp = _cabac.quantize(
        weights,
        rows,
        width,
        int(qp),
        int(qp_density),
        dq=bool(dq_flag),
        scan_order=int(scan_order),
        lambda_scale=lam,
        max_num_no_rem=int(cabac_unary_length_minus1),
    )
    return QuantizedTensor(np.frombuffer(raw, dtype=np.int32).reshape(shape), used_qp)


def dequantize(levels: np.ndarray, qp: int, qp_density: int = 2, *, in_place: bool = False) -> np.ndarray:
    """Reconstruct float32 weights: Δ·level (float32 arithmetic, as the reference).

    With `in_place` the weights overwrite the levels' buffer (int32 and float32 have the same
    size) and the returned array is a float32 view of it: no second tensor-sized allocation.
    """
    levels = checked_levels(levels)
    if in_place:
        if not levels.flags.writeable:
            raise ValueError("in-place dequantization needs writable levels")
        _cabac.dequantize(levels, int(qp), int(qp_density), in_place=True)
        return levels.view(np.float32)
    raw = _cabac.dequantize(levels, int(qp), int(qp_density))
    return np.frombuffer(raw, dtype=np.float32).reshape(levels.shape)
