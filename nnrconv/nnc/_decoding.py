# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Whole-model decoding: units parsed, names resolved, data units decoded in parallel."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from nnrconv.core._errors import BaseMismatchError, BitstreamError, UnsupportedError
from nnrconv.nnc import cabac
from nnrconv.nnc._budget import check_declared_sizes, current_budget, format_size
from nnrconv.nnc._container import MAX_TOPOLOGY_SIZE, RAW_FLOAT32, Progress, flatten_units, inflate_topology
from nnrconv.nnc._enums import (
    DecompressedDataFormat,
    PayloadType,
    TopologyCompressionFormat,
    TopologyStorageFormat,
)
from nnrconv.nnc._framing import (
    AggregateUnit,
    ParsedUnit,
    _OrderCheck,
    _SequenceReader,
    advance_context,
    read_units,
    with_source,
)
from nnrconv.nnc._incremental import BaseModel, check_parent, verify_parents
from nnrconv.nnc._integrity import StreamCheck, check_parts, check_stream, seal_parts
from nnrconv.nnc._mps import LayerParameterSet, ModelParameterSet
from nnrconv.nnc._ndu import CompressedDataUnit, NduHeader, decode_reference_list
from nnrconv.nnc._payloads import decode_levels_payload
from nnrconv.nnc._units import QuantizationUnit, StartUnit, TopologyUnit, UnitContext

# -- decoding ----------------------------------------------------------------------------------


__all__ = [
    "DecodedModel",
    "decode_model",
    "decode_parts",
]


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
            both None otherwise. They let a unit move to another NNR container unchanged (the
            parameter sets then carry an integrity record covering these NDUs).
        verified: the stream carried an integrity record and every unit matched it (False:
            "unverified", a stream without record, e.g. NNCodec's).
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
    verified: bool = False


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
    base: BaseModel | None = None  # the model an update's NDUs refer to
    levels_sink: dict[str, np.ndarray] | None = None  # receives each coded tensor's int32 levels
    threads: int = 1  # for the block rows of one tensor (with entry points)

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
        array = np.frombuffer(ndu.payload, dtype=RAW_FLOAT32).astype(np.float32, copy=True).reshape(dims)
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
    parent = None
    if header.parent_node_id is not None:
        if site.base is None:
            raise BaseMismatchError(
                f"{site.source}: tensor {name!r} updates a base model; decode it with its base (--base)"
            )
        if payload_type != PayloadType.NNR_PT_FLOAT:
            raise site.unsupported(f"an {payload_type.name} NDU updating a parent tensor", name)
        parent = check_parent(header, name, site.base)
    tca = header.parent_node_id is not None and header.parent_node_id.temporal_context_modeling_flag
    levels_out: list[np.ndarray] | None = [] if site.levels_sink is not None else None
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
            base=parent.levels if parent is not None and tca else None,
            history=parent.history if parent is not None else None,
            levels_out=levels_out,
            threads=site.threads,
        )
    except BitstreamError as exc:
        located = exc.located(unit_index=site.unit_index, byte_offset=site.byte_offset, tensor=name)
        raise with_source(located, site.source) from None
    except NotImplementedError as exc:
        raise site.unsupported(str(exc), name) from None
    if site.levels_sink is not None and levels_out:
        site.levels_sink[name] = levels_out[0]
    if parent is not None:
        # restored = base + decoded difference, in float32 (NNCodec's model_add)
        array = (np.asarray(parent.values, dtype=np.float32) + array.reshape(parent.values.shape)).astype(np.float32)
        array = array.reshape(header.tensor_dimensions or (1,))
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
            return inflate_topology(tpl.topology_data, limit=min(MAX_TOPOLOGY_SIZE, current_budget()))
        except BitstreamError as exc:
            located = exc.located(unit_index=parsed.index, byte_offset=parsed.byte_offset)
            raise with_source(located, source) from None
    raise UnsupportedError(
        f"{source}: unit {parsed.index}, byte offset {parsed.byte_offset}: topology_compression_format "
        f"{tpl.topology_compression_format} is reserved"
    )


