# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Whole-model encoding and decoding on top of the NNR unit layer.

`encode_model` writes STR, MPS, TPL and one NDU per tensor, the layout NNCodec uses for models
without blocks. Tensors travel as NNR_PT_RAW_FLOAT (bit-exact float32); decoding of the
entropy-coded payload types plugs into `_PAYLOAD_DECODERS`, one function per payload type.

NOTE: the TPL payload is `topology_data` followed by one 0x00 byte (see `TopologyUnit`). For text
and empty topologies this is exactly NNCodec's `st(v)`; for binary topologies (an ONNX protobuf
contains zeros) it is the only unambiguous reading, since the unit size delimits the data.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from nnrconv.core._errors import BitstreamError, UnsupportedError
from nnrconv.nnc._bitio import BitWriter
from nnrconv.nnc._enums import (
    DecompressedDataFormat,
    NnrUnitType,
    PayloadType,
    TopologyCompressionFormat,
    TopologyStorageFormat,
)
from nnrconv.nnc._framing import (
    MAX_UNIT_SIZE,
    AggregateUnit,
    ParsedUnit,
    advance_context,
    encode_unit,
    read_units,
    unit_size_field,
    with_source,
)
from nnrconv.nnc._mps import LayerParameterSet, ModelParameterSet
from nnrconv.nnc._ndu import CompressedDataUnit, NduHeader, NodeId, decode_reference_list
from nnrconv.nnc._units import StartUnit, TopologyUnit, UnitContext

__all__ = [
    "MAX_TOPOLOGY_SIZE",
    "DecodedModel",
    "UnitInfo",
    "can_carry",
    "decode_model",
    "deflate_topology",
    "encode_model",
    "inflate_topology",
    "inspect_units",
]

MAX_TOPOLOGY_SIZE = 1 << 30
"""Largest decompressed topology accepted (1 GiB), so a deflate bomb cannot exhaust memory."""

# NNCodec's defaults for the fields encode_model does not choose itself.
_QP_DENSITY = 2
_CABAC_UNARY_LENGTH_MINUS1 = 10
_RAW_FLOAT = np.dtype("<f4")


def can_carry(dtype: object) -> bool:
    """Whether `encode_model` can carry tensors of this dtype exactly (float32 for now)."""
    try:
        dt = np.dtype(dtype)  # type: ignore[call-overload]
    except TypeError:
        return False
    return dt.kind == "f" and dt.itemsize == 4


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


# -- encoding ----------------------------------------------------------------------------------


def encode_model(
    tensors: Iterable[tuple[str, np.ndarray]],
    topology: bytes,
    topology_storage_format: int,
    *,
    compress_topology: bool = True,
    general_profile_idc: int = 1,
) -> bytes:
    """Code a model as an NNR bitstream: STR, MPS, TPL, then one raw-float NDU per tensor.

    Args:
        tensors: (name, array) pairs, in the order the NDUs are written; arrays must be float32.
        topology: the topology bytes to embed (e.g. an ONNX graph without its weights).
        topology_storage_format: a `TopologyStorageFormat` code.
        compress_topology: deflate the topology (NNR_DFL) when that makes it smaller.
        general_profile_idc: 1 for 2nd-edition syntax (adds node ids as NNCodec 2.x does), or 0.

    Returns:
        The bitstream. A 0-d tensor is written with dimensions [1]; callers restore exact shapes
        from their topology.

    Raises:
        UnsupportedError: a tensor is not float32, its name contains NUL, or its NDU would exceed
            2**31 - 1 bytes; the message names the tensor.
        ValueError: two tensors share a name, or `general_profile_idc` is not 0 or 1.
    """
    if general_profile_idc not in (0, 1):
        raise ValueError(f"general_profile_idc must be 0 or 1, got {general_profile_idc!r}")
    ctx = UnitContext()
    parts: list[bytes] = []
    for unit in _parameter_units(topology, topology_storage_format, compress_topology, general_profile_idc):
        parts.append(encode_unit(unit, ctx))
        ctx = advance_context(ctx, unit)
    seen: set[str] = set()
    for index, (name, array) in enumerate(tensors):
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be str, got {name!r}")
        if name in seen:
            raise ValueError(f"two tensors are named {name!r}; NDU names must be unique")
        seen.add(name)
        parts.extend(_tensor_unit(name, np.asarray(array), index, ctx))
    return b"".join(parts)


