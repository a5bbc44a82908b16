# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""What whole-model encoding (`_encoding`), decoding (`_decoding`) and inspection share.

The topology unit's compression, which tensors NNR carries, and assembling a bitstream from
parts that are already coded.

NOTE: the TPL payload is `topology_data` followed by one 0x00 byte (see `TopologyUnit`). For text
and empty topologies this is exactly NNCodec's `st(v)`; for binary topologies (an ONNX protobuf
contains zeros) it is the only unambiguous reading, since the unit size delimits the data.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Protocol

import numpy as np

from nnrconv.core._errors import BitstreamError
from nnrconv.nnc._coding import CodingOptions, carried_format, carries
from nnrconv.nnc._enums import (
    TopologyCompressionFormat,
    TopologyStorageFormat,
)
from nnrconv.nnc._framing import (
    AggregateUnit,
    ParsedUnit,
    advance_context,
    encode_unit,
    read_units,
)
from nnrconv.nnc._integrity import check_parts, seal_stream, split_record
from nnrconv.nnc._mps import ModelParameterSet
from nnrconv.nnc._units import StartUnit, TopologyUnit, UnitContext


class Progress(Protocol):
    """Told of each tensor as it is coded or decoded, from the calling thread, in tensor order."""

    def __call__(self, name: str, nbytes: int) -> None:
        """`name` is the tensor; `nbytes` the size of its data in memory."""


__all__ = [
    "MAX_TOPOLOGY_SIZE",
    "Progress",
    "assemble_model",
    "can_carry",
    "deflate_topology",
    "inflate_topology",
]

MAX_TOPOLOGY_SIZE = 1 << 30
"""Largest decompressed topology accepted (1 GiB), so a deflate bomb cannot exhaust memory."""

# NNCodec's defaults for the fields encode_model does not choose itself.
CABAC_UNARY_LENGTH_MINUS1 = 10
RAW_FLOAT32 = np.dtype("<f4")


def can_carry(dtype_or_array: object, options: CodingOptions | None = None) -> bool:
    """Whether `encode_model` carries a tensor (given as an array) or tensors of a dtype.

    With an array the answer is exact for these options: int64/uint32/uint64 only when the values
    fit int32; float16/float64 in lossless mode only when they lie on a QP grid. With a dtype it
    says whether such tensors can be carried at all. Booleans, strings and sub-byte or
    non-numpy types never are; they stay in the topology.
    """
    if isinstance(dtype_or_array, np.ndarray):
        return carries(dtype_or_array, options or CodingOptions())
    try:
        dt = np.dtype(dtype_or_array)  # type: ignore[call-overload]
    except TypeError:
        return False
    return carried_format(dt.newbyteorder("=") if dt.byteorder == ">" else dt)


# -- topology compression (topology_compression_format NNR_DFL) ---------------------------------


def deflate_topology(data: bytes) -> bytes:
    """Compress topology bytes for NNR_DFL (zlib format, RFC 1950)."""
    return zlib.compress(data, 9)


def inflate_topology(data: bytes, *, limit: int = MAX_TOPOLOGY_SIZE) -> bytes:
    """Decompress NNR_DFL topology bytes.

    Raises:
        BitstreamError: the data is not one complete zlib stream, or inflates beyond `limit`.
    """
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise BitstreamError(f"NNR_DFL topology_data is not valid zlib data ({exc})") from None
    if len(out) > limit:
        raise BitstreamError(f"NNR_DFL topology_data inflates beyond the {limit}-byte limit")
    if not inflater.eof:
        raise BitstreamError("NNR_DFL topology_data is a truncated zlib stream")
    if inflater.unused_data:
        raise BitstreamError(f"{len(inflater.unused_data)} bytes follow the NNR_DFL zlib stream")
    return out


def topology_unit(topology: bytes, storage_format: int, compress: bool) -> TopologyUnit:
    compression = TopologyCompressionFormat.NNR_PT_RAW
    data = bytes(topology)
    if compress and data:
        deflated = deflate_topology(data)
        if len(deflated) < len(data):
            compression, data = TopologyCompressionFormat.NNR_DFL, deflated
    try:
        storage: TopologyStorageFormat | int = TopologyStorageFormat(storage_format)
    except ValueError:
        storage = storage_format
    return TopologyUnit(storage, compression, data)


def flatten_units(units: list[ParsedUnit]) -> Iterable[tuple[int, ParsedUnit]]:
    """(top-level index, unit) for every unit, aggregate members in place of their aggregate."""
    for parsed in units:
        if isinstance(parsed.unit, AggregateUnit):
            for _, member in flatten_units(list(parsed.members)):
                yield parsed.index, member
        else:
            yield parsed.index, parsed


def assemble_model(
    parameter_sets: bytes,
    topology: bytes,
    topology_storage_format: int,
    ndus: Iterable[bytes],
    *,
    compress_topology: bool = True,
) -> bytes:
    """A bitstream from already coded parts: parameter sets, a new topology unit, and NDUs as they are.

    This moves data units between NNR containers (`.nnr` and NNR inside a native container)
    without decoding or re-quantizing them.

    An integrity record in the parameter sets (from `encode_parts`) is checked against the NDUs
    first, so that damage is not sealed into the new stream; the stream gets a record of its own.

    Raises:
        BitstreamError: the parameter sets do not parse or hold something other than STR/MPS,
            or an NDU is not one the parameter sets' integrity record covers.
    """
    ndus = list(ndus)
    plain, _ = split_record(parameter_sets)
    check_parts(parameter_sets, {f"#{i}": ndu for i, ndu in enumerate(ndus)}, complete=False)
    ctx = UnitContext()
    for _, parsed in flatten_units(read_units(plain, "<parameter sets>")):
        if not isinstance(parsed.unit, (StartUnit, ModelParameterSet)):
            raise BitstreamError("parameter sets may hold only the start unit and the model parameter set")
        ctx = advance_context(ctx, parsed.unit)
    tpl = encode_unit(topology_unit(topology, topology_storage_format, compress_topology), ctx)
    return seal_stream(plain, [tpl, *ndus])
