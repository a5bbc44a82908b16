# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`--max-memory SIZE` for the commands that decode (convert, inspect, check); salvage warnings."""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import click

from nnrconv import nnc
from nnrconv.nnc._budget import format_size


class _Size(click.ParamType):
    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            return nnc.parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def max_memory_option(command: Callable[..., None]) -> Callable[..., None]:
    """Add `--max-memory` to a command and decode within that budget while it runs."""

    @functools.wraps(command)
    def run(*args: Any, max_memory: int | None, **kwargs: Any) -> None:
        with nnc.memory_budget(max_memory):
            command(*args, **kwargs)

    default = format_size(nnc.default_max_memory())
    return click.option(
        "--max-memory",
        type=_Size(),
        metavar="SIZE",
        help=f"Refuse (exit 4) a bitstream whose declared tensors need more memory than SIZE (5G, 800M, bytes) "
        f"to decode, before allocating (default: half of physical memory, here {default}).",
    )(run)


@contextlib.contextmanager
def salvage_warnings(*, quiet: bool = False) -> Iterator[None]:
    """Print each `SalvageWarning` raised inside the block as one `nnrconv: warning:` line on stderr."""
    from nnrconv._salvage import SalvageWarning

    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SalvageWarning)
            yield
    finally:
        # Replayed once the recording has ended: inside it, showwarning would record each
        # warning again into the list being read, without end.
        for item in caught:
            if issubclass(item.category, SalvageWarning):
                click.echo(f"nnrconv: warning: {item.message}", err=True)
            elif not quiet:
                warnings.showwarning(item.message, item.category, item.filename, item.lineno)
