# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Whole-model encoding: parameter sets, topology unit and one NDU per tensor, coded in parallel."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from nnrconv.core._errors import UnsupportedError
from nnrconv.nnc._bitio import BitWriter
from nnrconv.nnc._coding import CodingOptions, TensorPlan, choice_options, is_weight, plan_choice, plan_tensor
from nnrconv.nnc._container import CABAC_UNARY_LENGTH_MINUS1, RAW_FLOAT32, Progress, topology_unit
from nnrconv.nnc._enums import (
    PayloadType,
)
from nnrconv.nnc._framing import (
    MAX_UNIT_SIZE,
    advance_context,
    encode_unit,
    unit_size_field,
)
from nnrconv.nnc._incremental import BaseModel, importance_order
from nnrconv.nnc._integrity import seal_parts, seal_stream
from nnrconv.nnc._mps import ModelParameterSet
from nnrconv.nnc._ndu import CompressedDataUnit, NduHeader, NodeId
from nnrconv.nnc._payloads import OutsideWindow, PayloadSettings, UpdateParent, quantize_payload
from nnrconv.nnc._planning import fit_plans
from nnrconv.nnc._units import StartUnit, TopologyUnit, UnitContext

# -- encoding ----------------------------------------------------------------------------------


__all__ = [
    "ModelHead",
    "encode_model",
    "encode_parts",
    "encode_update",
    "model_head",
    "plan_named",
]


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
    """Code a model as an NNR bitstream: STR, MPS, integrity record, TPL, then one NDU per tensor.

    The integrity record (a CRC-32 per unit and a SHA-256 of the data, see `_integrity`) lets
    decoders detect any damage; NDUs follow in tensor order.

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
    parameter_sets, head, ndus = _encode(
        tensors,
        options or CodingOptions(),
        general_profile_idc,
        topology,
        topology_storage_format,
        compress_topology,
        progress,
    )
    return seal_stream(parameter_sets, [*head, *ndus.values()])


def encode_update(
    tensors: Iterable[tuple[str, np.ndarray]],
    topology: bytes,
    topology_storage_format: int,
    base: BaseModel,
    *,
    compress_topology: bool = True,
    options: CodingOptions | None = None,
    progress: Progress | None = None,
) -> bytes:
    """Code a model as an incremental update of `base` (profile 1, parent signalling).

    Lossy float tensors are coded as quantized differences to the base tensor (at the QP a full
    coding would use), with temporal context adaptation and HDSP, in NDUs naming the base
    tensor's node as parent; a difference that quantizes to zero sends no NDU. Other tensors are
    sent whole when they differ from the base, and not at all when equal.

    Raises:
        BaseMismatchError: a tensor is missing from the base, or its shape differs.
        As `encode_model` otherwise.
    """
    parameter_sets, head, ndus = _encode(
        tensors,
        options or CodingOptions(),
        1,
        topology,
        topology_storage_format,
        compress_topology,
        progress,
        base,
    )
    return seal_stream(parameter_sets, [*head, *ndus.values()])


def encode_parts(
    tensors: Iterable[tuple[str, np.ndarray]] | Mapping[str, np.ndarray],
    options: CodingOptions | None = None,
    *,
    general_profile_idc: int = 1,
    progress: Progress | None = None,
) -> tuple[bytes, dict[str, bytes]]:
    """Code tensors for embedding in a native container (integration mode 2).

    Returns:
        (parameter_set_bytes, ndus): the start unit, model parameter set and an integrity record
        covering them and every NDU, and per tensor name one complete NDU unit (size field
        included), each decodable with `decode_parts` given the parameter sets alone.

    Raises:
        As `encode_model`.
    """
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    parameter_sets, _, ndus = _encode(items, options or CodingOptions(), general_profile_idc, None, 0, False, progress)
    return seal_parts(parameter_sets, ndus.values()), ndus


def _encode(
    tensors: Iterable[tuple[str, np.ndarray]],
    options: CodingOptions,
    profile: int,
    topology: bytes | None,
    storage_format: int,
    compress: bool,
    progress: Progress | None = None,
    base: BaseModel | None = None,
) -> tuple[bytes, list[bytes], dict[str, bytes]]:
    """(start unit + MPS, [topology unit] or [], tensor name -> NDU); integrity is sealed by the callers."""
    if profile not in (0, 1):
        raise ValueError(f"general_profile_idc must be 0 or 1, got {profile!r}")
    named: list[tuple[str, np.ndarray, TensorPlan]] = []
    seen: set[str] = set()
    for name, array in tensors:
        array = np.asarray(array)
        named.append((name, array, plan_named(name, array, options, seen)))
    parents: dict[str, UpdateParent | None] = {}
    if base is not None:
        for name, array, plan in named:
            tensor = base.get(name, tuple(array.shape), "the model")
            lossy_float = plan.payload_type == PayloadType.NNR_PT_FLOAT and not plan.exact
            parents[name] = tensor.parent(name, base.source, base.parent_ref) if lossy_float else None
    layout = model_head(
        [(array.size, plan) for _, array, plan in named],
        options,
        profile,
        topology,
        storage_format,
        compress,
        parent_signalling=base is not None,
    )
    named = [(name, array, plan) for (name, array, _), plan in zip(named, layout.plans, strict=True)]
    head, ctx, settings = layout.units, layout.ctx, layout.settings

    def code(job: tuple[int, tuple[str, np.ndarray, TensorPlan]], threads: int) -> bytes:
        index, (name, array, plan) = job
        if base is None:  # with a rate allocator's λ / codebook for this tensor where it chose one
            return b"".join(tensor_unit(name, array, plan, index, ctx, layout.settings_for(name), threads=threads))
        parent = parents[name]
        before = base.tensors[name]
        if parent is None and np.array_equal(array, before.values.reshape(array.shape)):
            return b""  # unchanged: the decoder keeps the base tensor
        # sent whole: still the next version of the tensor, one level below it (as NNCodec)
        node = before.node_id
        at = index if node is None else NodeId(node.device_id, node.parameter_id, node.put_node_depth + 1)
        return b"".join(tensor_unit(name, array, plan, at, ctx, settings, parent, threads))

    jobs = list(enumerate(named))
    shares = thread_shares([array.size for _, array, _ in named], options.workers)
    coded: list[bytes] = []
    with ThreadPoolExecutor(max(1, min(options.workers, len(jobs)))) as pool:
        results = pool.map(code, jobs, shares) if options.workers > 1 and len(jobs) > 1 else map(code, jobs, shares)
        # Reported from this thread, in tensor order, as each unit is ready.
        for (name, array, _), unit in zip(named, results, strict=True):
            coded.append(unit)
            if progress is not None:
                progress(name, array.nbytes)
    ndus = {name: unit for (name, _, _), unit in zip(named, coded, strict=True) if unit}
    if base is not None:  # most important first: a cut update still applies its complete units
        sizes = {name: len(unit) for name, unit in ndus.items()}
        sent = [(n, a) for n, a, _ in named if n in ndus]
        ndus = {name: ndus[name] for name in importance_order(sent, base, sizes, measured=options.importance)}
    return b"".join(head[:2]), head[2:], ndus


def plan_named(name: object, array: np.ndarray, options: CodingOptions, seen: set[str]) -> TensorPlan:
    """A tensor's plan (its rate plan's choice when `options.plan` has one), its name checked
    against the names `seen` so far (which it joins).

    Raises:
        TypeError, ValueError, UnsupportedError: as `encode_model` documents.
    """
    if not isinstance(name, str):
        raise TypeError(f"tensors names must be str, got {name!r}")
    if name in seen:
        raise ValueError(f"two tensors are named {name!r}; NDU names must be unique")
    seen.add(name)
    if "\0" in name:
        raise UnsupportedError(f"tensor {name!r} contains a NUL character, which an NNR st(v) name cannot hold")
    choice = options.plan.get(name) if options.plan else None
    weight = is_weight(name, array, options)
    if choice is None:
        plan = plan_tensor(array, options, weight=weight, name=name)
    else:
        plan = plan_choice(array, choice, options, weight=weight, name=name)
    if plan is None:
        raise UnsupportedError(
            f"tensor {name!r} has dtype {array.dtype}; NNR carries float32, float16/float64 "
            f"(lossy, or lossless on a QP grid) and integers that fit int32 ({options.mode} mode)"
        )
    return plan


@dataclass(frozen=True, slots=True)
class ModelHead:
    """What every data unit of a model is coded against: the plans fitted into the MPS's QP
    window, the units before the data units (start unit, MPS, and the topology unit when there
    is one; no integrity record), the unit context after them and the payload settings."""

    plans: list[TensorPlan]
    units: list[bytes]
    ctx: UnitContext
    settings: PayloadSettings

    def settings_for(self, name: str) -> PayloadSettings:
        """The settings of one tensor: a rate plan's choice (λ, codebook) where it has one."""
        options = self.settings.options
        choice = options.plan.get(name) if options.plan else None
        return self.settings if choice is None else replace(self.settings, options=choice_options(choice, options))


