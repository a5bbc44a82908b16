# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Layer-input correlations H = Σ x xᵀ of the weights a format applies linearly (for compensation).

For a convolution, x runs over every window of the input (im2col, in (C_in, kh, kw) order, the
weight's own in OIHW layout; HWIO weights and NHWC inputs are transposed to it); for a matrix
product, over every row of the input. One run per calibration
sample keeps only one sample's activations in memory; windows are gathered in slices of at most
`_ROWS_ELEMENTS` values. Layers whose matrices would not fit `MAX_HESSIAN_BYTES` together are
left out (largest input dimension first), so memory stays bounded whatever the model; so are
layers that saw fewer input rows than their input length (`MIN_ROWS_PER_INPUT`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from nnrconv._rate._feeds import Feeds
from nnrconv.core import FormatPlugin, Model, WeightInput

__all__ = ["MAX_HESSIAN_BYTES", "layer_hessians"]

MAX_HESSIAN_BYTES = 768 * 2**20
"""All layers' H matrices together (float64), at most."""
MAX_INPUT_DIM = 4608
"""Layers with a longer input (C_in·kh·kw or d) are not compensated (H alone would be 170 MB+)."""
MIN_ROWS_PER_INPUT = 1
"""A layer is compensated only when its calibration windows (rows x) are at least its input
length: with fewer, H is rank-deficient and the quantizer hides its error where the calibration
inputs have no energy. Measured: EfficientNet-Lite0 (.pt2) with 8 calibration images, whose
classifier sees 8 rows for 1,280 inputs, met 30.2 dB on them but gave 16.7 dB on 8 other images
(plain allocation: 28.5 dB)."""
_ROWS_ELEMENTS = 1 << 22


def input_dim(use: WeightInput, shape: tuple[int, ...]) -> int:
    """The length of one input row x for the weight of `shape`."""
    if use.kind == "conv":
        return int(np.prod(use.oihw_shape(shape)[1:]))
    return int(shape[0]) if use.kind == "matmul" else int(shape[-1])


def _windows(x: np.ndarray, use: WeightInput, kernel: tuple[int, int]) -> Iterator[np.ndarray]:
    """Rows of every convolution window of x (N, C, H, W), in slices of output rows."""
    top, left, bottom, right = use.pads
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    (kh, kw), (sh, sw), (dh, dw) = kernel, use.strides, use.dilations
    span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if x.shape[2] < span_h or x.shape[3] < span_w:
        return
    view = sliding_window_view(x, (span_h, span_w), axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    n, c, out_h, out_w = view.shape[:4]
    step = max(1, _ROWS_ELEMENTS // max(1, n * out_w * c * kh * kw))
    for row in range(0, out_h, step):
        part = view[:, :, row : row + step]
        yield part.transpose(0, 2, 3, 1, 4, 5).reshape(-1, c * kh * kw)


def _rows(x: np.ndarray, use: WeightInput, shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    if use.kind == "conv":
        shape = use.oihw_shape(shape)
        if use.layout == "hwio" and x.ndim == 4:
            x = x.transpose(0, 3, 1, 2)
        if x.ndim != 4 or x.shape[1] != shape[1]:
            return
        yield from _windows(x, use, (int(shape[2]), int(shape[3])))
        return
    d = input_dim(use, shape)
    if x.shape[-1] != d:
        return
    flat = x.reshape(-1, d)
    step = max(1, _ROWS_ELEMENTS // d)
    for row in range(0, flat.shape[0], step):
        yield flat[row : row + step]


def _samples(feeds: Feeds) -> Iterator[dict[str, np.ndarray]]:
    """One feed per calibration sample (the first axis of each input)."""
    for feed in feeds:
        count = min((a.shape[0] for a in feed.values() if a.ndim), default=1)
        for i in range(count):
            yield {k: a[i : i + 1] if a.ndim else a for k, a in feed.items()}


def layer_hessians(
    fmt: FormatPlugin, model: Model, feeds: Feeds, tensors: dict[str, np.ndarray]
) -> dict[str, tuple[WeightInput, np.ndarray]]:
    """H (float64, d by d) per weight of `tensors` that the format applies linearly, summed over
    every calibration sample; empty when the format cannot say which weights those are."""
    uses = [u for u in fmt.weight_inputs(model) if u.weight in tensors]
    uses = [u for u in uses if input_dim(u, tensors[u.weight].shape) <= MAX_INPUT_DIM]
    kept, used = [], 0
    for use in sorted(uses, key=lambda u: input_dim(u, tensors[u.weight].shape)):
        cost = 8 * input_dim(use, tensors[use.weight].shape) ** 2
        if used + cost <= MAX_HESSIAN_BYTES:
            kept.append(use)
            used += cost
    if not kept:
        return {}
    sums = {u.weight: np.zeros((input_dim(u, tensors[u.weight].shape),) * 2) for u in kept}
    counts = dict.fromkeys(sums, 0)
    names = sorted({u.activation for u in kept})
    for sample in _samples(feeds):
        values = fmt.activations(model, sample, names)
        for use in kept:
            x = values.get(use.activation)
            if x is None or x.dtype.kind != "f":
                continue
            for rows in _rows(np.asarray(x, dtype=np.float32), use, tensors[use.weight].shape):
                rows64 = rows.astype(np.float64)
                sums[use.weight] += rows64.T @ rows64
                counts[use.weight] += rows.shape[0]
    return {
        u.weight: (u, sums[u.weight])
        for u in kept
        if np.any(sums[u.weight]) and counts[u.weight] >= MIN_ROWS_PER_INPUT * sums[u.weight].shape[0]
    }
