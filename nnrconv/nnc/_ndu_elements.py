# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Sub-structures of the NDU header: codebooks, CABAC entry points, and node identification.

ISO/IEC 15938-17 clause 7.3; used by `nnr_compressed_data_unit_header()` in `_ndu.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Self, TypeVar

from nnrconv.nnc._bitio import BitReader, BitWriter
from nnrconv.nnc._enums import ParentNodeIdType

__all__ = [
    "Codebook",
    "EntryPoint",
    "NodeId",
    "ParentNodeId",
    "enum_value",
    "read_entry_points",
    "write_entry_points",
]

_SHA_BYTES = {ParentNodeIdType.ICNN_NDU_PL_SHA256: 32, ParentNodeIdType.ICNN_NDU_PL_SHA512: 64}

_E = TypeVar("_E", bound=IntEnum)


def enum_value(enum_type: type[_E], code: int, name: str, r: BitReader) -> _E:
    """The enum member for a code read from the stream; a reserved code is a syntax error."""
    try:
        return enum_type(code)
    except ValueError:
        raise r.error(f"{name} {code} is reserved") from None


# ISO/IEC 15938-17, integer_codebook() (called codebook() in the reference software).
@dataclass(frozen=True, slots=True)
class Codebook:
    """Integer quantization levels that a coded index selects (index 0 = entry `cb_zero_offset`).

    Attributes:
        codebook_egk: u(4), order of the Exp-Golomb codes of the deltas between entries.
        codebook: the strictly increasing entries; `codebook_size` ue(2) is their number.
        cb_zero_offset: the derived CbZeroOffset, position of the entry that index 0 maps to;
            coded as `codebook_center_offset` ie(2) = CbZeroOffset - (codebook_size >> 1).
    """

    codebook_egk: int
    codebook: tuple[int, ...]
    cb_zero_offset: int

    def __post_init__(self) -> None:
        if not 0 <= self.codebook_egk < 16:
            raise ValueError(f"codebook_egk {self.codebook_egk} does not fit u(4)")
        if not 0 <= self.cb_zero_offset < len(self.codebook):
            raise ValueError(f"CbZeroOffset {self.cb_zero_offset} is outside a codebook of {len(self.codebook)}")
        if any(b <= a for a, b in zip(self.codebook, self.codebook[1:], strict=False)):
            raise ValueError("codebook entries must be strictly increasing")

    @property
    def codebook_size(self) -> int:
        """ue(2): number of entries."""
        return len(self.codebook)

    @property
    def codebook_center_offset(self) -> int:
        """ie(2): CbZeroOffset relative to the middle entry."""
        return self.cb_zero_offset - (len(self.codebook) >> 1)

    def write(self, w: BitWriter) -> None:
        """Write `integer_codebook()`."""
        w.u(4, self.codebook_egk)
        w.ue(2, self.codebook_size)
        w.ie(2, self.codebook_center_offset)
        zero = self.cb_zero_offset
        w.ie(7, self.codebook[zero])  # codebook_zero_value
        for j in range(zero - 1, -1, -1):
            w.ue(self.codebook_egk, self.codebook[j + 1] - self.codebook[j] - 1)  # codebook_delta_left
        for j in range(zero + 1, len(self.codebook)):
            w.ue(self.codebook_egk, self.codebook[j] - self.codebook[j - 1] - 1)  # codebook_delta_right

    @classmethod
    def read(cls, r: BitReader) -> Self:
        """Read `integer_codebook()`.

        Raises:
            BitstreamError: truncated, or CbZeroOffset outside the codebook.
        """
        egk = r.u(4)
        size = r.ue(2)
        r.require_bits(size * (egk + 1), f"a codebook of {size} entries")
        zero = (size >> 1) + r.ie(2)
        if not 0 <= zero < size:
            raise r.error(f"CbZeroOffset {zero} is outside the codebook of {size} entries")
        entries = [0] * size
        entries[zero] = r.ie(7)
        for j in range(zero - 1, -1, -1):
            entries[j] = entries[j + 1] - r.ue(egk) - 1
        for j in range(zero + 1, size):
            entries[j] = entries[j - 1] + r.ue(egk) + 1
        return cls(egk, tuple(entries), zero)


@dataclass(frozen=True, slots=True)
class EntryPoint:
    """One entry of `cabac_entry_point_list`: where a decoder can restart inside the payload.

    On the wire the offsets are differential (the first as ue(11), later ones as ie(7) of the change
    of the distance between consecutive entry points); here they are plain.

    Attributes:
        bit_offset: bits from the start of the tensor's level data to the entry point.
        value: u(8), the arithmetic decoder's value register >> 7 at the entry point.
        dq_state: u(3), dependent-quantization state there; only coded when `dq_flag` is 1.
    """

    bit_offset: int
    value: int
    dq_state: int = 0


def write_entry_points(w: BitWriter, entries: Sequence[EntryPoint], dq_flag: bool) -> None:
    previous_offset = 0
    previous_distance = 0
    for j, entry in enumerate(entries):
        distance = entry.bit_offset - previous_offset
        if distance < 0:
            raise ValueError("cabac_entry_point_list bit offsets must not decrease")
        w.u(8, entry.value)
        if dq_flag:
            w.u(3, entry.dq_state)
        elif entry.dq_state:
            raise ValueError("an entry point's dq_state is only coded when dq_flag is 1")
        if j == 0:
            w.ue(11, distance)
        else:
            w.ie(7, distance - previous_distance)
        previous_offset, previous_distance = entry.bit_offset, distance


def read_entry_points(r: BitReader, count: int, dq_flag: bool) -> tuple[EntryPoint, ...]:
    r.require_bits(count * (9 + (3 if dq_flag else 0)), f"{count} CABAC entry points")
    entries = []
    offset = distance = 0
    for j in range(count):
        value = r.u(8)
        dq_state = r.u(3) if dq_flag else 0
        distance = r.ue(11) if j == 0 else distance + r.ie(7)
        if distance < 0:
            raise r.error(f"CABAC entry point {j} lies before entry point {j - 1}")
        offset += distance
        entries.append(EntryPoint(offset, value, dq_state))
    return tuple(entries)


@dataclass(frozen=True, slots=True)
class NodeId:
    """The parameter-update-tree node of an NDU (profile 1, `node_id_present_flag` = 1).

    Attributes:
        device_id: ue(1).
        parameter_id: ue(5), NNCodec uses the tensor's index in the model.
        put_node_depth: ue(4), 0 for a base model, parent depth + 1 for an update.
    """

    device_id: int = 0
    parameter_id: int = 0
    put_node_depth: int = 0


@dataclass(frozen=True, slots=True)
class ParentNodeId:
    """The parent node an NDU updates (profile 1, `parent_node_id_present_flag` = 1).

    Attributes:
        parent_node_id_type: u(2).
        temporal_context_modeling_flag: u(1), CABAC contexts depend on the parent's levels.
        parent_device_id: ue(1), with ICNN_NDU_ID only.
        parameter_id: ue(5), with ICNN_NDU_ID when the NDU sends no `NodeId` (else `None`).
        put_node_depth: ue(4), likewise.
        parent_node_payload_sha256: u(256) as 32 bytes, with ICNN_NDU_PL_SHA256 only.
        parent_node_payload_sha512: u(512) as 64 bytes, with ICNN_NDU_PL_SHA512 only.
    """

    parent_node_id_type: ParentNodeIdType = ParentNodeIdType.ICNN_NDU_ID
    temporal_context_modeling_flag: bool = False
    parent_device_id: int | None = 0
    parameter_id: int | None = None
    put_node_depth: int | None = None
    parent_node_payload_sha256: bytes | None = None
    parent_node_payload_sha512: bytes | None = None

    def __post_init__(self) -> None:
        by_id = self.parent_node_id_type == ParentNodeIdType.ICNN_NDU_ID
        if by_id != (self.parent_device_id is not None):
            raise ValueError("parent_device_id is given exactly with parent_node_id_type ICNN_NDU_ID")
        explicit = self.parameter_id is not None
        if explicit != (self.put_node_depth is not None) or (explicit and not by_id):
            raise ValueError("parameter_id and put_node_depth come together, and only with ICNN_NDU_ID")
        for kind, value in (
            (ParentNodeIdType.ICNN_NDU_PL_SHA256, self.parent_node_payload_sha256),
            (ParentNodeIdType.ICNN_NDU_PL_SHA512, self.parent_node_payload_sha512),
        ):
            if (self.parent_node_id_type == kind) != (value is not None):
                raise ValueError(f"the {kind.name} digest is given exactly with parent_node_id_type {kind.name}")
            if value is not None and len(value) != _SHA_BYTES[kind]:
                raise ValueError(f"a {kind.name} digest has {_SHA_BYTES[kind]} bytes, got {len(value)}")

    def write(self, w: BitWriter, has_node_id: bool) -> None:
        """Write the parent fields (after `parent_node_id_present_flag`)."""
        w.u(2, self.parent_node_id_type)
        w.flag(self.temporal_context_modeling_flag)
        if self.parent_device_id is not None:
            w.ue(1, self.parent_device_id)
            if has_node_id != (self.parameter_id is None):
                raise ValueError(
                    "with ICNN_NDU_ID, parameter_id/put_node_depth go in the parent fields exactly when "
                    "the NDU has no node_id"
                )
            if self.parameter_id is not None and self.put_node_depth is not None:
                w.ue(5, self.parameter_id)
                w.ue(4, self.put_node_depth)
        digest = self.parent_node_payload_sha256 or self.parent_node_payload_sha512
        if digest is not None:
            w.u(len(digest) * 8, int.from_bytes(digest, "big"))

    @classmethod
    def read(cls, r: BitReader, has_node_id: bool) -> Self:
        """Read the parent fields (after `parent_node_id_present_flag`)."""
        kind = enum_value(ParentNodeIdType, r.u(2), "parent_node_id_type", r)
        tcm = r.flag()
        if kind == ParentNodeIdType.ICNN_NDU_ID:
            device = r.ue(1)
            if has_node_id:
                return cls(kind, tcm, device)
            return cls(kind, tcm, device, r.ue(5), r.ue(4))
        digest = r.u(_SHA_BYTES[kind] * 8).to_bytes(_SHA_BYTES[kind], "big")
        if kind == ParentNodeIdType.ICNN_NDU_PL_SHA256:
            return cls(kind, tcm, None, parent_node_payload_sha256=digest)
        return cls(kind, tcm, None, parent_node_payload_sha512=digest)
