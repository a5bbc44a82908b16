# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The rate-distortion curve of a model in one run: nnrconv's allocation beside one global QP
(and, with calibration inputs, the allocation over error-compensated layers).

Both curves are measured the same way: each point's tensors are quantized as nnc would code them,
the model runs on the calibration feeds, and the worst output SNR (and, for classifier-like
outputs, the argmax agreement) is reported against the bits per coded float parameter (NDU
payloads). The allocation's points take the global points' SNRs as their goals, so the two curves
cover the same range.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nnrconv._rate._allocate import Allocator
from nnrconv._rate._curves import Unit
from nnrconv._rate._measure import snr_of
from nnrconv._rate._resolve import prepare
from nnrconv.core import FrameworkMissingError, UnsupportedError

__all__ = ["SweepPoint", "SweepResult", "require_matplotlib", "sweep"]

GLOBAL = "global QP"
ALLOCATION = "nnrconv"
COMPENSATED = "nnrconv, compensated"
"""With calibration inputs: the allocation over error-compensated layers (`_compensate`)."""


@dataclass(frozen=True, slots=True)
class SweepPoint:
    """One point of a curve: which method at which setting, its rate and fidelity."""

    method: str
    setting: str
    bits_per_param: float
    output_snr_db: float
    argmax_agreement: float | None


@dataclass(slots=True)
class SweepResult:
    """Both curves, with where the fidelity was measured."""

    source: str
    parameters: int
    measured_on: str
    points: list[SweepPoint] = field(default_factory=list)

    def curve(self, method: str) -> list[SweepPoint]:
        return sorted((p for p in self.points if p.method == method), key=lambda p: p.bits_per_param)

    def to_json(self) -> dict:
        def clean(value: float | None) -> float | str | None:
            return value if value is None or math.isfinite(value) else ("inf" if value > 0 else "-inf")

        return {
            "source": self.source,
            "parameters": self.parameters,
            "measured_on": self.measured_on,
            "points": [{k: clean(v) if isinstance(v, float) else v for k, v in asdict(p).items()} for p in self.points],
        }

    def to_csv(self) -> str:
        lines = ["method,setting,bits_per_param,output_snr_db,argmax_agreement"]
        for p in self.points:
            agreement = "" if p.argmax_agreement is None else f"{p.argmax_agreement:.6f}"
            lines.append(f"{p.method},{p.setting},{p.bits_per_param:.6f},{p.output_snr_db:.4f},{agreement}")
        return "\n".join(lines) + "\n"

    def table(self) -> str:
        width = max(10, *(len(p.method) for p in self.points)) if self.points else 10
        rows = [f"{'method':<{width}} {'setting':<16} {'bits/param':>10} {'output SNR dB':>14} {'argmax agree':>13}"]
        for method in (GLOBAL, ALLOCATION, COMPENSATED):
            for p in self.curve(method):
                agreement = "" if p.argmax_agreement is None else f"{100 * p.argmax_agreement:.2f}%"
                snr = "inf" if math.isinf(p.output_snr_db) else f"{p.output_snr_db:.2f}"
                rows.append(f"{p.method:<{width}} {p.setting:<16} {p.bits_per_param:>10.3f} {snr:>14} {agreement:>13}")
        return "\n".join(rows)

    def plot(self, path: str | os.PathLike[str]) -> None:
        """Write both curves (bits/param vs output SNR) as an image.

        Raises:
            FrameworkMissingError: matplotlib is not installed.
        """
        try:
            import matplotlib

            matplotlib.use("Agg")
            from matplotlib import pyplot as plt
        except ImportError as exc:
            raise FrameworkMissingError(
                "--plot needs matplotlib; install it with: pip install 'nnrconv[plot]'"
            ) from exc
        figure, axes = plt.subplots(figsize=(6.4, 4.4))
        for method, style in ((GLOBAL, "o--"), (ALLOCATION, "s-"), (COMPENSATED, "^-")):
            pts = [p for p in self.curve(method) if math.isfinite(p.output_snr_db)]
            if not pts:
                continue
            axes.plot([p.bits_per_param for p in pts], [p.output_snr_db for p in pts], style, label=method)
        axes.set_xlabel("bits per coded float parameter")
        axes.set_ylabel(f"output SNR (dB, {self.measured_on})")
        axes.set_title(Path(self.source).name)
        axes.grid(True, alpha=0.3)
        axes.legend()
        figure.tight_layout()
        figure.savefig(os.fspath(path), dpi=100)
        plt.close(figure)


def require_matplotlib():  # type: ignore[no-untyped-def]
    """matplotlib's pyplot on the Agg backend.

    Raises:
        FrameworkMissingError: matplotlib is not installed (the `plot` extra).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError as exc:
        raise FrameworkMissingError("--plot needs matplotlib; install it with: pip install 'nnrconv[plot]'") from exc
    return pyplot


def sweep(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    calibration: str | os.PathLike[str] | None = None,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    seed: int = 0,
    points: int = 8,
    center_snr_db: float = 30.0,
    jobs: int | None = None,
) -> SweepResult:
    """Measure both rate-distortion curves of a runnable model.

    Global QPs are taken every 2 around the QP whose output SNR is nearest `center_snr_db`; the
    allocation's sensitivities are probed once there, and its points aim at the global points' SNRs.

    Raises:
        UnsupportedError: the model cannot run, or has no float output that varies.
    """
    from nnrconv import _api

    model = _api.load(Path(path), format)
    fmt = _api._plugin(model.source_format) if model.source_format else None
    allocator, where = prepare(
        model, fmt, calibration=calibration, input_shapes=input_shapes, seed=seed, need_runner=True, jobs=jobs
    )
    probe = allocator.probe
    assert probe is not None
    params = sum(a.size for a in allocator.curves.tensors.values())
    result = SweepResult(str(path), params, where)
    try:
        center, _ = allocator.global_for_snr(center_snr_db)
    except UnsupportedError:
        center = -60
    allocator.probe_sensitivities(center)
    twin = allocator.compensated
    if twin is not None:
        twin.probe_sensitivities(center)

    def point(method: str, setting: str, qps: dict[Unit, int], by: Allocator = allocator) -> SweepPoint:
        outputs = probe.outputs(by.curves.reconstruction(qps))
        snr = snr_of({k: v for k, v in probe.compare(outputs).items() if ":" not in k})
        bits = 8 * by.size(qps) / params
        return SweepPoint(method, setting, bits, snr, probe.agreement(outputs))

    half = max(1, points // 2)
    for q in range(center - 2 * half, center + 2 * (points - half), 2):
        global_point = point(GLOBAL, f"qp {q}", allocator.uniform(q))
        result.points.append(global_point)
        if math.isfinite(global_point.output_snr_db):
            goal = global_point.output_snr_db
            result.points.append(point(ALLOCATION, f"goal {goal:.1f} dB", allocator.plan_for_noise(10 ** (-goal / 10))))
            if twin is not None:
                plan = twin.plan_for_noise(10 ** (-goal / 10))
                result.points.append(point(COMPENSATED, f"goal {goal:.1f} dB", plan, twin))
    return result


def write_outputs(result: SweepResult, *, as_json: bool, csv: str | None, plot: str | None) -> str:
    """Text to print (table or JSON); also writes the CSV and the plot when asked."""
    if csv:
        Path(csv).write_text(result.to_csv())
    if plot:
        result.plot(plot)
    return json.dumps(result.to_json(), indent=2) if as_json else result.table()
