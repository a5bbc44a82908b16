# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Round-trip checks: does the model still compute the same thing after NNR coding?

A check codes the model exactly as a conversion would, decodes it back to the native format in
memory, and runs original and reconstruction side by side in the format's own runtime (the
plugin's `run`). The report holds output errors, per-tensor weight SNR, sizes and times.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnrconv import _api, _inputs, nnc
from nnrconv._check_compare import OutputReport, compare_output, degeneracy
from nnrconv.core import FormatPlugin, InputSpec, Model, UnsupportedError, UsageError
from nnrconv.core._narrow import numeric_view
from nnrconv.nnc import snr_db

__all__ = ["CheckReport", "OutputReport", "TensorReport", "check", "random_inputs"]

DEFAULT_WORST = 10
"""Weights listed in the text report (the lowest SNR first); JSON lists every weight."""


@dataclass(frozen=True, slots=True)
class TensorReport:
    """How one weight differs after coding; SNR is infinite for bit-identical tensors."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    bit_identical: bool
    max_abs: float
    snr_db: float
    within_tolerance: bool = True


@dataclass(slots=True)
class CheckReport:
    """Everything `nnrconv check` prints (and `--json` serialises)."""

    source: str
    format: str
    original_bytes: int
    nnr_bytes: int
    parameters: int
    bits_per_parameter: float
    atol: float | None
    rtol: float | None
    outputs: list[OutputReport] = field(default_factory=list)
    tensors: list[TensorReport] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    inputs: str = ""
    """Where the inputs came from: a file, or synthesized (seed, count, shapes)."""

    @property
    def warnings(self) -> list[str]:
        """What makes the verdict weaker than it looks: degenerate outputs."""
        flagged = [f"{o.name} ({o.degenerate})" for o in self.outputs if o.degenerate]
        if not flagged:
            return []
        return [
            f"degenerate outputs: SNR is meaningless for {', '.join(flagged)} on these inputs; "
            f"give real inputs with --inputs or larger shapes with --input-shape"
        ]

    def worst_tensors(self, count: int | None) -> list[TensorReport]:
        """The `count` weights of lowest SNR (changed ones first), or all in model order for None."""
        if count is None:
            return list(self.tensors)
        ranked = sorted(self.tensors, key=lambda t: (t.bit_identical, t.snr_db))
        return ranked[: max(count, 0)]

    @property
    def exact(self) -> bool:
        """Bit-identical weights and outputs: a lossless round trip."""
        return all(t.bit_identical for t in self.tensors) and all(o.max_abs == 0 for o in self.outputs)

    @property
    def runnable(self) -> bool:
        """False when the model has no graph to run and only its tensors were compared."""
        return bool(self.outputs)

    @property
    def passed(self) -> bool:
        """Outputs within tolerance; for models without a graph, the tensors themselves."""
        if self.outputs:
            return all(o.within_tolerance for o in self.outputs)
        return all(t.within_tolerance for t in self.tensors)

    @property
    def ratio(self) -> float:
        return self.nnr_bytes / self.original_bytes if self.original_bytes else 0.0

    def to_json(self, worst: int | None = None) -> dict:
        """The report as plain JSON types; `worst` limits the weights listed (None: all)."""

        def clean(value: float | None) -> float | str | None:
            if value is None or math.isfinite(value):
                return value
            if math.isnan(value):
                return None
            return "inf" if value > 0 else "-inf"

        return {
            "source": self.source,
            "format": self.format,
            "exact": self.exact,
            "passed": self.passed,
            "runnable": self.runnable,
            "atol": self.atol,
            "rtol": self.rtol,
            "inputs": self.inputs,
            "warnings": self.warnings,
            "sizes": {
                "original_bytes": self.original_bytes,
                "nnr_bytes": self.nnr_bytes,
                "ratio": self.ratio,
                "parameters": self.parameters,
                "bits_per_parameter": self.bits_per_parameter,
            },
            "outputs": [
                {
                    "name": o.name,
                    "shape": list(o.shape),
                    "max_abs": clean(o.max_abs),
                    "max_rel": clean(o.max_rel),
                    "snr_db": clean(o.snr_db),
                    "argmax_agreement": o.argmax_agreement,
                    "cosine": o.cosine,
                    "degenerate": o.degenerate,
                    "feeds": o.feeds,
                    "within_tolerance": o.within_tolerance,
                }
                for o in self.outputs
            ],
            "weights_listed": len(self.worst_tensors(worst)),
            "weights_total": len(self.tensors),
            "tensors": [
                {
                    "name": t.name,
                    "dtype": t.dtype,
                    "shape": list(t.shape),
                    "bit_identical": t.bit_identical,
                    "max_abs": clean(t.max_abs),
                    "snr_db": clean(t.snr_db),
                    "within_tolerance": t.within_tolerance,
                }
                for t in self.worst_tensors(worst)
            ],
            "seconds": self.seconds,
        }


def random_inputs(specs: list[InputSpec], seed: int) -> dict[str, np.ndarray]:
    """One seeded feed shaped exactly as the specs' `shape` (free dims as the plugin filled them).

    Kept for the round-trip test kit; `check` resolves free dims with `_inputs` instead.
    """
    shapes = {spec.name: tuple(spec.shape) for spec in specs}
    plain = [InputSpec(s.name, s.dtype, tuple(s.shape), None, s.value_range) for s in specs]
    return _inputs.synthesize_feeds(plain, 1, seed, shapes)[0]


def check(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    inputs: str | os.PathLike[str] | Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]] | None = None,
    seed: int = 0,
    atol: float | None = None,
    rtol: float | None = None,
    options: nnc.CodingOptions | None = None,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    samples: int = 1,
) -> CheckReport:
    """Round-trip `path` through NNR and compare the native runtime's outputs before and after.

    Args:
        path: a native model (any format whose plugin implements `run`).
        format: its format, if detection should be overridden.
        inputs: an `.npz` file or folder of them (see `_inputs.load_feeds`), one feed (a mapping
            of arrays) or a list of feeds; default: `samples` seeded synthetic feeds.
        seed: seed of the synthetic inputs.
        atol, rtol: tolerances; an output fails when |a - b| > atol + rtol*|a| anywhere.
        options: how tensors are coded, exactly as a conversion would (default: SNR target).
        input_shapes: sizes of free input dimensions, by input name (synthetic inputs).
        samples: how many synthetic feeds (at least 1).

    Raises:
        UnsupportedError: the format has no runner, or the runtime cannot run the model.
        UsageError: `input_shapes` misfit the model's inputs, or `samples` < 1.
        FormatError: an inputs file is unreadable or misfits the model's inputs.
    """
    path = Path(path)
    if samples < 1:
        raise UsageError(f"--samples {samples}: at least one sample is needed")
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    model = _api.load(path, format)
    fmt = _api._plugin(model.source_format) if model.source_format else None
    runnable = fmt is not None and fmt.can_run(model)
    seconds["load"] = time.perf_counter() - started

    feeds: list[dict[str, np.ndarray]] = []
    described = ""
    first: dict[str, np.ndarray] | None = None
    if runnable:
        assert fmt is not None
        mark = time.perf_counter()
        specs = fmt.input_specs(model)
        if inputs is None:
            feeds, described, first = _synthesized(fmt, model, specs, seed, input_shapes or {}, samples)
        else:
            feeds, described = _feeds(specs, inputs, seed, input_shapes or {}, samples)
        seconds["inputs"] = time.perf_counter() - mark
    elif inputs is not None or input_shapes:
        raise UnsupportedError(f"{path}: the model has no graph to run, so --inputs/--input-shape cannot be used")

    mark = time.perf_counter()
    data = _api.encode(model, options=options)
    seconds["encode"] = time.perf_counter() - mark
    mark = time.perf_counter()
    restored = _api.decode(data, source=f"{path} (coded)", jobs=options.jobs if options else None)
    seconds["decode"] = time.perf_counter() - mark

    outputs: list[OutputReport] = []
    if runnable:
        assert fmt is not None
        outputs = _run_both(fmt, model, restored, feeds, atol, rtol, seconds, first)

    parameters = sum(t.size for t in model)
    report = CheckReport(
        source=str(path),
        format=fmt.name if fmt is not None else "tensors",
        original_bytes=_api._disk_size(path),
        nnr_bytes=len(data),
        parameters=parameters,
        bits_per_parameter=8 * len(data) / parameters if parameters else 0.0,
        atol=atol,
        rtol=rtol,
        tensors=_tensor_reports(model, restored, atol, rtol),
        outputs=outputs,
        inputs=described,
    )
    seconds["total"] = time.perf_counter() - started
    report.seconds = seconds
    return report


def _feeds(
    specs: list[InputSpec],
    inputs: str | os.PathLike[str] | Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]] | None,
    seed: int,
    shapes: Mapping[str, tuple[int, ...]],
    samples: int,
) -> tuple[list[dict[str, np.ndarray]], str]:
    """The feeds to run, and a line saying where they came from."""
    if inputs is None:
        feeds = _inputs.synthesize_feeds(specs, samples, seed, shapes)
        return feeds, _describe(feeds, seed)
    if shapes:
        raise UsageError("--input-shape shapes synthesized inputs; it cannot combine with --inputs")
    if isinstance(inputs, Mapping):
        return [dict(inputs)], "given (1 feed)"
    if isinstance(inputs, (str, os.PathLike)):
        feeds = _inputs.load_feeds(Path(inputs), specs)
        return feeds, f"{inputs} ({len(feeds)} feed{'s' * (len(feeds) != 1)})"
    feeds = [dict(feed) for feed in inputs]
    return feeds, f"given ({len(feeds)} feeds)"


def _describe(feeds: list[dict[str, np.ndarray]], seed: int) -> str:
    first = feeds[0] if feeds else {}
    dims = ", ".join(f"{name} {list(array.shape)} {array.dtype}" for name, array in first.items())
    return f"synthesized (seed {seed}, {len(feeds)} sample{'s' * (len(feeds) != 1)}): {dims}"


def _synthesized(
    fmt: FormatPlugin,
    model: Model,
    specs: list[InputSpec],
    seed: int,
    shapes: Mapping[str, tuple[int, ...]],
    samples: int,
) -> tuple[list[dict[str, np.ndarray]], str, dict[str, np.ndarray]]:
    """Synthetic feeds the original model runs on with non-constant outputs, and its first outputs.

    The default shapes first; when the runtime refuses them or every output comes out constant,
    the image sizes of `_inputs.FALLBACK_IMAGE_SIZES` (measured: PP-OCRv4's recognizer needs
    height 48). Without a working candidate, the first refusal is raised.
    """
    refused: UnsupportedError | None = None
    constant: tuple[list[dict[str, np.ndarray]], str, dict[str, np.ndarray]] | None = None
    for candidate in [dict(shapes), *_inputs.fallback_shapes(specs, shapes)]:
        feeds = _inputs.synthesize_feeds(specs, samples, seed, candidate)
        try:
            outputs = fmt.run(model, feeds[0])
        except UnsupportedError as err:
            refused = refused or err
            continue
        found = (feeds, _describe(feeds, seed), outputs)
        if not outputs or not all(degeneracy(np.asarray(v)) for v in outputs.values()):
            if candidate != dict(shapes):
                why = "failed to run" if constant is None else "gave constant outputs"
                found = (feeds, f"{found[1]} (the default shapes {why})", outputs)
            return found
        constant = constant or found
    if constant is not None:
        return constant[0], f"{constant[1]} (outputs constant on every size tried)", constant[2]
    assert refused is not None
    tried = " and other image sizes" if _inputs.fallback_shapes(specs, shapes) else ""
    raise UnsupportedError(
        f"{refused} (on synthesized inputs{tried}; give shapes with --input-shape or inputs with --inputs)"
    ) from refused


def _run_both(
    fmt: FormatPlugin,
    model: Model,
    restored: Model,
    feeds: list[dict[str, np.ndarray]],
    atol: float | None,
    rtol: float | None,
    seconds: dict[str, float],
    first: dict[str, np.ndarray] | None = None,
) -> list[OutputReport]:
    """Run original and reconstruction on the same feeds and compare every output over all of them.

    `first`: the original's outputs for the first feed, when already computed."""
    before: list[dict[str, np.ndarray]] = []
    after: list[dict[str, np.ndarray]] = []
    mark = time.perf_counter()
    for i, feed in enumerate(feeds):
        before.append(first if i == 0 and first is not None else fmt.run(model, feed))
    seconds["run_original"] = time.perf_counter() - mark
    mark = time.perf_counter()
    for feed in feeds:
        after.append(fmt.run(restored, feed))
    seconds["run_reconstruction"] = time.perf_counter() - mark
    names = list(before[0]) if before else []
    return [compare_output(n, [b[n] for b in before], [a.get(n) for a in after], atol, rtol) for n in names]


