# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""safetensors files, read and written without the ``safetensors`` package and without torch.

Layout (huggingface/safetensors): an 8-byte little-endian header length N, N bytes of UTF-8 JSON
(``{"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__":
{str: str}}``, offsets relative to the data section), then the raw little-endian data. Nothing
in it can execute code, so it is also the form in which nnrconv keeps the tensors NNR cannot
carry yet inside a PyTorch topology (see `_topology`).
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from nnrconv.core import ArrayTensor, DType, FormatError, MappedTensor, Tensor

__all__ = ["HEADER_LIMIT", "code_of", "looks_like_safetensors", "read", "read_bytes", "read_metadata", "write_bytes"]

HEADER_LIMIT = 100 * 1024 * 1024
"""Largest JSON header accepted (the reference implementation's own limit)."""

_TO_DTYPE: dict[str, DType] = {
    "F64": DType.DOUBLE,
    "F32": DType.FLOAT,
    "F16": DType.FLOAT16,
    "BF16": DType.BFLOAT16,
    "I64": DType.INT64,
    "I32": DType.INT32,
    "I16": DType.INT16,
    "I8": DType.INT8,
    "U64": DType.UINT64,
    "U32": DType.UINT32,
    "U16": DType.UINT16,
    "U8": DType.UINT8,
    "BOOL": DType.BOOL,
    "F8_E4M3": DType.FLOAT8E4M3FN,
    "F8_E5M2": DType.FLOAT8E5M2,
    "C64": DType.COMPLEX64,
}
_FROM_DTYPE: dict[DType, str] = {v: k for k, v in _TO_DTYPE.items()}


def looks_like_safetensors(head: bytes) -> bool:
    """An 8-byte plausible header length followed by the start of a JSON object."""
    if len(head) < 10:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 2 <= length <= HEADER_LIMIT and head[8:9] == b"{"


def _parse_header(data: bytes | memoryview, total: int, source: str) -> tuple[dict, int]:
    """The header's tensor entries (validated) and where the data section starts."""
    if total < 8:
        raise FormatError(f"{source}: not a safetensors file (shorter than its 8-byte header length)")
    (length,) = struct.unpack("<Q", bytes(data[:8]))
    if length > HEADER_LIMIT or 8 + length > total:
        raise FormatError(f"{source}: safetensors header of {length} bytes does not fit in {total} bytes")
    try:
        header = json.loads(bytes(data[8 : 8 + length]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{source}: safetensors header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise FormatError(f"{source}: safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    start = 8 + length
    room = total - start
    for name, entry in header.items():
        try:
            dtype = _TO_DTYPE[entry["dtype"]]
            shape = [int(d) for d in entry["shape"]]
            begin, end = (int(v) for v in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(
                f"{source}: safetensors entry {name!r} is malformed or of unknown dtype ({exc})"
            ) from None
        if any(d < 0 for d in shape) or not 0 <= begin <= end <= room:
            raise FormatError(f"{source}: safetensors entry {name!r} lies outside the file")
        if end - begin != dtype.storage_nbytes(math.prod(shape)):
            raise FormatError(
                f"{source}: safetensors entry {name!r} holds {end - begin} bytes; shape {shape} of {entry['dtype']} "
                f"needs {dtype.storage_nbytes(math.prod(shape))}"
            )
        entry["_dtype"], entry["_shape"], entry["_span"] = dtype, shape, (begin, end)
    return header, start


def read(path: Path) -> dict[str, Tensor]:
    """The tensors of a safetensors file, memory-mapped lazily, in the file's header order."""
    total = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        (length,) = struct.unpack("<Q", head) if len(head) == 8 else (0,)
        data = head + f.read(min(length, HEADER_LIMIT))
    header, start = _parse_header(data, total, str(path))
    return {
        name: MappedTensor(name, e["_dtype"], e["_shape"], path, start + e["_span"][0], e["_span"][1] - e["_span"][0])
        for name, e in header.items()
    }


def read_metadata(path: Path) -> dict[str, str] | None:
    """The file's ``__metadata__`` (a string map), or None without one."""
    with open(path, "rb") as f:
        head = f.read(8)
        (length,) = struct.unpack("<Q", head) if len(head) == 8 else (0,)
        text = f.read(min(length, HEADER_LIMIT))
    try:
        metadata = json.loads(text.decode("utf-8")).get("__metadata__")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    if isinstance(metadata, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        return metadata
    return None


def code_of(tensor: Tensor) -> str:
    """The safetensors dtype code of a tensor.

    Raises:
        FormatError: its element type has none.
    """
    code = _FROM_DTYPE.get(tensor.dtype)
    if code is None:
        raise FormatError(f"tensor {tensor.name!r}: safetensors has no code for {tensor.dtype.name}")
    return code


def read_bytes(data: bytes, source: str) -> dict[str, Tensor]:
    """The tensors of an in-memory safetensors blob (copied out, so the blob may be dropped)."""
    header, start = _parse_header(data, len(data), source)
    tensors: dict[str, Tensor] = {}
    for name, e in header.items():
        begin, end = e["_span"]
        dtype: DType = e["_dtype"]
        flat = np.frombuffer(
            data, dtype=dtype.storage_dtype, count=(end - begin) // dtype.storage_dtype.itemsize, offset=start + begin
        ).copy()
        tensors[name] = ArrayTensor(name, flat.reshape(e["_shape"]), dtype=dtype)
    return tensors


def write_bytes(tensors: Iterable[Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """A safetensors blob of `tensors`, in the given order, with an 8-byte aligned data section.

    Raises:
        FormatError: a tensor's element type has no safetensors code.
    """
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    chunks: list[bytes] = []
    offset = 0
    for tensor in tensors:
        code = _FROM_DTYPE.get(tensor.dtype)
        if code is None:
            raise FormatError(f"tensor {tensor.name!r}: safetensors has no code for {tensor.dtype.name}")
        raw = tensor.tobytes()
        header[tensor.name] = {"dtype": code, "shape": list(tensor.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)
