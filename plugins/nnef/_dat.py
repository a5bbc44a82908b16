# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""NNEF tensor files (`.dat`): the 128-byte header, its element types, and the payload.

NOTE: written from the NNEF specification (1.0.3 onwards) and checked against the ``nnef``
package's reader, but independent of it: this module imports only numpy, so the plugin can read
headers without the framework, and integration mode 2 (NNR-coded payloads under a vendor item
type) can reuse `DatHeader` as is. Every one of the 128 header bytes is a field of `DatHeader`,
so `DatHeader.unpack(h).pack() == h` for any header this module accepts: a round trip through
nnrconv gives back the exact header, whatever wrote it.

Layout, all little-endian: magic ``4E EF``; version major, minor (u8 each); data_length (u32,
payload bytes); rank (u32, at most 8); extents (8 x u32); bits_per_item (u32); item_type (u32:
low 16 bits a Khronos code, high 16 bits a vendor code); 19 reserved u32 words.

Before NNEF 1.0.3 the item-type word held a quantisation code (0x00 float, 0x01 integer, 0x10
linear, 0x11 logarithmic) and the reserved words began with eight float32 parameters; for
integer tensors a non-zero first parameter meant signed. Those legacy headers read here too.
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nnrconv.core import DType

__all__ = [
    "HEADER_SIZE",
    "MAGIC",
    "MAX_RANK",
    "DatError",
    "DatHeader",
    "ItemType",
    "LegacyCode",
    "decode_payload",
    "encode_payload",
]

MAGIC = b"\x4e\xef"
HEADER_SIZE = 128
MAX_RANK = 8
_RESERVED_WORDS = 19
# 2 + 1 + 1 + 4 + 4 + 8 * 4 + 4 + 4 + 19 * 4 = 128 bytes.
_LAYOUT = struct.Struct(f"<2sBBII{MAX_RANK}III{_RESERVED_WORDS * 4}s")


class DatError(ValueError):
    """A `.dat` file or header that is not a valid NNEF tensor file (the message says why)."""


class ItemType(enum.IntEnum):
    """Khronos item-type codes (low 16 bits of the item-type word), NNEF 1.0.3 onwards."""

    FLOAT = 0
    UINT = 1
    QUINT = 2
    QINT = 3
    INT = 4
    BOOL = 5


class LegacyCode(enum.IntEnum):
    """Quantisation codes that filled the item-type word before NNEF 1.0.3."""

    FLOAT = 0x00
    INTEGER = 0x01
    LINEAR = 0x10
    LOGARITHMIC = 0x11


_FLOATS = {16: DType.FLOAT16, 32: DType.FLOAT, 64: DType.DOUBLE}
_UINTS = {8: DType.UINT8, 16: DType.UINT16, 32: DType.UINT32, 64: DType.UINT64}
_INTS = {8: DType.INT8, 16: DType.INT16, 32: DType.INT32, 64: DType.INT64}
# DType -> (item type, bits per item) of the header nnrconv writes for a tensor of that type.
_CANONICAL: dict[DType, tuple[int, int]] = {
    **{d: (ItemType.FLOAT, b) for b, d in _FLOATS.items()},
    **{d: (ItemType.UINT, b) for b, d in _UINTS.items()},
    **{d: (ItemType.INT, b) for b, d in _INTS.items()},
    DType.BOOL: (ItemType.BOOL, 1),  # as the nnef tools write booleans: packed, 8 to a byte
}