def model_head(
    sized_plans: Sequence[tuple[int, TensorPlan]],
    options: CodingOptions,
    profile: int,
    topology: bytes | None,
    storage_format: int,
    compress: bool,
    *,
    parent_signalling: bool = False,
) -> ModelHead:
    """Fit the plans (element count, plan per tensor) into one QP window and code the head units;
    shared by `encode_model` and the streaming writer (`_streaming.encode_model_to`), so that
    both make the same decisions and write the same bytes."""
    plans, mps_qp, qp_range = fit_plans(sized_plans, options)
    mps = ModelParameterSet(
        mps_qp_density=options.qp_density,
        mps_quantization_parameter=mps_qp,
        mps_parent_signalling_enabled_flag=parent_signalling,
    )
    ctx = UnitContext()
    head: list[bytes] = []
    units: list[StartUnit | ModelParameterSet | TopologyUnit] = [StartUnit(profile), mps]
    if topology is not None:
        units.append(topology_unit(topology, storage_format, compress))
    for unit in units:
        head.append(encode_unit(unit, ctx))
        ctx = advance_context(ctx, unit)
    return ModelHead(plans, head, ctx, PayloadSettings(options, mps_qp, qp_range, profile))


def thread_shares(sizes: list[int], count: int) -> list[int]:
    """Threads for the block rows of each tensor: its share of the model's elements.

    Tensors are already coded side by side, so a tensor gets extra threads only in proportion to
    its size: all cores for a model that is one big tensor, one thread each for many similar ones.
    """
    total = sum(sizes) or 1
    return [max(1, min(count, round(count * size / total))) for size in sizes]


