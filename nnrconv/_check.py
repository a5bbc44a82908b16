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
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnrconv import _api, nnc
from nnrconv.core import DType, FormatError, FormatPlugin, InputSpec, Model, UnsupportedError
from nnrconv.core._narrow import numeric_view
from nnrconv.nnc import snr_db

__all__ = ["CheckReport", "OutputReport", "TensorReport", "check", "random_inputs"]


@dataclass(frozen=True, slots=True)
class OutputReport:
    """How one output of the reconstruction differs from the original's."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    snr_db: float
    argmax_agreement: float | None
    within_tolerance: bool


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

    def to_json(self) -> dict:
        def clean(value: float | None) -> float | str | None:
            if value is None or math.isfinite(value):
                return value
            return "inf" if value > 0 else "-inf"

        return {
            "source": self.source,
            "format": self.format,
            "exact": self.exact,
            "passed": self.passed,
            "runnable": self.runnable,
            "atol": self.atol,
            "rtol": self.rtol,
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
                    "max_abs": o.max_abs,
                    "max_rel": o.max_rel,
                    "snr_db": clean(o.snr_db),
                    "argmax_agreement": o.argmax_agreement,
                    "within_tolerance": o.within_tolerance,
                }
                for o in self.outputs
            ],
            "tensors": [
                {
                    "name": t.name,
                    "dtype": t.dtype,
                    "shape": list(t.shape),
                    "bit_identical": t.bit_identical,
                    "max_abs": t.max_abs,
                    "snr_db": clean(t.snr_db),
                    "within_tolerance": t.within_tolerance,
                }
                for t in self.tensors
            ],
            "seconds": self.seconds,
        }



def random_inputs(specs: list[InputSpec], seed: int) -> dict[str, np.ndarray]:
    """Seeded inputs shaped from the model's inputs: N(0,1) floats, small non-negative integers."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for spec in specs:
        if spec.dtype.is_floating_point and spec.dtype.is_numpy_native:
            value = rng.standard_normal(spec.shape).astype(spec.dtype.storage_dtype)
        elif spec.dtype is DType.BOOL:
            value = rng.integers(0, 2, spec.shape).astype(bool)
        elif spec.dtype.is_integer and spec.dtype.is_numpy_native:
            value = rng.integers(0, 4, spec.shape).astype(spec.dtype.storage_dtype)
        else:
            raise UnsupportedError(
                f"input {spec.name!r} has element type {spec.dtype.name}; pass inputs with --inputs file.npz"
            )
        inputs[spec.name] = value
    return inputs


def _load_inputs(path: Path, specs: list[InputSpec]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            given = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise FormatError(f"{path}: cannot read inputs (expected an .npz archive): {exc}") from exc
    wanted = {s.name for s in specs}
    missing, extra = wanted - set(given), set(given) - wanted
    if missing or extra:
        raise FormatError(
            f"{path}: inputs do not match the model: missing {sorted(missing)}, unexpected {sorted(extra)}"
        )
    return given


def _compare_output(name: str, a: np.ndarray, b: np.ndarray, atol: float | None, rtol: float | None) -> OutputReport:
    if a.shape != b.shape:
        return OutputReport(name, tuple(a.shape), math.inf, math.inf, -math.inf, None, False)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    diff = np.abs(a64 - b64)
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = np.abs(a64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(scale > 0, diff / scale, np.where(diff > 0, np.inf, 0.0))
    max_rel = float(rel.max()) if rel.size else 0.0
    agreement = None
    if a.ndim == 2 and a.shape[1] > 1 and a.dtype.kind == "f":
        agreement = float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1)))
    ok = True
    if atol is not None or rtol is not None:
        ok = bool(np.all(diff <= (atol or 0.0) + (rtol or 0.0) * scale))
    return OutputReport(name, tuple(a.shape), max_abs, max_rel, snr_db(a, b), agreement, ok)


def check(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    inputs: str | os.PathLike[str] | Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    atol: float | None = None,
    rtol: float | None = None,
    options: nnc.CodingOptions | None = None,
) -> CheckReport:
    """Round-trip `path` through NNR and compare the native runtime's outputs before and after.

    Args:
        path: a native model (any format whose plugin implements `run`).
        format: its format, if detection should be overridden.
        inputs: an `.npz` path or a mapping of input arrays; default: seeded random inputs.
        seed: seed of the random inputs.
        atol, rtol: tolerances; an output fails when |a - b| > atol + rtol*|a| anywhere.
        options: how tensors are coded, exactly as a conversion would (default: SNR target).

    Raises:
        UnsupportedError: the format has no runner, or the runtime cannot run the model.
    """
    path = Path(path)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    model = _api.load(path, format)
    fmt = _api._plugin(model.source_format) if model.source_format else None
    runnable = fmt is not None and fmt.can_run(model)
    seconds["load"] = time.perf_counter() - started

    mark = time.perf_counter()
    data = _api.encode(model, options=options)
    seconds["encode"] = time.perf_counter() - mark
    mark = time.perf_counter()
    restored = _api.decode(data, source=f"{path} (coded)", jobs=options.jobs if options else None)
    seconds["decode"] = time.perf_counter() - mark

    outputs: list[OutputReport] = []
    if runnable:
        assert fmt is not None
        outputs = _run_both(fmt, model, restored, inputs, seed, atol, rtol, seconds)
    elif inputs is not None:
        raise UnsupportedError(f"{path}: the model has no graph to run, so --inputs cannot be used")

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
    )
    seconds["total"] = time.perf_counter() - started
    report.seconds = seconds
    return report


def _run_both(
    fmt: FormatPlugin,
    model: Model,
    restored: Model,
    inputs: str | os.PathLike[str] | Mapping[str, np.ndarray] | None,
    seed: int,
    atol: float | None,
    rtol: float | None,
    seconds: dict[str, float],
) -> list[OutputReport]:
    """Run original and reconstruction on the same inputs and compare every output."""
    specs = fmt.input_specs(model)
    if inputs is None:
        feed = random_inputs(specs, seed)
    elif isinstance(inputs, Mapping):
        feed = dict(inputs)
    else:
        feed = _load_inputs(Path(inputs), specs)
    mark = time.perf_counter()
    before = fmt.run(model, feed)
    seconds["run_original"] = time.perf_counter() - mark
    mark = time.perf_counter()
    after = fmt.run(restored, feed)
    seconds["run_reconstruction"] = time.perf_counter() - mark
    return [_compare_output(name, before[name], after.get(name, np.empty(0)), atol, rtol) for name in before]


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
