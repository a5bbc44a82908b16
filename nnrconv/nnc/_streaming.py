# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Whole models in bounded memory: tensors read, coded and written one window at a time.

`encode_model_to` writes the same bytes as `encode_model` (it makes the same decisions: a first
pass plans every tensor, which fixes the model parameter set, and a second codes them), but it
takes each tensor from a zero-argument source when it is needed, writes each unit to the output
as soon as it and all units before it are coded, and keeps at most a window of tensors in
flight: as many as there are workers, and no more float32 bytes than the largest tensor holds
(one big tensor is always allowed alone). A source may have a ``release()`` method (a
memory-mapped tensor dropping its map); it is called after each read.

`open_lazily` parses a bitstream (a memory-mapped file) without decoding it and returns one
`LazyUnit` per tensor, decoded on demand; `Prefetcher` decodes ahead in stream order, within the
same kind of window, so that a writer asking for tensors in order finds them ready.

Both take an `executor` (anything with ``submit(fn, *args) -> future``, such as a
`concurrent.futures` pool or a Dask client): the functions they submit are module-level and
their arguments picklable, so the work can run in other processes or on other machines while
the caller orders and writes the units.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, BinaryIO, Protocol

import numpy as np

from nnrconv.core._errors import BitstreamError
from nnrconv.nnc._budget import check_streamed_sizes
from nnrconv.nnc._coding import CodingOptions, TensorPlan
from nnrconv.nnc._container import Progress
from nnrconv.nnc._decoding import DecodedModel, decode_model, decode_parts
from nnrconv.nnc._encoding import model_head, plan_named, read_source, tensor_unit, thread_shares
from nnrconv.nnc._enums import TopologyStorageFormat
from nnrconv.nnc._framing import advance_context, read_units, with_source
from nnrconv.nnc._heap import trim
from nnrconv.nnc._integrity import RECORD_INDEX, StreamSealer, check_stream
from nnrconv.nnc._mps import LayerParameterSet, ModelParameterSet
from nnrconv.nnc._ndu import CompressedDataUnit
from nnrconv.nnc._payloads import PayloadSettings, output_dtype
from nnrconv.nnc._units import QuantizationUnit, StartUnit, UnitContext

__all__ = [
    "Executor",
    "LazyUnit",
    "Prefetcher",
    "Source",
    "StreamedModel",
    "code_unit",
    "encode_model_to",
    "open_lazily",
]

Source = Callable[[], np.ndarray]


class Executor(Protocol):
    """What runs per-tensor work: a `concurrent.futures` executor or a Dask client."""

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Any:
        """Schedule ``fn(*args)``; the result has ``.result()``."""


# -- encoding ----------------------------------------------------------------------------------


def code_unit(
    name: str,
    source: Source | np.ndarray,
    plan: TensorPlan,
    index: int,
    ctx: UnitContext,
    settings: PayloadSettings,
    threads: int = 1,
) -> list[bytes]:
    """One complete NDU of a planned tensor, in parts (size field, header, payload; not joined,
    which would copy the payload): the unit of distributed work.

    `source` is the array itself (sent to the worker) or a source the worker reads (a
    memory-mapped span of a file on storage the worker shares with the caller), read by
    `tensor_unit` so that it can drop the array before entropy coding.
    """
    return tensor_unit(name, source, plan, index, ctx, settings, threads=threads)


@dataclass(frozen=True, slots=True)
class _Planned:
    name: str
    source: Source
    size: int
    plan: TensorPlan


def _plan_all(tensors: Sequence[tuple[str, Source]], options: CodingOptions) -> list[_Planned]:
    planned: list[_Planned] = []
    seen: set[str] = set()
    for name, source in tensors:
        array = read_source(source)
        plan = plan_named(name, array, options, seen)
        planned.append(_Planned(name, source, int(array.size), plan))
        del array
    return planned


