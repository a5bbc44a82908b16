# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Per-tensor coding and decoding on a Dask distributed cluster (`--cluster tcp://host:8786`).

The client (this process) plans the model, chooses the parameter sets, submits one task per
tensor (`nnc._streaming.code_unit`, or `decode_unit` when decoding) within the same bounded
window as a local run, and writes the units in stream order as their results arrive. Every
decision that shapes the bytes is taken here or is deterministic per tensor, so the output is
byte-identical to a local run. A worker lost mid-job is Dask's to handle: the scheduler runs its
tasks again elsewhere (and `retries` re-runs a task that raised), and since the client writes
each unit once, in order, from the result of the task that finished, nothing is lost or written
twice.

Where the tensors come from:
- **shared storage** (default): a task carries the tensor's source, which names the file, the
  byte offset and the length (a memory-mapped safetensors span); the worker reads the span
  itself. The workers must see the input at the same path as the client.
- **sent** (`send_tensors`): the client reads each tensor and sends the array with its task.
  Workers need no access to the input; the client's network carries the model once.
Decoding always sends each unit's bytes to its task and receives the tensor.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from nnrconv.core import FrameworkMissingError, NNRConvError

__all__ = ["ClusterSettings", "DaskExecutor", "current", "using_cluster"]

TASK_RETRIES = 3
"""Times a task that raised (for example on a worker that ran out of memory) is run again."""


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """The executor the coders use, and whether tensors travel with their tasks."""

    executor: Any
    send_tensors: bool = False


_CURRENT: contextvars.ContextVar[ClusterSettings | None] = contextvars.ContextVar("nnrconv_cluster", default=None)


def current() -> ClusterSettings | None:
    """The cluster set by `using_cluster` around this call, if any."""
    return _CURRENT.get()


class DaskExecutor:
    """`submit(fn, *args)` on a Dask client: impure tasks (each runs once, unless it must run again)."""

    def __init__(self, client: Any, send_tensors: bool = False) -> None:
        self.client = client
        self.workers = max(1, sum(client.nthreads().values()))
        # Tensors the workers read themselves cost the client nothing while in flight; sent ones do.
        self.reads_own_tensors = not send_tensors

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False, retries=TASK_RETRIES)


@contextlib.contextmanager
def using_cluster(address: str | Any | None, *, send_tensors: bool = False) -> Iterator[ClusterSettings | None]:
    """Run the conversions inside the block on the Dask cluster at `address` (a scheduler
    address, or a `distributed.Client` already connected); None does nothing.

    Raises:
        FrameworkMissingError: dask distributed is not installed.
        NNRConvError: the scheduler cannot be reached.
    """
    if address is None:
        yield None
        return
    try:
        from distributed import Client
    except ImportError:
        raise FrameworkMissingError(
            "--cluster needs dask distributed, which is not installed; install it with: "
            "pip install 'nnrconv[distributed]'"
        ) from None
    own = not isinstance(address, Client)
    if own:
        try:
            client = Client(address, timeout=30, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise NNRConvError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    else:
        client = address
    settings = ClusterSettings(DaskExecutor(client, send_tensors), send_tensors)
    token = _CURRENT.set(settings)
    try:
        yield settings
    finally:
        _CURRENT.reset(token)
        if own:
            client.close()
