# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Element types of tensors, shared by every format.

NOTE: the values are ONNX's `TensorProto.DataType` codes, because ONNX has the widest
vocabulary of the four formats and its codes are stable and documented. Per-format tables map
other formats' type names onto these members; they live here so that there is exactly one
place that knows about element types.

Types without a native numpy dtype (bfloat16, the float8/float6/float4 family, 4- and 2-bit
integers) are held in a *storage* dtype of the same bit width (uint16 for bfloat16, uint8 for
the rest, with sub-byte types packed two or four to a byte as ONNX packs them). `numpy()` of
such a tensor returns those raw bits; nothing is ever silently widened.
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = ["DType"]


class DType(enum.IntEnum):
    """A tensor element type; values are ONNX `TensorProto.DataType` codes."""

    UNDEFINED = 0
    FLOAT = 1
    UINT8 = 2
    INT8 = 3
    UINT16 = 4
    INT16 = 5
    INT32 = 6
    INT64 = 7
    STRING = 8
    BOOL = 9
    FLOAT16 = 10
    DOUBLE = 11
    UINT32 = 12
    UINT64 = 13
    COMPLEX64 = 14
    COMPLEX128 = 15
    BFLOAT16 = 16
    FLOAT8E4M3FN = 17
    FLOAT8E4M3FNUZ = 18
    FLOAT8E5M2 = 19
    FLOAT8E5M2FNUZ = 20
    UINT4 = 21
    INT4 = 22
    FLOAT4E2M1 = 23
    FLOAT8E8M0 = 24
    UINT2 = 25
    INT2 = 26
    FLOAT6E2M3 = 27
    FLOAT6E3M2 = 28

    def __repr__(self) -> str:
        return self.name

    @classmethod
    def from_numpy(cls, dtype: np.dtype | type) -> DType:
        """The member for a numpy dtype; raises TypeError naming the dtype if there is none."""
        key = np.dtype(dtype)
        try:
            return _FROM_NUMPY[key]
        except KeyError:
            raise TypeError(f"no nnrconv DType corresponds to numpy dtype {str(key)!r}") from None

    @classmethod
    def from_name(cls, name: str) -> DType:
        """The member for a type name such as 'float32', 'FLOAT', 'bf16' (case-insensitive)."""
        key = name.strip().lower()
        member = _ALIASES.get(key)
        if member is None:
            try:
                member = cls[name.strip().upper()]
            except KeyError:
                raise TypeError(f"unknown element type name {name!r}") from None
        return member

    @property
    def bitwidth(self) -> int:
        """Bits per element (8 per character for STRING, which has no fixed width)."""
        return _BITWIDTH[self]

    @property
    def storage_dtype(self) -> np.dtype:
        """The numpy dtype holding this type's elements (or their raw bits, see the module note)."""
        try:
            return _STORAGE[self]
        except KeyError:
            raise TypeError(f"{self.name} tensors have no numpy storage") from None

    @property
    def is_numpy_native(self) -> bool:
        """True when `storage_dtype` is the type itself, not a container for its bits."""
        return self in _NATIVE

    @property
    def is_packed(self) -> bool:
        """True for sub-byte types stored several to a byte."""
        return self.bitwidth < 8

    @property
    def is_floating_point(self) -> bool:
        return self in _FLOATING

    @property
    def is_integer(self) -> bool:
        return self in _INTEGER

    @property
    def is_signed(self) -> bool:
        return self in _SIGNED

    def storage_nbytes(self, count: int) -> int:
        """Bytes needed to store `count` elements (sub-byte types round up)."""
        return (count * self.bitwidth + 7) // 8


