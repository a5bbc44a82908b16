# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The `.dat` reader and writer: exact header round trips, agreement with the nnef package, errors."""

from __future__ import annotations

import struct
from pathlib import Path

import nnef
import numpy as np
import pytest

from nnrconv.core import DType
from nnrconv_nnef._dat import HEADER_SIZE, DatError, DatHeader, LegacyCode, decode_payload, encode_payload
from tests.plugins.nnef._models import VENDOR_ITEM_TYPE, legacy_header

ARRAYS = {
    "float32": np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7,
    "float16": np.linspace(-2, 2, 6, dtype=np.float16).reshape(3, 2),
    "float64": np.array([[np.pi, -np.e]]),
    "int8": np.array([-128, 0, 127], np.int8),
    "uint16": np.array([[0, 65535]], np.uint16),
    "int64": np.array([-(2**62), 2**62], np.int64),
    "bool": np.array([[True, False, True], [True, True, False], [False, False, True]]),
    "scalar": np.array(3.5, np.float32),
}


@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_our_files_equal_nnef_package_files(name: str, tmp_path: Path) -> None:
    array = ARRAYS[name]
    with open(tmp_path / "t.dat", "wb") as f:
        nnef.write_tensor(f, array)
    header = DatHeader.for_tensor(DType.from_numpy(array.dtype), array.shape)
    ours = header.pack() + encode_payload(header, array)
    assert ours == (tmp_path / "t.dat").read_bytes()
    parsed = DatHeader.unpack(ours)
    assert parsed == header and parsed.pack() == ours[:HEADER_SIZE]
    back = decode_payload(parsed, ours[HEADER_SIZE:])
    assert back.dtype == array.dtype and back.shape == array.shape and np.array_equal(back, array)


@pytest.mark.parametrize(
    ("header", "dtype"),
    [
        (legacy_header(LegacyCode.FLOAT, 32, (2, 3), (-1.5, 1.5)), DType.FLOAT),
        (legacy_header(LegacyCode.LINEAR, 8, (4,), (-1.0, 1.0)), DType.UINT8),
        (legacy_header(LegacyCode.LOGARITHMIC, 16, (4,), (0.5, 8.0)), DType.UINT16),
        (legacy_header(LegacyCode.INTEGER, 16, (4,), (1.0,)), DType.INT16),
        (legacy_header(LegacyCode.INTEGER, 32, (4,), ()), DType.UINT32),
    ],
    ids=["float", "linear", "logarithmic", "signed-int", "unsigned-int"],
)
def test_legacy_headers_are_read_and_kept_exactly(header: DatHeader, dtype: DType) -> None:
    raw = header.pack()
    parsed = DatHeader.unpack(raw)
    assert parsed.pack() == raw
    assert parsed.dtype is dtype
    assert parsed.is_legacy or header.item_type == LegacyCode.INTEGER


def test_legacy_parameters_and_nnef_agreement(tmp_path: Path) -> None:
    header = legacy_header(LegacyCode.INTEGER, 16, (4,), (1.0,))
    data = np.array([-7, 0, 7, 100], np.int16)
    content = header.pack() + data.tobytes()
    assert header.legacy_parameters[0] == 1.0
    (tmp_path / "t.dat").write_bytes(content)
    with open(tmp_path / "t.dat", "rb") as f:
        assert np.array_equal(nnef.read_tensor(f), data)  # the nnef package reads it as signed too
    assert np.array_equal(decode_payload(header, content[HEADER_SIZE:]), data)


def test_vendor_item_type_is_opaque_but_exact() -> None:
    header = DatHeader((1, 0), 20, 2, (4, 8, 0, 0, 0, 0, 0, 0), 0xFFFF_FFFF, VENDOR_ITEM_TYPE)
    assert DatHeader.unpack(header.pack()) == header
    assert header.vendor == 0x5254 and header.dtype is None and header.expected_length() is None
    header.check(HEADER_SIZE + 20)
    with pytest.raises(DatError, match="not interpretable"):
        decode_payload(header, bytes(20))


def test_bool_padding_bits_and_msb_first() -> None:
    header = DatHeader.for_tensor(DType.BOOL, (3,))
    assert header.bits_per_item == 1 and header.data_length == 1
    assert encode_payload(header, np.array([True, False, True])) == b"\xa0"
    assert decode_payload(header, b"\xa0").tolist() == [True, False, True]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x4e\xef\x01\x00" + bytes(20), "shorter than"),
        (b"NN\x01\x00" + bytes(124), "magic"),
        (b"\x4e\xef\x02\x00" + bytes(124), "version 2.0"),
        (b"\x4e\xef\x01\x00" + struct.pack("<II", 0, 9) + bytes(120), "rank 9"),
    ],
    ids=["short", "magic", "version", "rank"],
)
def test_bad_headers(content: bytes, message: str) -> None:
    with pytest.raises(DatError, match=message):
        DatHeader.unpack(content)


def test_length_checks() -> None:
    header = DatHeader.for_tensor(DType.FLOAT, (2, 2))
    header.check(HEADER_SIZE + 16)
    with pytest.raises(DatError, match="announces"):
        header.check(HEADER_SIZE + 15)
    wrong = DatHeader((1, 0), 12, 2, header.extents, 32, 0)
    with pytest.raises(DatError, match="needs 16"):
        wrong.check()
    with pytest.raises(DatError, match="cannot hold"):
        DatHeader.for_tensor(DType.BFLOAT16, (2,))
    with pytest.raises(DatError, match="do not fit"):
        encode_payload(header, np.zeros(3, np.float32))
