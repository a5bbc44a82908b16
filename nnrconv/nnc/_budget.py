# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The memory budget of decoding: every size a stream declares is checked before allocating.

A bitstream of a few bytes can declare tensors of gigabytes (a row-skipped all-zero tensor
costs one bin per row). Decoding therefore adds up what the data units declare, in stream order
(each tensor's decoded bytes, plus the working memory of the largest ones decoding at once), and
refuses, naming the unit that crosses the budget, before anything is allocated.

The budget is `--max-memory` (CLI) or `memory_budget(...)` (API, a context manager); without
either it is half of the machine's physical memory (`os.sysconf`), or 4 GiB where that is unknown.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from nnrconv.core._errors import BitstreamError
from nnrconv.nnc._enums import PayloadType
from nnrconv.nnc._ndu import NduHeader
from nnrconv.nnc._payloads import output_dtype

__all__ = [
    "DEFAULT_SHARE",
    "check_declared_sizes",
    "check_streamed_sizes",
    "current_budget",
    "declared_bytes",
    "default_max_memory",
    "format_size",
    "memory_budget",
    "parse_size",
]

DEFAULT_SHARE = 0.5
"""Share of physical memory decoding may use by default."""

_FALLBACK = 4 << 30
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_budget: ContextVar[int | None] = ContextVar("nnrconv_memory_budget", default=None)


def physical_memory() -> int | None:
    """Bytes of physical memory, or None where the platform does not say."""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return pages * page_size if pages > 0 and page_size > 0 else None


def default_max_memory() -> int:
    """Half of physical memory (4 GiB when unknown): the budget without `--max-memory`."""
    total = physical_memory()
    return int(total * DEFAULT_SHARE) if total else _FALLBACK


def parse_size(text: str | int) -> int:
    """Bytes from `5G`, `800M`, `1.5g`, `64KiB` or a plain number of bytes (binary multiples).

    Raises:
        ValueError: not a size, or zero.
    """
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE.match(text)
        if match is None:
            raise ValueError(f"{text!r} is not a size (examples: 5G, 800M, 1048576)")
        value = math.floor(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if value <= 0:
        raise ValueError(f"a memory budget must be positive, got {text!r}")
    return value


def format_size(n: int) -> str:
    """`1.0 GiB`, `512 MiB`, `300 B`: for messages."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def current_budget() -> int:
    """The budget in force: the innermost `memory_budget`, else `default_max_memory()`."""
    value = _budget.get()
    return default_max_memory() if value is None else value


@contextmanager
def memory_budget(limit: str | int | None) -> Iterator[int]:
    """Decode within `limit` bytes (a size as `parse_size` reads it; None: the default) inside the block.

    Raises:
        ValueError: `limit` is not a size.
    """
    value = None if limit is None else parse_size(limit)
    token = _budget.set(value)
    try:
        yield current_budget()
    finally:
        _budget.reset(token)


def declared_bytes(header: NduHeader) -> tuple[int, int]:
    """(decoded bytes, extra working bytes while decoding) an NDU header declares.

    Entropy-coded tensors decode into int32 levels that become the float32 output in place; an
    output of another width (a decompressed data format) needs a second buffer meanwhile.
    """
    elements = math.prod(header.tensor_dimensions or (1,))
    payload_type = header.nnr_compressed_data_unit_payload_type
    itemsize = output_dtype(payload_type, header.nnr_decompressed_data_format).itemsize
    if payload_type == PayloadType.NNR_PT_RAW_FLOAT:
        return elements * 4, 0
    return elements * itemsize, elements * 4 if itemsize != 4 else 0


def check_declared_sizes(
    headers: Iterable[tuple[NduHeader, Callable[[str], BitstreamError]]], workers: int, budget: int | None = None
) -> int:
    """Refuse, before anything is allocated, a model whose declared tensors exceed the budget.

    `headers` are the data units in stream order, each with a function making an error located
    at that unit. The running total counts every decoded tensor plus the working memory of the
    `workers` largest tensors decoding at once. Returns the declared total.

    Raises:
        BitstreamError: at the first unit that takes the total over the budget.
    """
    budget = current_budget() if budget is None else budget
    total = 0
    extras: list[int] = []
    for header, error in headers:
        decoded, extra = declared_bytes(header)
        total += decoded
        if extra:
            extras = sorted([*extras, extra], reverse=True)[: max(1, workers)]
        needed = total + sum(extras)
        if needed > budget:
            dims = list(header.tensor_dimensions or (1,))
            raise error(
                f"tensor_dimensions {dims} declare {format_size(decoded)} of decoded data; the model up to this "
                f"unit needs {format_size(needed)}, above the memory budget of {format_size(budget)} (--max-memory)"
            )
    return total


def check_streamed_sizes(
    headers: Iterable[tuple[NduHeader, Callable[[str], BitstreamError]]], workers: int, budget: int | None = None
) -> int:
    """`check_declared_sizes` for decoding tensor by tensor (`nnc._streaming`): what is held at
    once is the tensor a writer is using, plus those decoding ahead (within the bytes of the
    largest tensor, at least one whatever its size). Refuses at the first unit whose tensor and
    its working memory, with the largest tensor before it, exceed the budget; `workers` does not
    change that bound (decoding ahead stays within the largest tensor's bytes). Returns the
    largest need found.

    Raises:
        BitstreamError: at the first unit that takes the need over the budget.
    """
    budget = current_budget() if budget is None else budget
    largest = 0
    worst = 0
    for header, error in headers:
        decoded, extra = declared_bytes(header)
        needed = largest + decoded + extra
        worst = max(worst, needed)
        if needed > budget:
            dims = list(header.tensor_dimensions or (1,))
            raise error(
                f"tensor_dimensions {dims} declare {format_size(decoded)} of decoded data; decoding it while the "
                f"largest tensor before it is in use needs {format_size(needed)}, above the memory budget of "
                f"{format_size(budget)} (--max-memory)"
            )
        largest = max(largest, decoded)
    return worst