_NATIVE: dict[DType, np.dtype] = {
    DType.FLOAT: np.dtype("<f4"),
    DType.UINT8: np.dtype("u1"),
    DType.INT8: np.dtype("i1"),
    DType.UINT16: np.dtype("<u2"),
    DType.INT16: np.dtype("<i2"),
    DType.INT32: np.dtype("<i4"),
    DType.INT64: np.dtype("<i8"),
    DType.BOOL: np.dtype("?"),
    DType.FLOAT16: np.dtype("<f2"),
    DType.DOUBLE: np.dtype("<f8"),
    DType.UINT32: np.dtype("<u4"),
    DType.UINT64: np.dtype("<u8"),
    DType.COMPLEX64: np.dtype("<c8"),
    DType.COMPLEX128: np.dtype("<c16"),
    DType.STRING: np.dtype(object),
}
_STORAGE: dict[DType, np.dtype] = {
    **_NATIVE,
    DType.BFLOAT16: np.dtype("<u2"),
    **{
        t: np.dtype("u1")
        for t in (
            DType.FLOAT8E4M3FN,
            DType.FLOAT8E4M3FNUZ,
            DType.FLOAT8E5M2,
            DType.FLOAT8E5M2FNUZ,
            DType.FLOAT8E8M0,
            DType.UINT4,
            DType.INT4,
            DType.FLOAT4E2M1,
            DType.UINT2,
            DType.INT2,
            DType.FLOAT6E2M3,
            DType.FLOAT6E3M2,
        )
    },
}
_FROM_NUMPY: dict[np.dtype, DType] = {dtype: member for member, dtype in _NATIVE.items() if member is not DType.STRING}
# numpy spells the native byte order '=' on little-endian hosts; accept both spellings.
_FROM_NUMPY.update({dtype.newbyteorder("="): member for dtype, member in list(_FROM_NUMPY.items())})

_BITWIDTH: dict[DType, int] = {
    DType.UNDEFINED: 0,
    DType.STRING: 8,
    DType.BOOL: 8,
    DType.FLOAT8E4M3FN: 8,
    DType.FLOAT8E4M3FNUZ: 8,
    DType.FLOAT8E5M2: 8,
    DType.FLOAT8E5M2FNUZ: 8,
    DType.FLOAT8E8M0: 8,
    DType.BFLOAT16: 16,
    DType.UINT4: 4,
    DType.INT4: 4,
    DType.FLOAT4E2M1: 4,
    DType.UINT2: 2,
    DType.INT2: 2,
    # FLOAT6 types are stored one per byte by ONNX.
    DType.FLOAT6E2M3: 8,
    DType.FLOAT6E3M2: 8,
}
_BITWIDTH.update({m: d.itemsize * 8 for m, d in _NATIVE.items() if m not in _BITWIDTH})

_FLOATING = frozenset(
    {
        DType.FLOAT,
        DType.FLOAT16,
        DType.DOUBLE,
        DType.BFLOAT16,
        DType.FLOAT8E4M3FN,
        DType.FLOAT8E4M3FNUZ,
        DType.FLOAT8E5M2,
        DType.FLOAT8E5M2FNUZ,
        DType.FLOAT8E8M0,
        DType.FLOAT4E2M1,
        DType.FLOAT6E2M3,
        DType.FLOAT6E3M2,
    }
)
_SIGNED_INT = frozenset({DType.INT8, DType.INT16, DType.INT32, DType.INT64, DType.INT4, DType.INT2})
_INTEGER = _SIGNED_INT | {DType.UINT8, DType.UINT16, DType.UINT32, DType.UINT64, DType.UINT4, DType.UINT2}
_SIGNED = _SIGNED_INT | _FLOATING | {DType.COMPLEX64, DType.COMPLEX128}

_ALIASES: dict[str, DType] = {
    "float32": DType.FLOAT,
    "f32": DType.FLOAT,
    "float": DType.FLOAT,
    "float64": DType.DOUBLE,
    "f64": DType.DOUBLE,
    "double": DType.DOUBLE,
    "float16": DType.FLOAT16,
    "half": DType.FLOAT16,
    "f16": DType.FLOAT16,
    "bfloat16": DType.BFLOAT16,
    "bf16": DType.BFLOAT16,
    "bool": DType.BOOL,
    "int8": DType.INT8,
    "int16": DType.INT16,
    "int32": DType.INT32,
    "int64": DType.INT64,
    "uint8": DType.UINT8,
    "uint16": DType.UINT16,
    "uint32": DType.UINT32,
    "uint64": DType.UINT64,
    "complex64": DType.COMPLEX64,
    "complex128": DType.COMPLEX128,
    "string": DType.STRING,
    "int4": DType.INT4,
    "uint4": DType.UINT4,
}
