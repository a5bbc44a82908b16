# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Narrow float types (bfloat16, float16, float8) on their way into and out of NNR data units.

NNR has no decompressed data format for bfloat16 or float8, and numpy has no bfloat16, so these
tensors travel in one of two carriers that any NNR decoder (NNCodec included) reads:

- **values**: a bfloat16 tensor's exact float32 view, quantized like any float32 tensor (lossy
  modes); decoding gives float32, which `restore_narrow` rounds back to bfloat16 to nearest,
  ties to even (NaN stays NaN, infinities stay infinite).
- **bit patterns**: the tensor's 16- or 8-bit patterns reinterpreted as int16 / int8 and coded as
  NNR_PT_INT (lossless bfloat16 and float16 off a QP grid, every float8); decoding gives those
  integers back, and `restore_narrow` reinterprets them.

Which carrier came back is told by the decoded array's kind (float or integer); what the tensor
was is recorded by the format plugin's topology (a dtype name). Only numpy is used: storage
arrays hold the bits (uint16 for bfloat16, uint8 for float8), as everywhere in the IR.
"""

from __future__ import annotations

import numpy as np

from nnrconv.core._dtype import DType

__all__ = [
    "BIT_PATTERN_TYPES",
    "bfloat16_bits",
    "bfloat16_values",
    "bit_carrier",
    "numeric_view",
    "restore_narrow",
]

_FLOAT8 = frozenset(
    {DType.FLOAT8E4M3FN, DType.FLOAT8E4M3FNUZ, DType.FLOAT8E5M2, DType.FLOAT8E5M2FNUZ, DType.FLOAT8E8M0}
)
BIT_PATTERN_TYPES = frozenset({DType.BFLOAT16, DType.FLOAT16, *_FLOAT8})
"""Element types that may travel as the integers of their bit patterns."""

_SIGNED_VIEW = {1: np.dtype(np.int8), 2: np.dtype(np.int16)}


_CHUNK = 1 << 20
"""Elements converted per step: temporaries stay at a few MB whatever the tensor's size."""


def bfloat16_values(bits: np.ndarray) -> np.ndarray:
    """The exact float32 values of bfloat16 bit patterns (uint16 storage)."""
    bits = np.asarray(bits, dtype=np.uint16)
    out = np.empty(bits.shape, dtype=np.float32)
    flat, target = bits.reshape(-1), out.reshape(-1).view(np.uint32)
    for i in range(0, flat.size, _CHUNK):
        np.left_shift(flat[i : i + _CHUNK], 16, out=target[i : i + _CHUNK], dtype=np.uint32)
    return out


def bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 (to nearest, ties to even), as uint16 bit patterns.

    NaNs stay NaN (quiet, sign kept); values beyond bfloat16's range round to infinity, as in
    IEEE arithmetic and in torch's and ml_dtypes' conversions.
    """
    values = np.ascontiguousarray(values, dtype=np.float32)
    out = np.empty(values.shape, dtype=np.uint16)
    flat, target = values.reshape(-1).view(np.uint32), out.reshape(-1)
    for i in range(0, flat.size, _CHUNK):
        bits = flat[i : i + _CHUNK]
        rounded = bits + (np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1)))  # wraps only for NaN patterns
        chunk = (rounded >> 16).astype(np.uint16)
        nan = np.isnan(bits.view(np.float32))
        if nan.any():
            chunk[nan] = ((bits[nan] >> 16) | np.uint32(0x0040)).astype(np.uint16)
        target[i : i + _CHUNK] = chunk
    return out


def bit_carrier(bits: np.ndarray) -> np.ndarray:
    """The signed integer view of 8- or 16-bit patterns (what NNR_PT_INT codes exactly)."""
    array = np.ascontiguousarray(bits)
    return array.view(_SIGNED_VIEW[array.dtype.itemsize])


def restore_narrow(array: np.ndarray, dtype: DType) -> np.ndarray:
    """A decoded carrier back in `dtype`'s storage (uint16 for bfloat16, uint8 for float8).

    Integers are bit patterns and must fit the type's width exactly; floats are values, rounded
    to bfloat16 or float16 (float8 only ever travels as bits).

    Raises:
        ValueError: integers outside the pattern width, or float values for a float8 type.
    """
    storage = dtype.storage_dtype
    array = np.asarray(array)
    if array.dtype == storage:
        return array
    width = storage.itemsize
    if array.dtype.kind in "iu":
        lo, hi = (-(1 << (8 * width - 1)), (1 << (8 * width)) - 1)
        if array.size and (int(array.min()) < lo or int(array.max()) > hi):
            raise ValueError(f"decoded integers do not fit {8 * width}-bit {dtype.name} bit patterns")
        # two's complement wraps negative patterns onto their bits; float16 storage is a view of them
        return array.astype(np.dtype(f"<u{width}")).view(storage)
    if array.dtype.kind == "f" and dtype is DType.BFLOAT16:
        return bfloat16_bits(array.astype(np.float32, copy=False))
    if array.dtype.kind == "f" and dtype is DType.FLOAT16:
        return array.astype(np.float16)
    raise ValueError(f"a decoded {array.dtype} array cannot become {dtype.name}")


def numeric_view(array: np.ndarray, dtype: DType) -> np.ndarray | None:
    """Values to compare numerically (errors, SNR): the array itself for numpy types, float32 for
    bfloat16 storage; None for types numpy cannot do arithmetic on (float8: compare bits)."""
    if dtype is DType.BFLOAT16 and array.dtype == np.uint16:
        return bfloat16_values(array)
    return array if dtype.is_numpy_native or (dtype is DType.BFLOAT16 and array.dtype.kind == "f") else None