def _parameter_units(
    topology: bytes, storage_format: int, compress: bool, profile: int
) -> list[StartUnit | ModelParameterSet | TopologyUnit]:
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
    return [
        StartUnit(profile),
        ModelParameterSet(mps_qp_density=_QP_DENSITY, mps_quantization_parameter=0),
        TopologyUnit(storage, compression, data),
    ]


def _tensor_unit(name: str, array: np.ndarray, index: int, ctx: UnitContext) -> list[bytes]:
    """Size field, headers and payload of one raw-float NDU, checked before the payload is built."""
    if not can_carry(array.dtype):
        raise UnsupportedError(
            f"tensor {name!r} has dtype {array.dtype}; only float32 tensors can be carried in NNR for now"
        )
    if "\0" in name:
        raise UnsupportedError(f"tensor {name!r} contains a NUL character, which an NNR st(v) name cannot hold")
    header = NduHeader(
        PayloadType.NNR_PT_RAW_FLOAT,
        topology_elem_id=name,
        node_id=NodeId(0, index, 0) if ctx.is_profile_1 else None,
        tensor_dimensions=tuple(array.shape) or (1,),
        cabac_unary_length_minus1=_CABAC_UNARY_LENGTH_MINUS1,
    )
    w = BitWriter()
    CompressedDataUnit(header).write(w, ctx)
    head = w.getvalue()
    if len(head) + array.nbytes + 4 > MAX_UNIT_SIZE:
        raise UnsupportedError(
            f"tensor {name!r} ({array.nbytes} bytes) does not fit one NNR unit (at most {MAX_UNIT_SIZE} bytes)"
        )
    payload = array.astype(_RAW_FLOAT, copy=False).tobytes(order="C")
    return [unit_size_field(len(head) + len(payload)), head, payload]


# -- decoding ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecodedModel:
    """What `decode_model` recovers from a bitstream.

    Attributes:
        tensors: name -> array, in stream order (0-d tensors come back with shape (1,)).
        topology: the topology bytes, decompressed (empty when there is no TPL unit).
        topology_storage_format: the TPL unit's storage format (NNR_TPL_UNREC without one).
        topology_compression_format: how the topology was stored in the stream.
        general_profile_idc: from the start unit.
        mps: the model parameter set.
        unit_count: number of top-level units; with `len(data)`, where a unit missing at the
            end of the stream would have been (for errors raised when rebuilding the model).
    """

    tensors: dict[str, np.ndarray]
    topology: bytes
    topology_storage_format: int
    topology_compression_format: int
    general_profile_idc: int
    mps: ModelParameterSet
    unit_count: int = 0


@dataclass(frozen=True, slots=True)
class _NduSite:
    """Where an NDU is and what was in force there: for error messages and payload decoders."""

    source: str
    unit_index: int
    byte_offset: int
    context: UnitContext
    layer_parameter_set: LayerParameterSet | None

    def bitstream_error(self, message: str, tensor: str | None) -> BitstreamError:
        error = BitstreamError(message, unit_index=self.unit_index, byte_offset=self.byte_offset, tensor=tensor)
        return with_source(error, self.source)

    def unsupported(self, message: str, tensor: str | None) -> UnsupportedError:
        named = f", tensor {tensor!r}" if tensor is not None else ""
        return UnsupportedError(
            f"{self.source}: unit {self.unit_index}, byte offset {self.byte_offset}{named}: {message}"
        )