def encode_model_to(
    out: BinaryIO,
    tensors: Sequence[tuple[str, Source]],
    topology: bytes,
    topology_storage_format: int,
    *,
    compress_topology: bool = True,
    general_profile_idc: int = 1,
    options: CodingOptions | None = None,
    progress: Progress | None = None,
    executor: Executor | None = None,
    send_arrays: bool = False,
) -> int:
    """`encode_model`, written to `out` unit by unit in bounded memory; returns the bytes written.

    The integrity record (unit 2) covers every unit, so its place is reserved and it is written
    last: `out` must be seekable and readable (a file opened ``w+b``), as the data units are
    read back, a chunk at a time, for its digest.

    Args:
        tensors: (name, source) pairs in NDU order; each source is called once to plan the
            tensor and once to code it (a third time if its unit falls back to raw float32
            after coding), and must give the same array every time.
        executor: runs `code_unit` (default: a thread pool of `options.workers`).
        send_arrays: read each tensor here and send the array to the executor, instead of
            sending its source (for workers that do not share the caller's storage).

    Raises:
        As `encode_model`.
    """
    options = options or CodingOptions()
    if general_profile_idc not in (0, 1):
        raise ValueError(f"general_profile_idc must be 0 or 1, got {general_profile_idc!r}")
    planned = _plan_all(tensors, options)
    trim()  # what planning freed (each tensor was read once), before coding holds tensors again
    head = model_head(
        [(p.size, p.plan) for p in planned],
        options,
        general_profile_idc,
        topology,
        topology_storage_format,
        compress_topology,
    )
    planned = [replace(p, plan=plan) for p, plan in zip(planned, head.plans, strict=True)]
    sealer = StreamSealer(len(head.units) + len(planned))
    start_offset = out.tell()
    writer = _UnitWriter(out, sealer)
    for unit in head.units[:RECORD_INDEX]:  # start unit, MPS
        writer.write([unit])
    record_at = writer.reserve(sealer.placeholder)
    for unit in head.units[RECORD_INDEX:]:  # the topology unit
        writer.write([unit])
    ctx = head.ctx
    start = getattr(progress, "start", None)
    if start is not None:  # a progress bar: the total gives percentage and time left
        start(4 * sum(p.size for p in planned), "coding")
    shares = thread_shares([p.size for p in planned], options.workers)
    # The window: tasks in flight (an executor may say how many it runs at once) and the float32
    # bytes they hold here (none when the executor's workers read their own tensors).
    workers = getattr(executor, "workers", options.workers)
    budget = 4 * max((p.size for p in planned), default=0)
    if getattr(executor, "reads_own_tensors", False) and not send_arrays:
        budget = math.inf
    own = executor is None
    pool: Any = ThreadPoolExecutor(max(1, min(options.workers, len(planned) or 1))) if own else executor
    window: deque[tuple[Any, _Planned]] = deque()
    in_flight = 0
    try:
        for index, item in enumerate(planned):
            cost = 4 * item.size
            while window and (len(window) >= workers or in_flight + cost > budget):
                in_flight -= 4 * _write_oldest(writer, window, progress)
            source: Source | np.ndarray = read_source(item.source) if send_arrays else item.source
            settings = head.settings_for(item.name)
            window.append(
                (pool.submit(code_unit, item.name, source, item.plan, index, ctx, settings, shares[index]), item)
            )
            in_flight += cost
        while window:
            _write_oldest(writer, window, progress)
    finally:
        if own:
            pool.shutdown(wait=True, cancel_futures=True)
    end = out.tell()
    record = sealer.record(partial(_read_back, out))
    out.seek(record_at)
    out.write(record)
    out.seek(end)
    return end - start_offset


class _UnitWriter:
    """Writes units to the output and notes each for the integrity record."""

    def __init__(self, out: BinaryIO, sealer: StreamSealer) -> None:
        self.out, self.sealer = out, sealer

    def reserve(self, placeholder: bytes) -> int:
        """Write the record's placeholder (not covered); returns its offset."""
        offset = self.out.tell()
        self.out.write(placeholder)
        return offset

    def write(self, parts: Sequence[bytes]) -> None:
        offset = self.out.tell()
        for part in parts:
            self.out.write(part)
        self.sealer.add(offset, parts)


_READ_CHUNK = 1 << 20


def _read_back(out: BinaryIO, offset: int, size: int) -> Iterator[bytes]:
    """A written unit's bytes, a chunk at a time (the position is restored by the caller)."""
    out.seek(offset)
    while size > 0:
        chunk = out.read(min(size, _READ_CHUNK))
        if not chunk:
            raise OSError(f"the output ends before byte {offset + size}: cannot read back a written unit")
        size -= len(chunk)
        yield chunk


