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
import os
import zlib
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from nnrconv.core._errors import BitstreamError, UnsupportedError
from nnrconv.nnc import cabac
from nnrconv.nnc._bitio import BitWriter
from nnrconv.nnc._coding import CodingOptions, TensorPlan, carried_format, choose_mps_qp, plan_tensor
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
    _OrderCheck,
    _SequenceReader,
    advance_context,
    encode_unit,
    read_units,
    unit_size_field,
    with_source,
)
from nnrconv.nnc._mps import LayerParameterSet, ModelParameterSet
from nnrconv.nnc._ndu import CompressedDataUnit, NduHeader, NodeId, decode_reference_list
from nnrconv.nnc._payloads import PayloadSettings, decode_levels_payload, encode_payload
from nnrconv.nnc._units import QuantizationUnit, StartUnit, TopologyUnit, UnitContext


class Progress(Protocol):
    """Told of each tensor as it is coded or decoded, from the calling thread, in tensor order."""

    def __call__(self, name: str, nbytes: int) -> None:
        """`name` is the tensor; `nbytes` the size of its data in memory."""

__all__ = [
    "MAX_TOPOLOGY_SIZE",
    "DecodedModel",
    "UnitInfo",
    "can_carry",
    "decode_model",
    "decode_parts",
    "deflate_topology",
    "encode_model",
    "encode_parts",
    "inflate_topology",
    "inspect_units",
]

MAX_TOPOLOGY_SIZE = 1 << 30
"""Largest decompressed topology accepted (1 GiB), so a deflate bomb cannot exhaust memory."""

# NNCodec's defaults for the fields encode_model does not choose itself.
_CABAC_UNARY_LENGTH_MINUS1 = 10
_RAW_FLOAT = np.dtype("<f4")


def can_carry(dtype_or_array: object, options: CodingOptions | None = None) -> bool:
    """Whether `encode_model` carries a tensor (given as an array) or tensors of a dtype.

    With an array the answer is exact for these options: int64/uint32/uint64 only when the values
    fit int32; float16/float64 in lossless mode only when they lie on a QP grid. With a dtype it
    says whether such tensors can be carried at all. Booleans, strings and sub-byte or
    non-numpy types never are; they stay in the topology.
    """
    if isinstance(dtype_or_array, np.ndarray):
        plan = plan_tensor(dtype_or_array, options or CodingOptions())
        return plan is not None
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


# -- encoding ----------------------------------------------------------------------------------


def encode_model(
    tensors: Iterable[tuple[str, np.ndarray]],
    topology: bytes,
    topology_storage_format: int,
    *,
    compress_topology: bool = True,
    general_profile_idc: int = 1,
    options: CodingOptions | None = None,
    progress: Progress | None = None,
) -> bytes:
    """Code a model as an NNR bitstream: STR, MPS, TPL, then one NDU per tensor, in tensor order.

    Args:
        tensors: (name, array) pairs, in the order the NDUs are written.
        topology: the topology bytes to embed (e.g. an ONNX graph without its weights).
        topology_storage_format: a `TopologyStorageFormat` code.
        compress_topology: deflate the topology (NNR_DFL) when that makes it smaller.
        general_profile_idc: 1 for 2nd-edition syntax (adds node ids as NNCodec 2.x does), or 0.
        options: how tensors are coded (default `CodingOptions()`: per-tensor SNR target).
        progress: called with (tensor name, bytes of its data) as each tensor is coded.

    Returns:
        The bitstream. A 0-d tensor is written with dimensions [1]; callers restore exact shapes
        from their topology.

    Raises:
        UnsupportedError: a tensor cannot be carried (`can_carry` is false), its name contains
            NUL, or its NDU would exceed 2**31 - 1 bytes; the message names the tensor.
        ValueError: two tensors share a name, or `general_profile_idc` is not 0 or 1.
    """
    parameter_sets, ndus = _encode(
        tensors,
        options or CodingOptions(),
        general_profile_idc,
        topology,
        topology_storage_format,
        compress_topology,
        progress,
    )
    return parameter_sets + b"".join(ndus.values())


def encode_parts(
    tensors: Iterable[tuple[str, np.ndarray]] | Mapping[str, np.ndarray],
    options: CodingOptions | None = None,
    *,
    general_profile_idc: int = 1,
    progress: Progress | None = None,
) -> tuple[bytes, dict[str, bytes]]:
    """Code tensors for embedding in a native container (integration mode 2).

    Returns:
        (parameter_set_bytes, ndus): the start unit and model parameter set, and per tensor name
        one complete NDU unit (size field included), each decodable with `decode_parts` given the
        parameter sets alone.

    Raises:
        As `encode_model`.
    """
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    return _encode(items, options or CodingOptions(), general_profile_idc, None, 0, False, progress)


