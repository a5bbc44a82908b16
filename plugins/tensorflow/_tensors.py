# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""TensorFlow element types and exact TensorProto <-> array conversion.

NOTE: values never pass through a numeric cast. A `TensorProto` is decoded by TensorFlow's own
`make_ndarray` (which knows `tensor_content`, the typed `*_val` lists and their broadcast of a
single value) and the result is reinterpreted bit for bit in nnrconv's storage dtype (bfloat16
and float8 as raw bits). Writing goes the other way: the storage bytes become `tensor_content`.
"""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from nnrconv.core import DType

__all__ = ["TF_TO_DTYPE", "array_to_proto", "coerce", "clear_values", "has_values", "proto_shape", "proto_to_array"]

# TensorFlow DataType code -> nnrconv DType, for the types nnrconv models as tensors. The
# quantized types keep their bits in the plain integer type of the same width.
TF_TO_DTYPE: dict[int, DType] = {
    types_pb2.DT_FLOAT: DType.FLOAT,
    types_pb2.DT_DOUBLE: DType.DOUBLE,
    types_pb2.DT_INT32: DType.INT32,
    types_pb2.DT_UINT8: DType.UINT8,
    types_pb2.DT_INT16: DType.INT16,
    types_pb2.DT_INT8: DType.INT8,
    types_pb2.DT_STRING: DType.STRING,
    types_pb2.DT_COMPLEX64: DType.COMPLEX64,
    types_pb2.DT_INT64: DType.INT64,
    types_pb2.DT_BOOL: DType.BOOL,
    types_pb2.DT_QINT8: DType.INT8,
    types_pb2.DT_QUINT8: DType.UINT8,
    types_pb2.DT_QINT32: DType.INT32,
    types_pb2.DT_BFLOAT16: DType.BFLOAT16,
    types_pb2.DT_QINT16: DType.INT16,
    types_pb2.DT_QUINT16: DType.UINT16,
    types_pb2.DT_UINT16: DType.UINT16,
    types_pb2.DT_COMPLEX128: DType.COMPLEX128,
    types_pb2.DT_HALF: DType.FLOAT16,
    types_pb2.DT_UINT32: DType.UINT32,
    types_pb2.DT_UINT64: DType.UINT64,
    types_pb2.DT_FLOAT8_E5M2: DType.FLOAT8E5M2,
    types_pb2.DT_FLOAT8_E4M3FN: DType.FLOAT8E4M3FN,
}

_TYPED_FIELDS = (
    "half_val", "float_val", "double_val", "int_val", "string_val", "scomplex_val", "int64_val",
    "bool_val", "dcomplex_val", "uint32_val", "uint64_val", "resource_handle_val", "variant_val",
)


def proto_shape(proto: tensor_pb2.TensorProto) -> tuple[int, ...] | None:
    """The tensor's dimensions, or None when the rank or a dimension is unknown."""
    if proto.tensor_shape.unknown_rank or any(d.size < 0 for d in proto.tensor_shape.dim):
        return None
    return tuple(int(d.size) for d in proto.tensor_shape.dim)


def has_values(proto: tensor_pb2.TensorProto) -> bool:
    """Whether the proto holds any element values (in `tensor_content` or a typed list)."""
    return bool(proto.tensor_content) or any(len(getattr(proto, f)) for f in _TYPED_FIELDS)


def clear_values(proto: tensor_pb2.TensorProto) -> None:
    """Drop the element values, keeping dtype and shape."""
    proto.ClearField("tensor_content")
    for name in _TYPED_FIELDS:
        proto.ClearField(name)


def proto_to_array(proto: tensor_pb2.TensorProto, dtype: DType) -> np.ndarray:
    """The proto's values in `dtype.storage_dtype`, bit-exact (strings as an object array of bytes)."""
    from tensorflow.python.framework import tensor_util

    array = tensor_util.MakeNdarray(proto)
    if dtype is DType.STRING:
        return np.asarray(array, dtype=object)
    storage = dtype.storage_dtype
    if array.dtype.itemsize != storage.itemsize:
        raise ValueError(f"{array.dtype} values cannot be held as {dtype.name}")
    return np.ascontiguousarray(array).view(storage)


def coerce(array: np.ndarray, dtype: DType) -> np.ndarray:
    """`array` in `dtype.storage_dtype`: as is when it already is, else converted by value.

    A decoder may hand back a tensor in a wider or different numeric type than its slot (an
    integer NDU for an int64 constant, float32 for a float16 or bfloat16 one); the values are
    converted (bfloat16 from floats through ml_dtypes); integers for a raw-bits slot (bfloat16,
    float8) are its bit patterns.

    Raises:
        ValueError: the array cannot be converted to the slot's type.
    """
    storage = dtype.storage_dtype
    if dtype is DType.STRING:
        return np.asarray(array, dtype=object)
    if array.dtype == storage or array.dtype.newbyteorder("<") == storage:
        return array
    if not dtype.is_numpy_native and array.dtype.kind in "iu":
        # Raw bits (bfloat16, float8) travel as integers of the storage width: keep them as bits.
        if array.size and (array.min() < 0 or array.max() > np.iinfo(storage).max):
            raise ValueError(f"values out of the range of {dtype.name} bit patterns")
        return np.asarray(array).astype(storage)
    if dtype is DType.BFLOAT16:
        import ml_dtypes

        return np.asarray(array).astype(ml_dtypes.bfloat16).view(np.uint16)
    if not dtype.is_numpy_native or array.dtype.kind not in "fiub":
        raise ValueError(f"values of type {array.dtype} cannot be stored as {dtype.name}")
    return np.asarray(array).astype(storage)


def array_to_proto(array: np.ndarray, tf_dtype: int, shape: tuple[int, ...]) -> tensor_pb2.TensorProto:
    """A TensorProto of `tf_dtype` and `shape` holding `array`'s bits (strings in `string_val`)."""
    proto = tensor_pb2.TensorProto(dtype=tf_dtype, tensor_shape=shape_proto(shape))
    fill_values(proto, array)
    return proto


def fill_values(proto: tensor_pb2.TensorProto, array: np.ndarray) -> None:
    """Replace the proto's values with `array` (element count checked; dtype and shape kept).

    Raises:
        ValueError: the element count or the element size does not fit the proto's slot.
    """
    dtype = TF_TO_DTYPE.get(proto.dtype)
    shape = proto_shape(proto)
    if dtype is None or shape is None:
        raise ValueError(f"a tensor of TensorFlow type {proto.dtype} and shape {shape} cannot be filled")
    count = int(np.prod(shape, dtype=np.int64))
    if array.size != count:
        raise ValueError(f"{array.size} values do not fit shape {list(shape)}")
    clear_values(proto)
    if dtype is DType.STRING:
        proto.string_val.extend(bytes(v) for v in np.asarray(array, dtype=object).reshape(-1))
        return
    array = coerce(array, dtype)
    proto.tensor_content = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def shape_proto(shape: tuple[int, ...]) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape])