@dataclass(frozen=True, slots=True)
class DatHeader:
    """The 128-byte header of an NNEF `.dat` tensor file, every byte kept.

    Attributes:
        version: (major, minor); readers accept only (1, 0).
        data_length: bytes of payload after the header.
        rank: number of dimensions (at most 8).
        extents: all eight extent words, including unused ones (normally zero).
        bits_per_item: bits per element.
        item_type: the whole item-type word (vendor code in the high 16 bits), or a legacy
            quantisation code.
        reserved: the 76 bytes after the item type (legacy headers keep their parameters here).
    """

    version: tuple[int, int]
    data_length: int
    rank: int
    extents: tuple[int, ...]
    bits_per_item: int
    item_type: int
    reserved: bytes = bytes(_RESERVED_WORDS * 4)

    @classmethod
    def unpack(cls, data: bytes) -> DatHeader:
        """Parse and check a header.

        Raises:
            DatError: fewer than 128 bytes, wrong magic, unsupported version, or rank over 8.
        """
        if len(data) < HEADER_SIZE:
            raise DatError(f"file is {len(data)} bytes, shorter than the {HEADER_SIZE}-byte NNEF tensor header")
        magic, major, minor, length, rank, *rest = _LAYOUT.unpack_from(data)
        extents, (bits, item_type, reserved) = tuple(rest[:MAX_RANK]), rest[MAX_RANK:]
        if magic != MAGIC:
            raise DatError(f"not an NNEF tensor file: magic bytes {magic.hex()!r}, expected '4eef'")
        if (major, minor) != (1, 0):
            raise DatError(f"unsupported NNEF tensor file version {major}.{minor}; only 1.0 exists")
        if rank > MAX_RANK:
            raise DatError(f"rank {rank} exceeds the maximum of {MAX_RANK}")
        return cls((major, minor), length, rank, extents, bits, item_type, reserved)

    def pack(self) -> bytes:
        """The 128 header bytes."""
        return _LAYOUT.pack(
            MAGIC,
            *self.version,
            self.data_length,
            self.rank,
            *self.extents,
            self.bits_per_item,
            self.item_type,
            self.reserved,
        )

    @classmethod
    def for_tensor(cls, dtype: DType, shape: Sequence[int]) -> DatHeader:
        """The header nnrconv (and the ``nnef`` package) writes for a tensor of `dtype` and `shape`.

        Raises:
            DatError: NNEF has no item type for `dtype`, or the rank exceeds 8.
        """
        try:
            item_type, bits = _CANONICAL[dtype]
        except KeyError:
            raise DatError(f"NNEF tensor files cannot hold {dtype.name} elements") from None
        if len(shape) > MAX_RANK:
            raise DatError(f"rank {len(shape)} exceeds the maximum of {MAX_RANK}")
        extents = tuple(int(d) for d in shape) + (0,) * (MAX_RANK - len(shape))
        length = (math.prod(shape) * bits + 7) // 8
        return cls((1, 0), length, len(shape), extents, bits, int(item_type))

    @property
    def shape(self) -> tuple[int, ...]:
        return self.extents[: self.rank]

    @property
    def vendor(self) -> int:
        """The vendor code (high 16 bits of the item type); 0 for Khronos-defined types."""
        return self.item_type >> 16

    @property
    def is_legacy(self) -> bool:
        """Whether the header uses the pre-1.0.3 quantisation code or parameters."""
        if self.vendor:
            return False
        return self.item_type in (LegacyCode.LINEAR, LegacyCode.LOGARITHMIC) or any(self.reserved)

    @property
    def legacy_parameters(self) -> tuple[float, ...]:
        """The eight float32 parameters of a legacy header (min, max, … or signedness)."""
        return struct.unpack_from("<8f", self.reserved)

    @property
    def dtype(self) -> DType | None:
        """The element type, or None if nnrconv cannot interpret it (vendor types, odd widths)."""
        if self.vendor:
            return None
        code, bits = self.item_type, self.bits_per_item
        if code == ItemType.FLOAT:
            return _FLOATS.get(bits)
        if code == ItemType.UINT:
            # Legacy "integer" code: a non-zero first parameter word means signed.
            return (_INTS if self.reserved[:4] != bytes(4) else _UINTS).get(bits)
        if code in (ItemType.QUINT, LegacyCode.LINEAR, LegacyCode.LOGARITHMIC):
            return _UINTS.get(bits)
        if code in (ItemType.QINT, ItemType.INT):
            return _INTS.get(bits)
        if code == ItemType.BOOL and bits in (1, 8):
            return DType.BOOL
        return None

    @property
    def is_packed_bool(self) -> bool:
        return self.dtype is DType.BOOL and self.bits_per_item == 1

    def expected_length(self) -> int | None:
        """Payload bytes the extents and element width call for (None for vendor types)."""
        if self.vendor:
            return None
        return (math.prod(self.shape) * self.bits_per_item + 7) // 8

    def check(self, file_size: int | None = None) -> None:
        """Check the payload length against the extents, and against the file size if given.

        Raises:
            DatError: data_length disagrees with the extents or with the file size.
        """
        expected = self.expected_length()
        if expected is not None and self.data_length != expected:
            raise DatError(
                f"header says {self.data_length} payload bytes, but shape {list(self.shape)} of "
                f"{self.bits_per_item}-bit items needs {expected}"
            )
        if file_size is not None and file_size != HEADER_SIZE + self.data_length:
            raise DatError(f"file is {file_size} bytes, the header announces {HEADER_SIZE} + {self.data_length}")


def decode_payload(header: DatHeader, payload: bytes | memoryview) -> np.ndarray:
    """The payload as an array of the header's dtype and shape (1-bit booleans unpacked).

    Raises:
        DatError: the type is not interpretable, or the payload has the wrong length.
    """
    dtype = header.dtype
    if dtype is None:
        raise DatError(f"item type {header.item_type:#x} with {header.bits_per_item} bits is not interpretable")
    if len(payload) != header.data_length:
        raise DatError(f"payload is {len(payload)} bytes, the header announces {header.data_length}")
    if header.is_packed_bool:
        bits = np.unpackbits(np.frombuffer(payload, np.uint8), count=math.prod(header.shape))
        return bits.astype(np.bool_).reshape(header.shape)
    return np.frombuffer(payload, dtype.storage_dtype).reshape(header.shape)


def encode_payload(header: DatHeader, array: np.ndarray) -> bytes:
    """The payload bytes of `array` under `header` (1-bit booleans packed, first item in the MSB).

    Raises:
        DatError: the array's element type or size does not fit the header.
    """
    dtype = header.dtype
    if dtype is None:
        raise DatError(f"item type {header.item_type:#x} with {header.bits_per_item} bits is not interpretable")
    array = np.asarray(array)
    if array.size != math.prod(header.shape):
        raise DatError(f"{array.size} elements do not fit shape {list(header.shape)}")
    if header.is_packed_bool:
        data = np.packbits(array.reshape(-1).astype(np.bool_)).tobytes()
    else:
        if array.dtype.newbyteorder("<") != dtype.storage_dtype and array.dtype != dtype.storage_dtype:
            raise DatError(f"elements of type {array.dtype} do not fit the header's {dtype.name}")
        data = np.ascontiguousarray(array, dtype=dtype.storage_dtype).tobytes()
    if len(data) != header.data_length:
        raise DatError(f"payload is {len(data)} bytes, the header announces {header.data_length}")
    return data