_Decoded = list[tuple[str, np.ndarray]]


def _decode_raw_float(ndu: CompressedDataUnit, names: tuple[str, ...], site: _NduSite) -> _Decoded:
    """NNR_PT_RAW_FLOAT: the payload is the tensor as little-endian float32."""
    header = ndu.header
    name = names[0]
    if len(names) != 1:
        raise site.unsupported("a raw-float NDU with several topology elements", name)
    if header.compressed_parameter_types:
        raise site.unsupported(
            f"compressed_parameter_types {int(header.compressed_parameter_types)} in a raw-float NDU", name
        )
    if header.nnr_decompressed_data_format not in (None, DecompressedDataFormat.TENSOR_FLOAT32):
        raise site.unsupported(f"nnr_decompressed_data_format {header.nnr_decompressed_data_format!r}", name)
    if header.first_tensor_dimension_shift:
        raise site.unsupported(f"first_tensor_dimension_shift {header.first_tensor_dimension_shift}", name)
    dims = header.tensor_dimensions or ()
    expected = 4 * math.prod(dims)
    if len(ndu.payload) != expected:
        raise site.bitstream_error(
            f"raw float32 payload has {len(ndu.payload)} bytes but tensor_dimensions {list(dims)} need {expected}",
            name,
        )
    try:
        array = np.frombuffer(ndu.payload, dtype=_RAW_FLOAT).astype(np.float32, copy=True).reshape(dims)
    except ValueError as exc:  # an empty tensor whose other dimensions overflow numpy's index type
        raise site.bitstream_error(f"tensor_dimensions {list(dims)} cannot be represented: {exc}", name) from None
    return [(name, array)]


def _entropy_coded(ndu: CompressedDataUnit, names: tuple[str, ...], site: _NduSite) -> UnsupportedError:
    payload_type = ndu.header.nnr_compressed_data_unit_payload_type
    return site.unsupported(f"entropy-coded NDU ({payload_type.name}) is not supported yet", ", ".join(names))


def _decode_int(ndu: CompressedDataUnit, names: tuple[str, ...], site: _NduSite) -> _Decoded:
    """NNR_PT_INT: DeepCABAC-coded integers (not available yet)."""
    raise _entropy_coded(ndu, names, site)


def _decode_float(ndu: CompressedDataUnit, names: tuple[str, ...], site: _NduSite) -> _Decoded:
    """NNR_PT_FLOAT: DeepCABAC-coded quantized floats (not available yet)."""
    raise _entropy_coded(ndu, names, site)


def _decode_block(ndu: CompressedDataUnit, names: tuple[str, ...], site: _NduSite) -> _Decoded:
    """NNR_PT_BLOCK: a DeepCABAC-coded weight with its companions (not available yet)."""
    raise _entropy_coded(ndu, names, site)


_PAYLOAD_DECODERS: dict[PayloadType, Callable[[CompressedDataUnit, tuple[str, ...], _NduSite], _Decoded]] = {
    PayloadType.NNR_PT_INT: _decode_int,
    PayloadType.NNR_PT_FLOAT: _decode_float,
    PayloadType.NNR_PT_RAW_FLOAT: _decode_raw_float,
    PayloadType.NNR_PT_BLOCK: _decode_block,
}


def _flatten(units: list[ParsedUnit]) -> Iterable[tuple[int, ParsedUnit]]:
    """(top-level index, unit) for every unit, aggregate members in place of their aggregate."""
    for parsed in units:
        if isinstance(parsed.unit, AggregateUnit):
            for _, member in _flatten(list(parsed.members)):
                yield parsed.index, member
        else:
            yield parsed.index, parsed


