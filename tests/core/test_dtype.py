# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
import numpy as np
import pytest

from nnrconv.core import DType

# The codes are ONNX TensorProto.DataType values; pin them so nobody renumbers the enum.
PINNED = {
    "FLOAT": 1, "UINT8": 2, "INT8": 3, "UINT16": 4, "INT16": 5, "INT32": 6, "INT64": 7, "STRING": 8,
    "BOOL": 9, "FLOAT16": 10, "DOUBLE": 11, "UINT32": 12, "UINT64": 13, "COMPLEX64": 14,
    "COMPLEX128": 15, "BFLOAT16": 16, "FLOAT8E4M3FN": 17, "FLOAT8E4M3FNUZ": 18, "FLOAT8E5M2": 19,
    "FLOAT8E5M2FNUZ": 20, "UINT4": 21, "INT4": 22, "FLOAT4E2M1": 23, "FLOAT8E8M0": 24,
}  # fmt: skip


@pytest.mark.parametrize(("name", "code"), PINNED.items())
def test_codes_are_onnx_codes(name, code):
    assert DType[name] == code


def test_every_onnx_element_type_is_covered():
    onnx = pytest.importorskip("onnx")
    for name, code in onnx.TensorProto.DataType.items():
        assert DType(code).name == name


@pytest.mark.parametrize(
    "np_dtype",
    [np.float32, np.float16, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.bool_],
)
def test_numpy_round_trip(np_dtype):
    member = DType.from_numpy(np_dtype)
    assert member.storage_dtype == np.dtype(np_dtype)
    assert member.is_numpy_native
    assert member.bitwidth == np.dtype(np_dtype).itemsize * 8


def test_types_without_numpy_dtype_have_same_width_storage():
    assert DType.BFLOAT16.storage_dtype == np.dtype("<u2") and not DType.BFLOAT16.is_numpy_native
    assert DType.INT4.is_packed and DType.INT4.storage_nbytes(3) == 2
    assert DType.FLOAT8E4M3FN.storage_dtype == np.dtype("u1")


def test_properties():
    assert DType.FLOAT.is_floating_point and DType.BFLOAT16.is_floating_point
    assert DType.INT4.is_integer and DType.INT4.is_signed
    assert DType.UINT8.is_integer and not DType.UINT8.is_signed
    assert repr(DType.FLOAT) == "FLOAT"


def test_unknown_inputs_raise_type_error_naming_them():
    with pytest.raises(TypeError, match="datetime64"):
        DType.from_numpy(np.dtype("datetime64[s]"))
    with pytest.raises(TypeError, match="'float33'"):
        DType.from_name("float33")
    assert DType.from_name("bf16") is DType.BFLOAT16
    assert DType.from_name("INT64") is DType.INT64
