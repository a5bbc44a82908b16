# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Split inference: cut a model in two at a set of tensors, each part written in any output
format (`.onnx`, `.nnr`, `.nnr.onnx`) with the usual coding options.

The cut itself is the format plugin's (`FormatPlugin.split`, ONNX today); the parts are then
converted like any model, so a head can go to a phone as NNR and a tail stay native.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nnrconv import nnc
from nnrconv._files import staged_output
from nnrconv.core import FormatPlugin, OutputError, UnsupportedError

__all__ = ["SplitResult", "split"]


@dataclass(frozen=True, slots=True)
class SplitResult:
    """What `split` wrote: the two parts' paths and sizes, and the cut tensors."""

    head: Path
    tail: Path
    at: tuple[str, ...]
    head_bytes: int
    tail_bytes: int


def split(
    source: str | os.PathLike[str],
    at: Sequence[str],
    head: str | os.PathLike[str],
    tail: str | os.PathLike[str],
    *,
    from_format: str | None = None,
    force: bool = False,
    options: nnc.CodingOptions | None = None,
    jobs: int | None = None,
) -> SplitResult:
    """Cut `source` at the tensors `at` into `head` (inputs -> `at`) and `tail` (`at` -> outputs).

    Both outputs are checked before anything is written; each is converted from the native part
    as `convert` would (format from its name, `options` for NNR coding). An NNR input is first
    decoded to the native model its topology describes.

    Raises:
        UnsupportedError: the format cannot split, a cut tensor is unknown, or other tensors
            cross the cut (listed; exit code 5).
        OutputError: an output exists (without `force`), equals the input, or head equals tail.
    """
    from nnrconv._api import (
        NNR_FORMAT,
        _input_format,
        _output_format,
        _plugin,
        _require_input,
        check_output,
        convert,
        load,
        save,
    )

    source, head, tail = Path(source), Path(head), Path(tail)
    names = tuple(dict.fromkeys(n.strip() for n in at if n.strip()))
    if not names:
        raise ValueError("give at least one tensor to cut at")
    _require_input(source)
    if head.resolve() == tail.resolve():
        raise OutputError(f"{head}: head and tail must be different files")
    for target in (head, tail):
        check_output(target, inputs=(source,), force=force)
        _output_format(target, None)  # a name that says no format fails before any work
    name = _input_format(source, from_format)
    with tempfile.TemporaryDirectory(prefix="nnrconv-split-") as workdir:
        native = source
        if name == NNR_FORMAT:  # the model the bitstream carries, written natively first
            model = load(source, name)
            name = model.source_format
            if not name:
                raise UnsupportedError(f"{source}: the bitstream carries no topology, so there is no graph to split")
            native = Path(workdir) / f"model{_suffix(_plugin(name))}"
            save(model, native, name)
        fmt = _plugin(name)
        fmt.ensure_available()
        suffix = "".join(native.suffixes[-1:]) or ".model"
        native_head, native_tail = Path(workdir) / f"head{suffix}", Path(workdir) / f"tail{suffix}"
        fmt.split(native, names, native_head, native_tail)
        # both parts staged beside their targets and moved into place only when both are written
        with staged_output(head, force=force) as staged_head, staged_output(tail, force=force) as staged_tail:
            for part, target in ((native_head, staged_head), (native_tail, staged_tail)):
                convert(part, target, from_format=name, options=options, jobs=jobs)
    return SplitResult(head, tail, names, head.stat().st_size, tail.stat().st_size)


def _suffix(fmt: FormatPlugin) -> str:
    """A file suffix the format recognizes (from its first pattern, e.g. "*.onnx")."""
    pattern = fmt.patterns[0] if fmt.patterns else "*.model"
    return pattern[pattern.rfind("*") + 1 :] if "*" in pattern else f".{fmt.name}"
