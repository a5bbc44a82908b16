# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`nnrconv check` output: the text report, the JSON report, and JSON errors.

NOTE: with `--json` the command prints exactly one JSON document on stdout whatever happens:
the report, or {"error": ..., "exit_code": N} with the exit code the one-line error would have
(usage errors included), so scripts never parse a traceback or an empty output.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import click

from nnrconv._check import DEFAULT_WORST, CheckReport

__all__ = ["json_error", "print_json", "print_text", "wants_json"]


def wants_json(args: Sequence[str]) -> bool:
    """Whether the command line asks for `check --json` or `run --json` (errors then print as JSON too)."""
    words = [a for a in args if a != "--debug"]
    return bool(words) and words[0] in ("check", "run") and "--json" in words[1:]


def json_error(message: str, exit_code: int) -> None:
    """The one JSON document of a failed `check --json`."""
    click.echo(json.dumps({"error": message, "exit_code": exit_code}, indent=2))


def print_json(report: CheckReport, worst: int | None) -> None:
    click.echo(json.dumps(report.to_json(worst), indent=2))


def _db(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "inf" if value == math.inf else f"{value:.1f}"


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def print_text(report: CheckReport, worst: int | None) -> None:
    """The human report: verdict, sizes, inputs, one line per output, the worst weights, times."""
    verdict = "EXACT (lossless round trip)" if report.exact else ("PASSED" if report.passed else "FAILED")
    if not report.exact and report.atol is None and report.rtol is None:
        verdict = "LOSSY (no tolerance given)"
    click.echo(f"check {report.source} ({report.format}): {verdict}")
    click.echo(
        f"sizes: original {_human(report.original_bytes)}, NNR {_human(report.nnr_bytes)}, "
        f"ratio {report.ratio:.3f}, {report.bits_per_parameter:.2f} bits/parameter "
        f"over {report.parameters:,} parameters"
    )
    if report.inputs:
        click.echo(f"inputs: {report.inputs}")
    click.echo("outputs:" if report.runnable else "outputs: none (the model has no graph to run; tensors compared)")
    for o in report.outputs:
        parts = [f"max abs {o.max_abs:.3g}", f"max rel {o.max_rel:.3g}", f"SNR {_db(o.snr_db)} dB"]
        if o.cosine is not None:
            parts.append(f"cosine {o.cosine:.6f}")
        if o.argmax_agreement is not None:
            parts.append(f"argmax agreement {100 * o.argmax_agreement:.1f}%")
        if o.degenerate:
            parts.append(f"DEGENERATE ({o.degenerate})")
        flag = "" if o.within_tolerance else "  <-- exceeds tolerance"
        click.echo(f"  {o.name} {list(o.shape)}: {', '.join(parts)}{flag}")
    for warning in report.warnings:
        click.echo(f"warning: {warning}")
    same = sum(t.bit_identical for t in report.tensors)
    listed = report.worst_tensors(DEFAULT_WORST if worst is None else worst)
    more = f"; the {len(listed)} of lowest SNR:" if len(listed) < len(report.tensors) else ":"
    click.echo(f"weights: {same} of {len(report.tensors)} bit-identical{more if listed else ''}")
    for t in listed:
        state = "identical" if t.bit_identical else f"max abs {t.max_abs:.3g}"
        flag = "" if t.within_tolerance else "  <-- exceeds tolerance"
        click.echo(f"  {t.name} {t.dtype} {list(t.shape)}: SNR {_db(t.snr_db)} dB, {state}{flag}")
    click.echo("times: " + ", ".join(f"{k} {v:.3f} s" for k, v in report.seconds.items()))
