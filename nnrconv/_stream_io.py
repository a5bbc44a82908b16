# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Conversions in bounded memory: `.nnr` written unit by unit, and read tensor by tensor.

`write_nnr` codes a model's tensors one window at a time (`nnc._streaming.encode_model_to`),
reading each from its source (a memory-mapped file span) only while it is coded, and writes
every unit to the (staged) output as soon as it is ready: the bytes are those of `encode`.
`open_nnr` maps a bitstream file and returns the model with lazy tensors, decoded ahead in
stream order while a writer consumes them, so that a format writing tensor by tensor (sharded
safetensors) holds a window of tensors, never the model. Streams that cannot be read lazily
(updates, LPS/QNT units) are decoded whole as before.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nnrconv import nnc
from nnrconv._carriage import source_defaults, with_roles
from nnrconv._cluster import current
from nnrconv._progress_files import announce_files
from nnrconv.core import DType, LazyTensor, Model, Tensor
from nnrconv.nnc._streaming import Executor, Prefetcher, encode_model_to, open_lazily

__all__ = ["open_nnr", "write_nnr"]


def write_nnr(
    model: Model,
    path: Path,
    *,
    options: nnc.CodingOptions | None = None,
    progress: nnc.Progress | None = None,
    executor: Executor | None = None,
    send_arrays: bool = False,
) -> int:
    """Code `model` into the file `path` unit by unit; returns its size.

    `executor` runs the per-tensor coding (a Dask client for `--cluster`); with `send_arrays`
    tensors are read here and sent to it, else each worker reads its tensor from the file the
    model was loaded from (which it must see at the same path).
    """
    from nnrconv import _api

    cluster = current()
    if executor is None and cluster is not None:
        executor, send_arrays = cluster.executor, cluster.send_tensors
    options = with_roles(model, source_defaults(model, options or nnc.CodingOptions()))
    sources, topology, code, compress = _api.encoding_inputs(model, options)
    announce_files(progress, model)
    with open(path, "w+b") as out:  # read back for the integrity record's digest
        return encode_model_to(
            out,
            list(sources.items()),
            topology,
            code,
            compress_topology=compress,
            options=options,
            progress=progress,
            executor=executor,
            send_arrays=send_arrays,
        )


class _Fetch:
    """A lazy tensor's producer: the prefetched decode of one unit (picklable fields only)."""

    __slots__ = ("name", "prefetcher", "progress")

    def __init__(self, prefetcher: Prefetcher, name: str, progress: nnc.Progress | None) -> None:
        self.prefetcher, self.name, self.progress = prefetcher, name, progress

    def __call__(self) -> Any:
        array = self.prefetcher.get(self.name)
        if self.progress is not None:
            self.progress(self.name, array.nbytes)
        return array


@contextlib.contextmanager
def open_nnr(
    path: Path,
    *,
    jobs: int | None = None,
    progress: nnc.Progress | None = None,
    executor: Executor | None = None,
) -> Iterator[Model | None]:
    """The model of a bitstream file with lazily decoded tensors, valid inside the block; None
    when the stream must be decoded whole (then use `decode`).

    The stream is verified against its integrity record first and its declared sizes checked
    against the memory budget (`nnc._streaming.open_lazily`).

    Raises:
        BitstreamError, UnsupportedError: as `decode`, for the integrity check and the units'
            headers here, and for a tensor's payload when it is first used.
    """
    from nnrconv import _api

    with open(path, "rb") as f:
        try:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file: `decode` reports it
            yield None
            return
    prefetcher = None
    streamed = None
    try:
        cluster = current()
        if executor is None and cluster is not None:
            executor = cluster.executor
        workers = getattr(executor, "workers", None) or jobs or os.cpu_count() or 1
        streamed = open_lazily(mapped, source=str(path), workers=workers)
        if streamed is None:
            yield None
            return
        prefetcher = Prefetcher(streamed, jobs=jobs, executor=executor)
        start = getattr(progress, "start", None)
        if start is not None:  # a progress bar: the bytes to decode
            start(sum(math.prod(u.shape) * u.dtype.itemsize for u in streamed.units), "decoding")
        tensors: dict[str, Tensor] = {
            u.name: LazyTensor(u.name, DType.from_numpy(u.dtype), u.shape, _Fetch(prefetcher, u.name, progress))
            for u in streamed.units
        }
        model = _api.model_from_parts(streamed.head, tensors, str(path), len(mapped))
        announce_files(progress, model)  # the shards the tensors are written to
        yield model
    finally:
        if prefetcher is not None:
            prefetcher.close()
        if streamed is not None:
            with contextlib.suppress(BufferError, ValueError):
                streamed.data.release()
        with contextlib.suppress(BufferError):  # an array still viewing the map keeps it alive
            mapped.close()