class _NameResolver:
    """Turns an NDU's topology elements into names, via the REFLIST topology for indices."""

    def __init__(self, tpl: TopologyUnit | None, topology: bytes) -> None:
        self._names: tuple[str, ...] | None = None
        self._error: BitstreamError | None = None
        if tpl is not None and tpl.topology_storage_format == TopologyStorageFormat.NNR_TPL_REFLIST:
            try:
                self._names = decode_reference_list(topology)
            except BitstreamError as exc:
                self._error = exc

    def names(self, header: NduHeader, site: _NduSite) -> tuple[str, ...]:
        elements = header.topology_elements
        if all(isinstance(e, str) for e in elements):
            return elements  # type: ignore[return-value]
        if self._names is None:
            reason = f" ({self._error.reason})" if self._error else ""
            raise site.bitstream_error(
                f"NDU names tensors by index but there is no valid REFLIST topology{reason}", None
            )
        names = []
        for index in elements:
            if not 0 <= index < len(self._names):  # type: ignore[operator]
                raise site.bitstream_error(
                    f"topology_elem_id_index {index} is outside the reference list of {len(self._names)}", None
                )
            names.append(self._names[index])  # type: ignore[index]
        return tuple(names)


def _topology_bytes(tpl: TopologyUnit | None, parsed: ParsedUnit | None, source: str) -> bytes:
    if tpl is None or parsed is None:
        return b""
    if tpl.topology_compression_format == TopologyCompressionFormat.NNR_PT_RAW:
        return tpl.topology_data
    if tpl.topology_compression_format == TopologyCompressionFormat.NNR_DFL:
        try:
            return inflate_topology(tpl.topology_data)
        except BitstreamError as exc:
            located = exc.located(unit_index=parsed.index, byte_offset=parsed.byte_offset)
            raise with_source(located, source) from None
    raise UnsupportedError(
        f"{source}: unit {parsed.index}, byte offset {parsed.byte_offset}: topology_compression_format "
        f"{tpl.topology_compression_format} is reserved"
    )


def decode_model(data: bytes | bytearray | memoryview, *, source: str = "<bytes>") -> DecodedModel:
    """Decode a bitstream into tensors and topology.

    Raises:
        BitstreamError: corrupt or truncated data, a payload whose length does not match its
            dimensions, or a tensor sent twice; the message names the file, unit, offset and tensor.
        UnsupportedError: valid syntax nnrconv cannot decode yet (entropy-coded NDUs, a second MPS
            or TPL unit, ...); named likewise.
    """
    units = read_units(data, source)
    ctx = UnitContext()
    mps: ModelParameterSet | None = None
    tpl: tuple[TopologyUnit, ParsedUnit] | None = None
    lps: LayerParameterSet | None = None
    ndus: list[tuple[CompressedDataUnit, _NduSite]] = []
    for top_index, parsed in _flatten(units):
        unit = parsed.unit
        if isinstance(unit, ModelParameterSet):
            if mps is not None:
                raise UnsupportedError(f"{source}: unit {top_index}: a second model parameter set (NNR_MPS)")
            mps = unit
        elif isinstance(unit, TopologyUnit):
            if tpl is not None:
                raise UnsupportedError(f"{source}: unit {top_index}: a second topology unit (NNR_TPL)")
            tpl = (unit, parsed)
        elif isinstance(unit, LayerParameterSet):
            lps = unit
        elif isinstance(unit, CompressedDataUnit):
            ndus.append((unit, _NduSite(source, top_index, parsed.byte_offset, ctx, lps)))
        ctx = advance_context(ctx, unit)
    if mps is None:
        missing = BitstreamError(
            "the bitstream ends without a model parameter set (NNR_MPS)",
            unit_index=len(units),
            byte_offset=len(data),
        )
        raise with_source(missing, source)
    tpl_unit, tpl_parsed = tpl if tpl is not None else (None, None)
    topology = _topology_bytes(tpl_unit, tpl_parsed, source)
    resolver = _NameResolver(tpl_unit, topology)
    tensors: dict[str, np.ndarray] = {}
    for ndu, site in ndus:
        names = resolver.names(ndu.header, site)
        decoder = _PAYLOAD_DECODERS[ndu.header.nnr_compressed_data_unit_payload_type]
        for name, array in decoder(ndu, names, site):
            if name in tensors:
                raise site.bitstream_error("the tensor is sent in more than one NDU", name)
            tensors[name] = array
    return DecodedModel(
        tensors=tensors,
        topology=topology,
        topology_storage_format=tpl_unit.topology_storage_format if tpl_unit else TopologyStorageFormat.NNR_TPL_UNREC,
        topology_compression_format=(
            tpl_unit.topology_compression_format if tpl_unit else TopologyCompressionFormat.NNR_PT_RAW
        ),
        general_profile_idc=ctx.general_profile_idc,
        mps=mps,
        unit_count=len(units),
    )


