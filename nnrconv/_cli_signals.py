# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Ctrl-C and SIGTERM end a run the same clean way: staging folders removed, one line, 130 or 143.

Python turns SIGINT into KeyboardInterrupt, which unwinds through every `finally` (so
`staged_output` removes its staging folder). SIGTERM, what service managers and `kill` send,
would end the process on the spot; while the CLI runs it raises `Terminated`, a
KeyboardInterrupt, so it unwinds the same way.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

__all__ = ["EXIT_INTERRUPTED", "EXIT_TERMINATED", "Terminated", "interruption", "terminate_as_interrupt"]

EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived while the CLI was running."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` (main thread only; elsewhere a no-op)."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interruption(exc: BaseException) -> tuple[str, int]:
    """The line to print and the exit code for an interrupt (Ctrl-C) or a termination."""
    if isinstance(exc, Terminated):
        return "nnrconv: terminated", EXIT_TERMINATED
    return "nnrconv: interrupted", EXIT_INTERRUPTED