def decode_model(
    data: bytes | bytearray | memoryview,
    *,
    source: str = "<bytes>",
    jobs: int | None = None,
    max_elements: int = cabac.DEFAULT_MAX_ELEMENTS,
    progress: Progress | None = None,
    base: BaseModel | None = None,
    _levels_sink: dict[str, np.ndarray] | None = None,
) -> DecodedModel:
    """Decode a bitstream into tensors and topology.

    Args:
        data: the bitstream.
        source: file name for error messages.
        jobs: threads decoding NDUs in parallel (default: the number of cores).
        max_elements: refuse any tensor declaring more elements, before allocating it.
        progress: called with (tensor name, bytes decoded) as each tensor is ready.
        base: for an incremental update (`read_base` of the model it updates): update NDUs add
            their decoded difference to the base tensor, and base tensors the update leaves out
            are returned unchanged.

    A stream with an integrity record is verified before anything is parsed (`_integrity`).

    Raises:
        BitstreamError: corrupt or truncated data (any unit failing its integrity check), a
            payload whose length does not match its dimensions, or a tensor sent twice; the
            message names the file, unit, offset and tensor.
        UnsupportedError: valid syntax nnrconv cannot decode yet (entropy-coded NDUs, a second MPS
            or TPL unit, ...); named likewise.
        BaseMismatchError: an update without `base`, or one that does not fit `base`.
    """
    view = _byte_view(data)
    try:
        check = check_stream(view)
    except BitstreamError as exc:
        raise with_source(exc, source) from None
    units = read_units(view, source)
    ctx = UnitContext()
    mps: ModelParameterSet | None = None
    tpl: tuple[TopologyUnit, ParsedUnit] | None = None
    lps: LayerParameterSet | None = None
    ndus: list[tuple[CompressedDataUnit, _NduSite]] = []
    head = bytearray()
    movable = not any(isinstance(u.unit, AggregateUnit) for u in units)
    spans: list[tuple[int, int]] = []
    for top_index, parsed in flatten_units(units):
        unit = parsed.unit
        if top_index == check.record_index:
            continue  # the integrity record, already verified
        if isinstance(unit, (StartUnit, ModelParameterSet)):
            head += view[parsed.byte_offset : parsed.byte_offset + parsed.size]
        elif isinstance(unit, (LayerParameterSet, QuantizationUnit)):
            movable = False
        elif isinstance(unit, CompressedDataUnit):
            spans.append((parsed.byte_offset, parsed.size))
            header = unit.header
            movable = (
                movable
                and not header.nnr_multiple_topology_elements_present_flag
                and (header.topology_elem_id is not None)
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
            site = _NduSite(
                source, top_index, parsed.byte_offset, ctx, lps, parsed.size, max_elements, base, _levels_sink
            )
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
    is_update = any(ndu.header.parent_node_id is not None for ndu, _ in ndus)
    if is_update and base is None:
        raise BaseMismatchError(
            f"{source} is an incremental update of a base model (its data units name parent nodes); "
            "decode it with its base (--base BASE.nnr)"
        )
    _check_budget(jobs_list, jobs)
    if base is not None:  # a base that does not fit is refused before anything is decoded
        verify_parents(((n.header, names[0]) for n, _, names in jobs_list if n.header.parent_node_id), base, source)
    tensors = _decode_ndus(jobs_list, jobs, progress)
    if base is not None and mps.mps_parent_signalling_enabled_flag:
        # tensors the update leaves out are unchanged
        merged = {name: tensor.values for name, tensor in base.tensors.items()}
        merged.update(tensors)
        tensors = merged
        movable = False  # the units only make sense with their base
    coded = None
    parameter_sets = None
    if movable:
        coded = {names[0]: bytes(view[o : o + n]) for (_, _, names), (o, n) in zip(jobs_list, spans, strict=True)}
        parameter_sets = _parts_parameter_sets(bytes(head), view, spans, check)
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
        parameter_sets=parameter_sets,
        coded=coded,
        verified=check.verified,
    )


def _byte_view(data: bytes | bytearray | memoryview) -> memoryview:
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _parts_parameter_sets(head: bytes, view: memoryview, spans: list[tuple[int, int]], check: StreamCheck) -> bytes:
    """The start unit and MPS with a parts integrity record, for moving the NDUs to a container.

    A verified stream's CRCs and digest are reused (the digest covers the same units); an
    unverified one (NNCodec's) is sealed as decoded, so what nnrconv writes from it is checked.
    """
    if not check.verified or check.crcs is None:
        return seal_parts(head, [view[o : o + n] for o, n in spans])
    head_crcs = [check.crcs[o] for o, _ in check.frames[:2]]
    ndu_crcs = [check.crcs[o] for o, _ in spans]
    return seal_parts(head, [], crcs=[*head_crcs, *ndu_crcs], digest=check.digest)


def _decode_one(job: tuple[CompressedDataUnit, _NduSite, tuple[str, ...]], threads: int) -> _Decoded:
    ndu, site, names = job
    if threads > 1:
        site = replace(site, threads=threads)
    return _PAYLOAD_DECODERS[ndu.header.nnr_compressed_data_unit_payload_type](ndu, names, site)


def _thread_shares(jobs: list[tuple[CompressedDataUnit, _NduSite, tuple[str, ...]]], count: int) -> list[int]:
    """Threads for the block rows of each tensor: its share of the model's elements.

    NDUs already decode side by side, so a tensor gets extra threads only in proportion to its
    size: all cores for a model that is one big tensor, one thread each for many similar ones.
    """
    sizes = [math.prod(ndu.header.tensor_dimensions or (1,)) for ndu, _, _ in jobs]
    total = sum(sizes) or 1
    return [max(1, min(count, round(count * size / total))) for size in sizes]