def _encode(
    tensors: Iterable[tuple[str, np.ndarray]],
    options: CodingOptions,
    profile: int,
    topology: bytes | None,
    storage_format: int,
    compress: bool,
    progress: Progress | None = None,
) -> tuple[bytes, dict[str, bytes]]:
    if profile not in (0, 1):
        raise ValueError(f"general_profile_idc must be 0 or 1, got {profile!r}")
    named: list[tuple[str, np.ndarray, TensorPlan]] = []
    seen: set[str] = set()
    for name, array in tensors:
        if not isinstance(name, str):
            raise TypeError(f"tensors names must be str, got {name!r}")
        if name in seen:
            raise ValueError(f"two tensors are named {name!r}; NDU names must be unique")
        seen.add(name)
        if "\0" in name:
            raise UnsupportedError(f"tensor {name!r} contains a NUL character, which an NNR st(v) name cannot hold")
        array = np.asarray(array)
        plan = plan_tensor(array, options)
        if plan is None:
            raise UnsupportedError(
                f"tensor {name!r} has dtype {array.dtype}; NNR carries float32, float16/float64 "
                f"(lossy, or lossless on a QP grid) and integers that fit int32 ({options.mode} mode)"
            )
        named.append((name, array, plan))
    qps = [p.qp for _, _, p in named if p.payload_type == PayloadType.NNR_PT_FLOAT and p.qp is not None]
    margin = [min(qps) - 8] if any(p.snr_db is not None for _, _, p in named) and qps else []
    mps_qp, qp_range = choose_mps_qp(qps + margin, options.qp_density)
    mps = ModelParameterSet(mps_qp_density=options.qp_density, mps_quantization_parameter=mps_qp)
    ctx = UnitContext()
    head: list[bytes] = []
    units: list[StartUnit | ModelParameterSet | TopologyUnit] = [StartUnit(profile), mps]
    if topology is not None:
        units.append(_topology_unit(topology, storage_format, compress))
    for unit in units:
        head.append(encode_unit(unit, ctx))
        ctx = advance_context(ctx, unit)
    settings = PayloadSettings(options, mps_qp, qp_range, profile)

    def code(job: tuple[int, tuple[str, np.ndarray, TensorPlan]]) -> bytes:
        index, (name, array, plan) = job
        return b"".join(_tensor_unit(name, array, plan, index, ctx, settings))

    jobs = list(enumerate(named))
    coded: list[bytes] = []
    with ThreadPoolExecutor(max(1, min(options.workers, len(jobs)))) as pool:
        results = pool.map(code, jobs) if options.workers > 1 and len(jobs) > 1 else map(code, jobs)
        # Reported from this thread, in tensor order, as each unit is ready.
        for (name, array, _), unit in zip(named, results, strict=True):
            coded.append(unit)
            if progress is not None:
                progress(name, array.nbytes)
    return b"".join(head), {name: unit for (name, _, _), unit in zip(named, coded, strict=True)}


def _topology_unit(topology: bytes, storage_format: int, compress: bool) -> TopologyUnit:
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