def _within(a: np.ndarray, b: np.ndarray, atol: float | None, rtol: float | None) -> bool:
    if atol is None and rtol is None:
        return True
    if a.shape != b.shape:
        return False
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return bool(np.all(np.abs(a64 - b64) <= (atol or 0.0) + (rtol or 0.0) * np.abs(a64)))


def _tensor_reports(model: Model, restored: Model, atol: float | None, rtol: float | None) -> list[TensorReport]:
    reports = []
    for name, tensor in model.tensors.items():
        other = restored.tensors.get(name)
        if other is None:
            raise UnsupportedError(f"tensor {name!r} did not come back from NNR")
        a, b = tensor.numpy(), other.numpy()
        identical = a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
        a, b = numeric_view(a, tensor.dtype), numeric_view(b, other.dtype)  # bfloat16: float32 values
        numeric = a is not None and b is not None and a.dtype.kind in "fiub" and a.shape == b.shape
        if identical:
            max_abs, snr = 0.0, math.inf
        elif numeric:
            max_abs = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
            snr = snr_db(a, b)
        else:
            max_abs, snr = math.inf, -math.inf
        ok = identical or (numeric and _within(a, b, atol, rtol))
        reports.append(TensorReport(name, tensor.dtype.name, tuple(tensor.shape), identical, max_abs, snr, ok))
    return reports