def _check_budget(jobs: list[tuple[CompressedDataUnit, _NduSite, tuple[str, ...]]], workers: int | None) -> None:
    count = workers or os.cpu_count() or 1
    located = [(ndu.header, partial(site.bitstream_error, tensor=names[0])) for ndu, site, names in jobs]
    check_declared_sizes(located, min(count, len(jobs)))


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
    try:
        with ThreadPoolExecutor(max(1, min(count, len(jobs)))) as pool:
            shares = _thread_shares(jobs, count)
            parallel = count > 1 and len(jobs) > 1
            results = pool.map(_decode_one, jobs, shares) if parallel else map(_decode_one, jobs, shares)
            for decoded in results:
                tensors.update(decoded)
                if progress is not None:
                    for name, array in decoded:
                        progress(name, array.nbytes)
    except MemoryError:
        raise BitstreamError(
            f"the machine could not provide the memory the data units declare, though it is within the budget "
            f"of {format_size(current_budget())}: give a smaller --max-memory to be refused up front"
        ) from None
    return tensors


def decode_parts(
    parameter_set_bytes: bytes | bytearray | memoryview,
    ndus: Mapping[str, bytes | bytearray | memoryview],
    *,
    jobs: int | None = None,
    max_elements: int = cabac.DEFAULT_MAX_ELEMENTS,
    complete: bool = True,
) -> dict[str, np.ndarray]:
    """Decode NDUs written by `encode_parts`, each on its own, given the parameter sets.

    Args:
        parameter_set_bytes: the start unit and model parameter set (and optionally more
            parameter units such as an LPS).
        ndus: tensor name -> one complete NDU unit; the NDU must name that tensor.
        jobs: threads decoding in parallel (default: the number of cores).
        max_elements: refuse any tensor declaring more elements, before allocating it.
        complete: `ndus` are all the units of the model (the default); False decodes a subset
            (one tensor on demand), each unit still checked against the record.

    Parameter sets with an integrity record (`encode_parts` output) are verified with the NDUs
    first: every NDU must match the record, and with `complete` all it covers must be present.

    Raises:
        BitstreamError: corrupt parameter sets or NDU (integrity check failed), missing NDUs, or
            an NDU naming another tensor; the message names the tensor.
    """
    try:  # first: damaged parameter sets are reported as failing their record, not as syntax
        check_parts(parameter_set_bytes, ndus, complete=complete)
    except BitstreamError as exc:
        raise with_source(exc, "<data unit>" if exc.tensor else "<parameter sets>") from None
    decoder = PartsDecoder(parameter_set_bytes, max_elements=max_elements)
    return decoder.decode(ndus, jobs=jobs, verify=False)


class PartsDecoder:
    """Parameter sets parsed once, decoding any of their NDUs on demand (`decode_parts` does one
    call; the embedding seam decodes each tensor when it is first used)."""

    def __init__(
        self, parameter_set_bytes: bytes | bytearray | memoryview, *, max_elements: int = cabac.DEFAULT_MAX_ELEMENTS
    ) -> None:
        """Raises:
        BitstreamError: corrupt parameter sets, or no model parameter set in them."""
        source = "<parameter sets>"
        self.parameter_set_bytes = parameter_set_bytes
        self.max_elements = max_elements
        units = read_units(parameter_set_bytes, source)
        ctx = UnitContext()
        lps: LayerParameterSet | None = None
        has_mps = False
        for _, parsed in flatten_units(units):
            if isinstance(parsed.unit, TopologyUnit):
                continue  # the integrity record (check_parts refuses any other topology unit here)
            if isinstance(parsed.unit, CompressedDataUnit):
                raise BitstreamError("the parameter sets contain a compressed data unit", unit_index=parsed.index)
            has_mps = has_mps or isinstance(parsed.unit, ModelParameterSet)
            if isinstance(parsed.unit, LayerParameterSet):
                lps = parsed.unit
            ctx = advance_context(ctx, parsed.unit)
        if not has_mps:
            raise BitstreamError("the parameter sets contain no model parameter set (NNR_MPS)")
        self.ctx, self.lps = ctx, lps

    def decode(
        self,
        ndus: Mapping[str, bytes | bytearray | memoryview],
        *,
        jobs: int | None = None,
        complete: bool = True,
        verify: bool = True,
    ) -> dict[str, np.ndarray]:
        """Decode `ndus` as `decode_parts` does; `verify` False skips the integrity record check
        (for units already checked with `check_parts`)."""
        if verify:
            try:
                check_parts(self.parameter_set_bytes, ndus, complete=complete)
            except BitstreamError as exc:
                raise with_source(exc, "<data unit>" if exc.tensor else "<parameter sets>") from None
        ctx, lps, max_elements = self.ctx, self.lps, self.max_elements
        resolver = _NameResolver(None, b"")
        jobs_list = []
        for key, data in ndus.items():
            view = memoryview(data)
            if view.format != "B" or view.ndim != 1:
                view = view.cast("B")
            label = "<data unit>"  # the tensor is named by the error's location
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
        _check_budget(jobs_list, jobs)
        return _decode_ndus(jobs_list, jobs)