def _tensor_unit(
    name: str, array: np.ndarray, plan: TensorPlan, index: int, ctx: UnitContext, settings: PayloadSettings
) -> list[bytes]:
    """Size field, headers and payload of one NDU, checked before the payload is built."""
    if plan.payload_type != PayloadType.NNR_PT_RAW_FLOAT:
        try:
            coded = encode_payload(name, array, plan, settings, index)
        except ValueError as exc:
            raise UnsupportedError(f"tensor {name!r}: {exc}") from exc
        w = BitWriter()
        CompressedDataUnit(coded.header).write(w, ctx)
        head = w.getvalue()
        if plan.exact and plan.decompressed_format is None and len(coded.payload) >= 4 * array.size:
            # Lossless on a grid but no smaller than raw float32: send it raw.
            return _tensor_unit(name, array, TensorPlan(PayloadType.NNR_PT_RAW_FLOAT), index, ctx, settings)
        if len(head) + len(coded.payload) + 4 > MAX_UNIT_SIZE:
            raise UnsupportedError(f"tensor {name!r} does not fit one NNR unit (at most {MAX_UNIT_SIZE} bytes)")
        return [unit_size_field(len(head) + len(coded.payload)), head, coded.payload]
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
        parameter_sets: the start unit and model parameter set as they are in the stream, and
        coded: each tensor's complete NDU bytes, when every NDU can be decoded from those
            parameter sets alone (one tensor named by string per NDU, no LPS, QNT or aggregate);
            both None otherwise. They let a unit move to another NNR container unchanged.
    """

    tensors: dict[str, np.ndarray]
    topology: bytes
    topology_storage_format: int
    topology_compression_format: int
    general_profile_idc: int
    mps: ModelParameterSet
    unit_count: int = 0
    parameter_sets: bytes | None = None
    coded: dict[str, bytes] | None = None


@dataclass(frozen=True, slots=True)
class _NduSite:
    """Where an NDU is and what was in force there: for error messages and payload decoders."""

    source: str
    unit_index: int
    byte_offset: int
    context: UnitContext
    layer_parameter_set: LayerParameterSet | None
    unit_size: int = 0
    max_elements: int = cabac.DEFAULT_MAX_ELEMENTS

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


def _decode_coded(ndu: CompressedDataUnit, names: tuple[str, ...], site: _NduSite) -> _Decoded:
    """NNR_PT_INT / NNR_PT_FLOAT: one DeepCABAC-coded tensor (QP offset first for FLOAT)."""
    header = ndu.header
    name = names[0]
    payload_type = header.nnr_compressed_data_unit_payload_type
    if len(names) != 1:
        raise site.unsupported(f"an {payload_type.name} NDU with several topology elements", ", ".join(names))
    if header.compressed_parameter_types:
        raise site.unsupported(f"compressed_parameter_types {int(header.compressed_parameter_types)}", name)
    if header.first_tensor_dimension_shift:
        raise site.unsupported(f"first_tensor_dimension_shift {header.first_tensor_dimension_shift}", name)
    if header.tensor_dimensions is None:
        raise site.unsupported("an NDU without tensor_dimensions (input parameters out of band)", name)
    if header.nnr_decompressed_data_format is not None and header.codebook is not None:
        raise site.unsupported("a codebook with an nnr_decompressed_data_format", name)
    lps = site.layer_parameter_set
    if lps is not None and lps.lps_qp_density is not None:
        qp_density, qp = lps.lps_qp_density, lps.lps_quantization_parameter
    else:
        qp_density, qp = site.context.mps_qp_density, site.context.mps_quantization_parameter
    payload_offset = site.byte_offset + site.unit_size - len(ndu.payload)
    try:
        array, _ = decode_levels_payload(
            header,
            ndu.payload,
            profile=site.context.general_profile_idc,
            qp_density=qp_density,
            quantization_parameter=qp,
            max_elements=site.max_elements,
            payload_offset=payload_offset,
            name=name,
        )
    except BitstreamError as exc:
        located = exc.located(unit_index=site.unit_index, byte_offset=site.byte_offset, tensor=name)
        raise with_source(located, site.source) from None
    except NotImplementedError as exc:
        raise site.unsupported(str(exc), name) from None
    return [(name, array)]


def _decode_block(ndu: CompressedDataUnit, names: tuple[str, ...], site: _NduSite) -> _Decoded:
    """NNR_PT_BLOCK: a DeepCABAC-coded weight with its companions (not available yet)."""
    message = "NNR_PT_BLOCK NDUs (weights bundled with their companions) are not supported yet"
    raise site.unsupported(message, ", ".join(names))


_PAYLOAD_DECODERS: dict[PayloadType, Callable[[CompressedDataUnit, tuple[str, ...], _NduSite], _Decoded]] = {
    PayloadType.NNR_PT_INT: _decode_coded,
    PayloadType.NNR_PT_FLOAT: _decode_coded,
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

    Raises:
        BitstreamError: the parameter sets do not parse or hold something other than STR/MPS.
    """
    ctx = UnitContext()
    for _, parsed in _flatten(read_units(parameter_sets, "<parameter sets>")):
        if not isinstance(parsed.unit, (StartUnit, ModelParameterSet)):
            raise BitstreamError("parameter sets may hold only the start unit and the model parameter set")
        ctx = advance_context(ctx, parsed.unit)
    tpl = encode_unit(_topology_unit(topology, topology_storage_format, compress_topology), ctx)
    return bytes(parameter_sets) + tpl + b"".join(ndus)


