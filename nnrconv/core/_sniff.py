# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Helpers for recognising inputs by their first bytes, shared by format plugins.

Several formats (ONNX, TensorFlow GraphDefs and SavedModels) are bare protobuf messages with no
magic number; plugins tell them apart by walking the first fields, which needs varints.
"""

from __future__ import annotations

__all__ = ["read_varint"]


def read_varint(data: bytes, pos: int) -> tuple[int, int] | None:
    """The protobuf varint at `pos` and the position after it; None if the bytes end first or it is over-long."""
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7
    return None
