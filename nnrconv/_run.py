# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Inference from any model nnrconv reads: plain, `.nnr`, or NNR inside a native container.

The model is decoded in memory by `load` and run by its format plugin: `run` through
`FormatPlugin.run` (as `check` does: one thread, deterministic), `session` by handing out the
runtime's own object (`FormatPlugin.session`). No plain copy of the model is written to disk.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnrconv import _api, _inputs
from nnrconv._files import check_output, staged_output
from nnrconv.core import FormatError, FormatPlugin, Model, OutputError, UnsupportedError

__all__ = ["OutputSummary", "RunResult", "run", "save_outputs", "session", "summarize"]


@dataclass(frozen=True, slots=True)
class OutputSummary:
    """What `nnrconv run` prints of one output without `--output`.

    Statistics are over the finite values of numeric outputs (None for other kinds, or when no
    value is finite); `nonfinite` counts NaN and infinite values.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    min: float | None
    max: float | None
    mean: float | None
    std: float | None
    nonfinite: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "shape": list(self.shape), "dtype": self.dtype, "min": self.min,
            "max": self.max, "mean": self.mean, "std": self.std, "nonfinite": self.nonfinite,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class RunResult:
    """The outputs of a run, by name, and how many feeds made them.

    With several feeds (an `.npz` stacking samples, or a folder of them), each output is the
    stack of the per-feed outputs along a new first axis.
    """

    format: str
    feeds: int
    outputs: dict[str, np.ndarray]


def _runner(model: Model, path: Path) -> FormatPlugin:
    if not model.source_format:
        raise UnsupportedError(f"{path}: holds tensors without a topology; there is no graph to run")
    fmt = _api._plugin(model.source_format)
    if not fmt.can_run(model):
        raise UnsupportedError(f"{path}: this {fmt.name} model has no graph to run (weights only)")
    return fmt


def session(path: str | os.PathLike[str], format: str | None = None) -> Any:
    """The runtime's own inference object for a plain, `.nnr` or embedded model.

    `onnxruntime.InferenceSession` (ONNX), `torch.export.ExportedProgram` or
    `torch.jit.ScriptModule` (PyTorch), a TensorFlow `ConcreteFunction` (frozen graph: positional
    inputs; SavedModel: its serving signature), or nnef-tools' `Interpreter` (NNEF). Built from
    the model decoded in memory.

    Raises:
        UnsupportedError: the model has no graph (tensors only, a state dict), or its format has
            no session.
        FrameworkMissingError: the runtime is not installed.
    """
    path = Path(path)
    model = _api.load(path, format)
    if not model.source_format:
        raise UnsupportedError(f"{path}: holds tensors without a topology; there is no graph to run")
    return _api._plugin(model.source_format).session(model)


def run(
    path: str | os.PathLike[str],
    inputs: str | os.PathLike[str] | Mapping[str, np.ndarray],
    format: str | None = None,
) -> RunResult:
    """Run the model at `path` in its format's runtime on `inputs`.

    Args:
        path: a plain model, a `.nnr` with a topology, or an embedded container (`.nnr.onnx`, ...).
        inputs: an `.npz` file or folder of them (see `_inputs.load_feeds`), or one feed.
        format: the input format, if detection should be overridden.

    Raises:
        FormatError: an input is missing or unknown, or misfits the model (dtype, rank, fixed size).
        UnsupportedError: the model has no graph, or the runtime cannot run it.
    """
    path = Path(path)
    model = _api.load(path, format)
    fmt = _runner(model, path)
    specs = fmt.input_specs(model)
    if isinstance(inputs, Mapping):
        wanted = [s.name for s in specs]
        missing, extra = [n for n in wanted if n not in inputs], sorted(set(inputs) - set(wanted))
        if missing or extra:
            what = f"input {missing[0]!r} is missing" if missing else f"array {extra[0]!r} is not an input"
            raise FormatError(f"{path}: {what} (the model takes {wanted})")
        feeds = [dict(inputs)]
    else:
        feeds = _inputs.load_feeds(Path(inputs), specs)
    results = [fmt.run(model, feed) for feed in feeds]
    if len(results) == 1:
        return RunResult(fmt.name, 1, results[0])
    stacked = {}
    for name in results[0]:
        shapes = {tuple(np.shape(r[name])) for r in results}
        if len(shapes) != 1:
            raise UnsupportedError(f"output {name!r} has different shapes over the feeds; run them one by one")
        stacked[name] = np.stack([r[name] for r in results])
    return RunResult(fmt.name, len(results), stacked)


def summarize(outputs: Mapping[str, np.ndarray]) -> list[OutputSummary]:
    """Name, shape, dtype and statistics of every output, in the runtime's order."""
    summaries = []
    for name, value in outputs.items():
        array = np.asarray(value)
        low = high = mean = std = None
        nonfinite = 0
        if array.dtype.kind in "fiub" and array.size:
            numbers = array.astype(np.float64)
            finite = np.isfinite(numbers)
            nonfinite = int(array.size - np.count_nonzero(finite))
            if nonfinite < array.size:
                values = numbers[finite]
                low, high = float(values.min()), float(values.max())
                mean, std = float(values.mean()), float(values.std())
        summaries.append(OutputSummary(name, tuple(array.shape), str(array.dtype), low, high, mean, std, nonfinite))
    return summaries


def save_outputs(
    outputs: Mapping[str, np.ndarray],
    target: str | os.PathLike[str],
    *,
    force: bool = False,
    sources: tuple[Path, ...] = (),
) -> None:
    """Write the outputs to an `.npz` (one array per output name), atomically.

    Raises:
        OutputError: `target` exists without `force`, is one of `sources`, or is a folder.
    """
    target = Path(target)
    if target.is_dir():
        raise OutputError(f"{target}: is a folder; give an .npz file name")
    check_output(target, inputs=sources, force=force)
    with staged_output(target, force=force) as staged, open(staged, "wb") as file:
        np.savez(file, **{name: np.asarray(value) for name, value in outputs.items()})


def format_number(value: float | None) -> str:
    """A statistic for the text output: 4 significant digits, `n/a` when there is none."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.4g}"
