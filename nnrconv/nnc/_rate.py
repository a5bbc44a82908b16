# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""What a tensor costs at a QP: payload bytes and reconstruction, for rate allocators above nnc.

A rate allocator needs R_i(qp) and the reconstruction the decoder will produce, for many QPs per
tensor. `tensor_rate` quantizes exactly as `encode_model` does for a `TensorChoice` with that QP
(same trellis, same λ) and entropy-codes the levels once; it skips the NDU header, whose size
does not depend on the QP, and entry points (scan order 0 is the default).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from nnrconv.nnc import cabac
from nnrconv.nnc._coding import RATE_MODEL_UNARY_LENGTH_MINUS1, CodingOptions
from nnrconv.nnc._snr_search import quantize_weights

__all__ = ["TensorRate", "tensor_rate"]


@dataclass(frozen=True, slots=True)
class TensorRate:
    """One tensor coded at one QP.

    Attributes:
        qp: the QP.
        payload_bytes: bytes of its NDU payload (QP offset and levels; header excluded).
        sse: squared error of the reconstruction, in float64.
        reconstruction: the float32 values a decoder returns.
    """

    qp: int
    payload_bytes: int
    sse: float
    reconstruction: np.ndarray


def tensor_rate(
    array: np.ndarray,
    qp: int,
    *,
    dq: bool = True,
    lambda_scale: float = 0.0,
    options: CodingOptions | None = None,
) -> TensorRate:
    """Quantize and code a float tensor at `qp` as a plan's `TensorChoice(qp, dq, lambda_scale)`.

    The payload length is that of the NDU `encode_model` writes for the same choice (profile 1,
    row skipping as the options say, scan order 0), so summing it over tensors predicts the
    bitstream size up to the fixed headers.
    """
    options = options or CodingOptions()
    if lambda_scale != options.lambda_scale:
        options = dataclasses.replace(options, lambda_scale=lambda_scale, plan=None)
    shape = array.shape or (1,)
    weights = np.ascontiguousarray(array.reshape(shape), dtype=np.float32)
    quantized = quantize_weights(weights, qp, dq, options)
    coding = cabac.TensorCoding(dq_flag=dq, scan_order=0, cabac_unary_length_minus1=RATE_MODEL_UNARY_LENGTH_MINUS1)
    encoder = cabac.PayloadEncoder()
    encoder.encode_qp_offset(0, options.qp_density)
    encoder.encode_levels(quantized.levels, coding, row_skip=options.row_skip)
    reconstruction = cabac.dequantize(quantized.levels, quantized.qp, options.qp_density).reshape(array.shape)
    diff = weights.reshape(array.shape).astype(np.float64) - reconstruction
    return TensorRate(quantized.qp, len(encoder.finish()), float(np.dot(diff.ravel(), diff.ravel())), reconstruction)