# -- inspection --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UnitInfo:
    """One line of `nnrconv inspect`: a unit's kind, place and main content.

    Attributes:
        index: top-level unit index.
        unit_type: the unit type's name, e.g. "NNR_NDU".
        byte_offset: offset of the unit in the file.
        size: `nnr_unit_size` in bytes.
        tensor: NDU: the tensor name (several joined by ", "; "#i" for an unresolved index).
        shape: NDU: `tensor_dimensions`.
        payload_type: NDU: the payload type's name.
        topology_storage_format: TPL: the storage format's name (or "reserved (n)").
        member: position inside an aggregate unit, `None` for top-level units.
    """

    index: int
    unit_type: str
    byte_offset: int
    size: int
    tensor: str | None = None
    shape: tuple[int, ...] | None = None
    payload_type: str | None = None
    topology_storage_format: str | None = None
    member: int | None = None


def _storage_name(code: int) -> str:
    try:
        return TopologyStorageFormat(code).name
    except ValueError:
        return f"reserved ({code})"


def _info(parsed: ParsedUnit, index: int, member: int | None, reflist: tuple[str, ...] | None) -> UnitInfo:
    unit = parsed.unit
    info = UnitInfo(index, NnrUnitType(unit.nnr_unit_type).name, parsed.byte_offset, parsed.size, member=member)
    if isinstance(unit, CompressedDataUnit):
        header = unit.header
        labels = [
            e if isinstance(e, str) else (reflist[e] if reflist and 0 <= e < len(reflist) else f"#{e}")
            for e in header.topology_elements
        ]
        return UnitInfo(
            index,
            info.unit_type,
            parsed.byte_offset,
            parsed.size,
            tensor=", ".join(labels),
            shape=header.tensor_dimensions,
            payload_type=header.nnr_compressed_data_unit_payload_type.name,
            member=member,
        )
    if isinstance(unit, TopologyUnit):
        return UnitInfo(
            index,
            info.unit_type,
            parsed.byte_offset,
            parsed.size,
            topology_storage_format=_storage_name(unit.topology_storage_format),
            member=member,
        )
    return info


def inspect_units(data: bytes | bytearray | memoryview, source: str = "<bytes>") -> list[UnitInfo]:
    """One record per unit (aggregate members follow their aggregate), for `nnrconv inspect`.

    Raises:
        BitstreamError: as `read_units`.
        UnsupportedError: as `read_units`.
    """
    units = read_units(data, source)
    reflist = None
    for _, parsed in _flatten(units):
        unit = parsed.unit
        if isinstance(unit, TopologyUnit) and unit.topology_storage_format == TopologyStorageFormat.NNR_TPL_REFLIST:
            try:
                reflist = decode_reference_list(_topology_bytes(unit, parsed, source))
            except BitstreamError:
                reflist = None
            break
    infos: list[UnitInfo] = []

    def visit(parsed: ParsedUnit, index: int, member: int | None) -> None:
        infos.append(_info(parsed, index, member, reflist))
        for position, inner in enumerate(parsed.members):
            visit(inner, index, position)

    for parsed in units:
        visit(parsed, parsed.index, None)
    return infos