def _write_oldest(writer: _UnitWriter, window: deque, progress: Progress | None) -> int:
    """Wait for the oldest unit in flight and write it; returns its tensor's elements."""
    future, item = window.popleft()
    parts = future.result()
    writer.write(parts)
    if progress is not None:
        progress(item.name, 4 * item.size)
    return item.size


# -- decoding ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LazyUnit:
    """A tensor still coded: where its NDU is, what it decodes to, and how to decode it."""

    name: str
    unit_index: int
    byte_offset: int
    size: int
    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass(slots=True)
class StreamedModel:
    """What `open_lazily` finds: the decoded head (topology, MPS) and the tensors still coded."""

    head: DecodedModel
    parameter_sets: bytes
    units: list[LazyUnit]
    data: Any
    source: str
    max_elements: int
    mapped: Any = None

    def decode(self, unit: LazyUnit, threads: int = 1) -> np.ndarray:
        """Decode one tensor (errors name the file, unit, byte offset and tensor)."""
        return decode_unit(self.parameter_sets, unit, self.ndu_bytes(unit), self.source, self.max_elements, threads)

    def ndu_bytes(self, unit: LazyUnit) -> bytes:
        """A copy of the unit's bytes; from a memory-mapped file, its pages are then dropped from
        this process (they stay in the page cache), so reading a big file does not grow RSS."""
        chunk = bytes(self.data[unit.byte_offset : unit.byte_offset + unit.size])
        drop = _page_dropper(self.mapped)
        if drop is not None:
            drop(unit.byte_offset, unit.size)
        return chunk


def decode_unit(
    parameter_sets: bytes, unit: LazyUnit, ndu: bytes, source: str, max_elements: int, threads: int = 1
) -> np.ndarray:
    """The unit of distributed decoding: one NDU's tensor, given the parameter sets."""
    try:
        return decode_parts(parameter_sets, {unit.name: ndu}, jobs=threads, max_elements=max_elements)[unit.name]
    except BitstreamError as exc:
        offset = unit.byte_offset + (exc.byte_offset or 0)
        located = BitstreamError(exc.reason, unit_index=unit.unit_index, byte_offset=offset, tensor=unit.name)
        raise with_source(located, source) from None


def open_lazily(
    data: Any, *, source: str = "<bytes>", max_elements: int | None = None, workers: int = 1
) -> StreamedModel | None:
    """Parse a bitstream without decoding its tensors; None when it must be decoded whole.

    Streams whose NDUs each carry one named tensor under the start unit and MPS (what nnrconv
    and NNCodec write) open lazily; LPS, QNT or aggregate units, index-named tensors or an
    incremental update (parent signalling) need `decode_model`.

    As `decode_model`, a stream with an integrity record is verified first (a memory-mapped
    file drops each unit's pages once read), and the sizes the data units declare are checked
    against the memory budget, here for what decoding tensor by tensor holds at once
    (`check_streamed_sizes`, `workers` decoding ahead).

    Raises:
        BitstreamError: a unit fails its integrity check, or the declared sizes exceed the
            budget (named by unit, byte offset and tensor).
    """
    from nnrconv.nnc import cabac

    view = memoryview(data)
    try:
        check = check_stream(view, _page_dropper(data))
    except BitstreamError as exc:
        raise with_source(exc, source) from None
    units = read_units(view, source)
    head = bytearray()
    params = bytearray()
    lazy: list[LazyUnit] = []
    ctx = UnitContext()
    headers = []
    for parsed in units:
        unit = parsed.unit
        if parsed.index == check.record_index:
            continue  # the integrity record, already verified
        span = view[parsed.byte_offset : parsed.byte_offset + parsed.size]
        if isinstance(unit, (LayerParameterSet, QuantizationUnit)) or parsed.members:
            return None
        if isinstance(unit, CompressedDataUnit):
            header = unit.header
            if header.topology_elem_id is None or header.nnr_multiple_topology_elements_present_flag:
                return None
            if header.parent_node_id is not None or header.tensor_dimensions is None:
                return None
            dims = tuple(header.tensor_dimensions) or (1,)
            dtype = output_dtype(header.nnr_compressed_data_unit_payload_type, header.nnr_decompressed_data_format)
            lazy.append(LazyUnit(header.topology_elem_id, parsed.index, parsed.byte_offset, parsed.size, dims, dtype))
            headers.append((header, _locate(source, lazy[-1])))
        else:
            head += span
            if isinstance(unit, (StartUnit, ModelParameterSet)):
                params += span
        ctx = advance_context(ctx, unit)
    if len({u.name for u in lazy}) != len(lazy):
        return None  # a tensor sent twice: decode_model reports it
    decoded = replace(decode_model(bytes(head), source=source), unit_count=len(units), verified=check.verified)
    if decoded.topology_storage_format == TopologyStorageFormat.NNR_TPL_REFLIST:
        return None
    check_streamed_sizes(headers, workers)
    cap = cabac.DEFAULT_MAX_ELEMENTS if max_elements is None else max_elements
    return StreamedModel(decoded, bytes(params), lazy, view, source, cap, data)


