# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The progress bar of long conversions: total, percentage, rate and time left (rich).

Drawn on stderr only when it is a terminal and the command is not quiet, so pipes, logs and
`-q` stay clean; the bar disappears when the work ends (the summary line follows). The coders
call it with (tensor name, bytes) per tensor, in order; streaming coders first call
``start(total)`` with the bytes to come, which gives the percentage and the time left (without
it the bar shows the bytes done and the rate). For a sharded checkpoint they also call
``files(mapping)`` with each tensor's shard file, and the bar names the shard at work
("coding model-00002-of-00005.safetensors [2/5]"). rich is imported only when a bar is drawn.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["BarProgress"]


class BarProgress:
    """A rich progress bar fed by the `nnc.Progress` protocol (plus an optional `start`)."""

    def __init__(self, stream: Any) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._bar = Progress(
            TextColumn("{task.description}", style="bold"),
            BarColumn(),
            TaskProgressColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[tensor]}", style="dim"),
            console=Console(file=stream),
            transient=True,
        )
        self._task = self._bar.add_task("tensors", total=None, tensor="")
        self._label = "tensors"
        self._files: dict[str, str] = {}
        self._shards: dict[str, int] = {}
        self._bar.start()

    @classmethod
    @contextlib.contextmanager
    def for_stderr(cls, *, enabled: bool = True) -> Iterator[BarProgress | None]:
        """A bar on stderr when it is a terminal and `enabled`, else None."""
        stream = sys.stderr
        if not enabled or not stream.isatty():
            yield None
            return
        try:
            bar = cls(stream)
        except ImportError:  # rich missing: no bar, the conversion still runs
            yield None
            return
        try:
            yield bar
        finally:
            bar.close()

    def start(self, total: int, label: str = "tensors") -> None:
        """The bytes the coming calls will add up to (resets what was counted so far)."""
        self._label = label
        self._bar.update(self._task, total=total, completed=0, description=label)

    def files(self, mapping: dict[str, str]) -> None:
        """The shard file of each tensor (a sharded checkpoint): the bar then names the shard at work."""
        self._files = dict(mapping)
        self._shards = {file: k for k, file in enumerate(dict.fromkeys(mapping.values()), 1)}

    def __call__(self, name: str, nbytes: int) -> None:
        fields: dict[str, Any] = {}
        file = self._files.get(name)
        if file is not None:
            fields["description"] = self.description(file)
        self._bar.update(self._task, advance=nbytes, tensor=name if len(name) <= 48 else "…" + name[-47:], **fields)

    def description(self, file: str) -> str:
        """What the bar says while a shard's tensors are coded: the label, the file and its place."""
        return f"{self._label} {file} [{self._shards[file]}/{len(self._shards)}]"

    def close(self) -> None:
        self._bar.stop()