def read_source(source: Callable[[], np.ndarray]) -> np.ndarray:
    """A tensor source's array; a source with a ``release()`` method (a memory-mapped tensor
    dropping its map) is released right after the read."""
    array = np.asarray(source())
    release = getattr(source, "release", None)
    if release is not None:
        release()
    return array


def tensor_unit(
    name: str,
    tensor: np.ndarray | Callable[[], np.ndarray],
    plan: TensorPlan,
    index: int | NodeId,
    ctx: UnitContext,
    settings: PayloadSettings,
    parent: UpdateParent | None = None,
    threads: int = 1,
) -> list[bytes]:
    """Size field, headers and payload of one NDU, checked before the payload is built; nothing
    for an update NDU that changes nothing.  `threads`: for the block rows of the tensor.

    `tensor` is the array or a source (`read_source`) of it. Given a source, the array is read
    here and dropped once quantized, before entropy coding, so that a big tensor's float32
    values, levels and payload are never all held at once; it is read again only if the unit
    falls back to raw float32 after coding (a lossless grid that does not code smaller).
    """
    if plan.payload_type == PayloadType.NNR_PT_RAW_FLOAT:
        return _raw_unit(name, _array(tensor), index, ctx)
    array = _array(tensor)
    size = array.size
    try:
        quantized = quantize_payload(name, array, plan, settings, index, parent, threads)
    except OutsideWindow:
        # No QP of the model's window keeps this tensor's promise (its grid, or its SNR
        # target): it travels exactly.
        return _raw_unit(name, array, index, ctx)
    except ValueError as exc:
        raise UnsupportedError(f"tensor {name!r}: {exc}") from exc
    del array  # the weights are not needed by CABAC: the peak of a big tensor drops by them
    try:
        coded = quantized.entropy_code()
    except ValueError as exc:
        raise UnsupportedError(f"tensor {name!r}: {exc}") from exc
    del quantized  # and the levels, before the unit is assembled
    if coded.empty:
        return []
    w = BitWriter()
    CompressedDataUnit(coded.header).write(w, ctx)
    head = w.getvalue()
    if plan.exact and plan.decompressed_format is None and len(coded.payload) >= 4 * size:
        # Lossless on a grid but no smaller than raw float32: send it raw.
        del coded
        return _raw_unit(name, _array(tensor), index, ctx)
    if len(head) + len(coded.payload) + 4 > MAX_UNIT_SIZE:
        raise UnsupportedError(f"tensor {name!r} does not fit one NNR unit (at most {MAX_UNIT_SIZE} bytes)")
    return [unit_size_field(len(head) + len(coded.payload)), head, coded.payload]


def _array(tensor: np.ndarray | Callable[[], np.ndarray]) -> np.ndarray:
    return tensor if isinstance(tensor, np.ndarray) else read_source(tensor)


def _raw_unit(name: str, array: np.ndarray, index: int | NodeId, ctx: UnitContext) -> list[bytes]:
    """An NNR_PT_RAW_FLOAT unit: the tensor's float32 bytes."""
    header = NduHeader(
        PayloadType.NNR_PT_RAW_FLOAT,
        topology_elem_id=name,
        node_id=(index if isinstance(index, NodeId) else NodeId(0, index, 0)) if ctx.is_profile_1 else None,
        tensor_dimensions=tuple(array.shape) or (1,),
        cabac_unary_length_minus1=CABAC_UNARY_LENGTH_MINUS1,
    )
    w = BitWriter()
    CompressedDataUnit(header).write(w, ctx)
    head = w.getvalue()
    if len(head) + array.nbytes + 4 > MAX_UNIT_SIZE:
        raise UnsupportedError(
            f"tensor {name!r} ({array.nbytes} bytes) does not fit one NNR unit (at most {MAX_UNIT_SIZE} bytes)"
        )
    payload = array.astype(RAW_FLOAT32, copy=False).tobytes(order="C")
    return [unit_size_field(len(head) + len(payload)), head, payload]