def _page_dropper(data: Any) -> Callable[[int, int], None] | None:
    """For a memory-mapped file: drop a span's pages from this process once read (they stay in
    the page cache), so that verifying or decoding a big file does not grow its memory."""
    if not isinstance(data, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED"):
        return None

    def drop(offset: int, size: int) -> None:
        start = offset - offset % mmap.PAGESIZE
        with contextlib.suppress(OSError, ValueError):
            data.madvise(mmap.MADV_DONTNEED, start, offset + size - start)

    return drop


def _locate(source: str, unit: LazyUnit) -> Callable[[str], BitstreamError]:
    def error(reason: str) -> BitstreamError:
        located = BitstreamError(reason, unit_index=unit.unit_index, byte_offset=unit.byte_offset, tensor=unit.name)
        return with_source(located, source)

    return error


class Prefetcher:
    """Decodes a `StreamedModel`'s tensors ahead, in stream order, within a memory window.

    `get(name)` returns a tensor's array; tensors asked for in stream order are decoded ahead on
    the executor (as many as there are workers, and no more bytes than the largest tensor), so
    a writer consuming them in order keeps every worker busy. A tensor asked for out of order is
    decoded on the spot.
    """

    def __init__(self, model: StreamedModel, *, jobs: int | None = None, executor: Executor | None = None) -> None:
        self._model = model
        self._workers = getattr(executor, "workers", None) or jobs or os.cpu_count() or 1
        self._own = executor is None
        self._pool: Any = ThreadPoolExecutor(self._workers) if executor is None else executor
        self._order = {u.name: i for i, u in enumerate(model.units)}
        self._budget = max((math.prod(u.shape) * u.dtype.itemsize for u in model.units), default=0)
        self._next = 0
        self._ahead: dict[str, tuple[Future, int]] = {}
        self._held = 0  # bytes of the tensor last handed out, in use until the next `get`
        self._threads = _decode_shares(model.units, self._workers)

    def _fill(self) -> None:
        in_flight = self._held + sum(cost for _, cost in self._ahead.values())
        units = self._model.units
        while self._next < len(units) and len(self._ahead) < self._workers:
            unit = units[self._next]
            cost = math.prod(unit.shape) * unit.dtype.itemsize
            if (self._ahead or self._held) and in_flight + cost > self._budget:
                break
            ndu = self._model.ndu_bytes(unit)
            m = self._model
            future = self._pool.submit(
                decode_unit, m.parameter_sets, unit, ndu, m.source, m.max_elements, self._threads[self._next]
            )
            self._ahead[unit.name] = (future, cost)
            in_flight += cost
            self._next += 1

    def get(self, name: str) -> np.ndarray:
        """The decoded tensor `name` (the caller is done with the one it asked for before)."""
        self._held = 0
        if name not in self._ahead and self._order.get(name, -1) == self._next:
            self._fill()
        entry = self._ahead.pop(name, None)
        if entry is None:
            return self._model.decode(self._model.units[self._order[name]])
        result = entry[0].result()
        self._held = entry[1]
        self._fill()
        return result

    def close(self) -> None:
        """Stop decoding ahead (pending work is cancelled)."""
        self._ahead.clear()
        if self._own:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _decode_shares(units: list[LazyUnit], count: int) -> list[int]:
    sizes = [math.prod(u.shape) for u in units]
    total = sum(sizes) or 1
    return [max(1, min(count, round(count * size / total))) for size in sizes]


def iter_decoded(model: StreamedModel, *, jobs: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """Every tensor in stream order, decoded ahead within the window."""
    prefetcher = Prefetcher(model, jobs=jobs)
    try:
        for unit in model.units:
            yield unit.name, prefetcher.get(unit.name)
    finally:
        prefetcher.close()