def decode_model(
    data: bytes | bytearray | memoryview,
    *,
    source: str = "<bytes>",
    jobs: int | None = None,
    max_elements: int = cabac.DEFAULT_MAX_ELEMENTS,
    progress: Progress | None = None,
) -> DecodedModel:
    """Decode a bitstream into tensors and topology.

    Args:
        data: the bitstream.
        source: file name for error messages.
        jobs: threads decoding NDUs in parallel (default: the number of cores).
        max_elements: refuse any tensor declaring more elements, before allocating it.
        progress: called with (tensor name, bytes decoded) as each tensor is ready.

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
    view = memoryview(data)
    head = bytearray()
    movable = not any(isinstance(u.unit, AggregateUnit) for u in units)
    spans: list[tuple[int, int]] = []
    for top_index, parsed in _flatten(units):
        unit = parsed.unit
        if isinstance(unit, (StartUnit, ModelParameterSet)):
            head += view[parsed.byte_offset : parsed.byte_offset + parsed.size]
        elif isinstance(unit, (LayerParameterSet, QuantizationUnit)):
            movable = False
        elif isinstance(unit, CompressedDataUnit):
            spans.append((parsed.byte_offset, parsed.size))
            header = unit.header
            movable = movable and not header.nnr_multiple_topology_elements_present_flag and (
                header.topology_elem_id is not None
            )
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
            site = _NduSite(source, top_index, parsed.byte_offset, ctx, lps, parsed.size, max_elements)
            ndus.append((unit, site))
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
    jobs_list = [(ndu, site, resolver.names(ndu.header, site)) for ndu, site in ndus]
    tensors = _decode_ndus(jobs_list, jobs, progress)
    coded = None
    if movable:
        coded = {names[0]: bytes(view[o : o + n]) for (_, _, names), (o, n) in zip(jobs_list, spans, strict=True)}
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
        parameter_sets=bytes(head) if movable else None,
        coded=coded,
    )


def _decode_one(job: tuple[CompressedDataUnit, _NduSite, tuple[str, ...]]) -> _Decoded:
    ndu, site, names = job
    return _PAYLOAD_DECODERS[ndu.header.nnr_compressed_data_unit_payload_type](ndu, names, site)


def _decode_ndus(
    jobs: list[tuple[CompressedDataUnit, _NduSite, tuple[str, ...]]],
    workers: int | None,
    progress: Progress | None = None,
) -> dict:
    """Decode NDUs (in parallel: the C core releases the GIL), keeping stream order."""
    seen: set[str] = set()
    for _, site, names in jobs:
        for name in names:
            if name in seen:
                raise site.bitstream_error("the tensor is sent in more than one NDU", name)
            seen.add(name)
    count = workers or os.cpu_count() or 1
    tensors: dict[str, np.ndarray] = {}
    with ThreadPoolExecutor(max(1, min(count, len(jobs)))) as pool:
        results = pool.map(_decode_one, jobs) if count > 1 and len(jobs) > 1 else map(_decode_one, jobs)
        for decoded in results:
            tensors.update(decoded)
            if progress is not None:
                for name, array in decoded:
                    progress(name, array.nbytes)
    return tensors


def decode_parts(
    parameter_set_bytes: bytes | bytearray | memoryview,
    ndus: Mapping[str, bytes | bytearray | memoryview],
    *,
    jobs: int | None = None,
    max_elements: int = cabac.DEFAULT_MAX_ELEMENTS,
) -> dict[str, np.ndarray]:
    """Decode NDUs written by `encode_parts`, each on its own, given the parameter sets.

    Args:
        parameter_set_bytes: the start unit and model parameter set (and optionally more
            parameter units such as an LPS).
        ndus: tensor name -> one complete NDU unit; the NDU must name that tensor.
        jobs: threads decoding in parallel (default: the number of cores).
        max_elements: refuse any tensor declaring more elements, before allocating it.

    Raises:
        BitstreamError: corrupt parameter sets or NDU, or an NDU naming another tensor; the
            message names the tensor.
    """
    source = "<parameter sets>"
    units = read_units(parameter_set_bytes, source)
    ctx = UnitContext()
    lps: LayerParameterSet | None = None
    has_mps = False
    for _, parsed in _flatten(units):
        if isinstance(parsed.unit, CompressedDataUnit):
            raise BitstreamError("the parameter sets contain a compressed data unit", unit_index=parsed.index)
        has_mps = has_mps or isinstance(parsed.unit, ModelParameterSet)
        if isinstance(parsed.unit, LayerParameterSet):
            lps = parsed.unit
        ctx = advance_context(ctx, parsed.unit)
    if not has_mps:
        raise BitstreamError("the parameter sets contain no model parameter set (NNR_MPS)")
    resolver = _NameResolver(None, b"")
    jobs_list = []
    for key, data in ndus.items():
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        label = f"<NDU of {key!r}>"
        try:
            parsed = _SequenceReader(view, ctx, _OrderCheck.after_parameter_sets()).read_one(0, len(view), 0)
        except BitstreamError as exc:
            raise with_source(exc.located(unit_index=0, tensor=key), label) from exc
        if parsed.size != len(view):
            raise with_source(BitstreamError(f"{len(view) - parsed.size} bytes follow the NDU", tensor=key), label)
        if not isinstance(parsed.unit, CompressedDataUnit):
            raise with_source(BitstreamError("not a compressed data unit (NNR_NDU)", tensor=key), label)
        site = _NduSite(label, 0, 0, ctx, lps, parsed.size, max_elements)
        names = resolver.names(parsed.unit.header, site)
        if names != (key,):
            raise site.bitstream_error(f"the NDU carries {', '.join(map(repr, names))}, not {key!r}", key)
        jobs_list.append((parsed.unit, site, names))
    return _decode_ndus(jobs_list, jobs)


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
        qp: NNR_PT_FLOAT NDU: the tensor's QP (MPS/LPS value plus the coded offset).
        step: NNR_PT_FLOAT NDU: the quantization step of that QP.
        bits_per_parameter: NDU: 8 · unit size / element count.
        dq_flag: NDU: dependent quantization.
        scan_order: NDU: the scan order.
        snr_db: NDU: weight SNR against an original model, filled in by `nnrconv.inspect`.
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
    qp: int | None = None
    step: float | None = None
    bits_per_parameter: float | None = None
    dq_flag: bool | None = None
    scan_order: int | None = None
    snr_db: float | None = None


def _storage_name(code: int) -> str:
    try:
        return TopologyStorageFormat(code).name
    except ValueError:
        return f"reserved ({code})"


def _coded_qp(unit: CompressedDataUnit, ctx: UnitContext, lps: LayerParameterSet | None) -> int | None:
    """The QP at the start of an NNR_PT_FLOAT payload, or None when it cannot be read."""
    if unit.header.nnr_compressed_data_unit_payload_type != PayloadType.NNR_PT_FLOAT:
        return None
    if lps is not None and lps.lps_qp_density is not None:
        qpd, base = lps.lps_qp_density, lps.lps_quantization_parameter
    else:
        qpd, base = ctx.mps_qp_density, ctx.mps_quantization_parameter
    if qpd is None or base is None:
        return None
    try:
        return base + cabac.PayloadDecoder(unit.payload).decode_qp_offset(qpd)
    except BitstreamError:
        return None


def _info(
    parsed: ParsedUnit,
    index: int,
    member: int | None,
    reflist: tuple[str, ...] | None,
    ctx: UnitContext,
    lps: LayerParameterSet | None,
) -> UnitInfo:
    unit = parsed.unit
    info = UnitInfo(index, NnrUnitType(unit.nnr_unit_type).name, parsed.byte_offset, parsed.size, member=member)
    if isinstance(unit, CompressedDataUnit):
        header = unit.header
        labels = [
            e if isinstance(e, str) else (reflist[e] if reflist and 0 <= e < len(reflist) else f"#{e}")
            for e in header.topology_elements
        ]
        qp = _coded_qp(unit, ctx, lps)
        qpd = lps.lps_qp_density if lps is not None and lps.lps_qp_density is not None else ctx.mps_qp_density
        count = math.prod(header.tensor_dimensions) if header.tensor_dimensions else 0
        return UnitInfo(
            index,
            info.unit_type,
            parsed.byte_offset,
            parsed.size,
            tensor=", ".join(labels),
            shape=header.tensor_dimensions,
            payload_type=header.nnr_compressed_data_unit_payload_type.name,
            member=member,
            qp=qp,
            step=cabac.step_size(qp, qpd) if qp is not None and qpd is not None else None,
            bits_per_parameter=8 * parsed.size / count if count else None,
            dq_flag=header.dq_flag,
            scan_order=header.scan_order,
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
    state: dict[str, object] = {"ctx": UnitContext(), "lps": None}

    def visit(parsed: ParsedUnit, index: int, member: int | None) -> None:
        ctx = state["ctx"]
        if isinstance(parsed.unit, LayerParameterSet):
            state["lps"] = parsed.unit
        infos.append(_info(parsed, index, member, reflist, ctx, state["lps"]))  # type: ignore[arg-type]
        state["ctx"] = advance_context(ctx, parsed.unit)  # type: ignore[arg-type]
        for position, inner in enumerate(parsed.members):
            visit(inner, index, position)

    for parsed in units:
        visit(parsed, parsed.index, None)
    return infos
