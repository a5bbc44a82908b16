# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""How one output of a reconstructed model differs from the original's, over every input feed.

NOTE: an output that is constant (or all zero) on the inputs says nothing about the weights: any
reconstruction that keeps it constant gets "SNR inf" although the inputs never exercised the
network (an OCR detector fed 32x32 noise outputs zeros). Such outputs are flagged `degenerate`
and get no SNR; better inputs (`--inputs`, `--input-shape`) fix that, not a tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nnrconv.nnc import snr_db

__all__ = ["OutputReport", "compare_output", "degeneracy"]


@dataclass(frozen=True, slots=True)
class OutputReport:
    """How one output of the reconstruction differs from the original's, over all feeds.

    Attributes:
        shape: the output's shape for the first feed.
        max_abs, max_rel: largest |a - b| and |a - b| / |a| (inf where a = 0 and b differs).
        snr_db: 10·log10(Σa² / Σ(a - b)²); inf for identical outputs; None when degenerate.
        argmax_agreement: for classifier-like outputs (float, rank 2 or 3, more than one class
            on the last axis), the share of positions whose argmax over the last axis agrees.
        within_tolerance: |a - b| <= atol + rtol·|a| everywhere (True without tolerances).
        cosine: cosine similarity of the flattened outputs (1 for identical; None when either
            is all zero).
        degenerate: "all-zero" or "constant" when the original's (or the reconstruction's)
            output is so on every feed: SNR is meaningless then. None otherwise.
        feeds: how many input feeds were compared.
    """

    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    snr_db: float | None
    argmax_agreement: float | None
    within_tolerance: bool
    cosine: float | None = None
    degenerate: str | None = None
    feeds: int = 1


def degeneracy(values: np.ndarray) -> str | None:
    """ "all-zero" or "constant" when every element is zero or equal; None otherwise."""
    if values.size == 0 or not np.any(values):
        return "all-zero"
    if values.dtype.kind in "fc" and not np.all(np.isfinite(values)):
        return None
    if values.size < 2:
        return None  # one number: nothing to say whether it varies
    return "constant" if float(values.max()) == float(values.min()) else None


def _classifier_like(a: np.ndarray) -> bool:
    return a.dtype.kind == "f" and a.ndim in (2, 3) and a.shape[-1] > 1


def compare_output(
    name: str, before: Sequence[np.ndarray], after: Sequence[np.ndarray | None], atol: float | None, rtol: float | None
) -> OutputReport:
    """Compare one output over every feed (`after[i]` None: the reconstruction lacks it)."""
    shape = tuple(before[0].shape) if before else ()
    if any(b is None or b.shape != a.shape for a, b in zip(before, after, strict=True)):
        return OutputReport(name, shape, math.inf, math.inf, -math.inf, None, False, None, None, len(before))
    pairs = [(np.asarray(a), np.asarray(b)) for a, b in zip(before, after, strict=True)]
    a64 = np.concatenate([a.astype(np.float64).ravel() for a, _ in pairs]) if pairs else np.empty(0)
    b64 = np.concatenate([b.astype(np.float64).ravel() for _, b in pairs]) if pairs else np.empty(0)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a64 - b64)
        same = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))
        diff = np.where(same, 0.0, diff)
        scale = np.abs(a64)
        rel = np.where(scale > 0, diff / np.where(scale > 0, scale, 1.0), np.where(diff > 0, np.inf, 0.0))
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float(rel.max()) if rel.size else 0.0
    ok = True
    if atol is not None or rtol is not None:
        ok = bool(np.all(diff <= (atol or 0.0) + (rtol or 0.0) * scale))
    agreement = None
    if pairs and _classifier_like(pairs[0][0]):
        hits = sum(int(np.sum(np.argmax(a, axis=-1) == np.argmax(b, axis=-1))) for a, b in pairs)
        total = sum(int(np.prod(a.shape[:-1])) for a, _ in pairs)
        agreement = hits / total if total else None
    degenerate = degeneracy(a64) or degeneracy(b64)
    snr = None if degenerate else (math.inf if bool(np.all(same)) else snr_db(a64, b64))
    return OutputReport(name, shape, max_abs, max_rel, snr, agreement, ok, _cosine(a64, b64), degenerate, len(pairs))


def _cosine(a: np.ndarray, b: np.ndarray) -> float | None:
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return None
    norm = float(np.linalg.norm(a)) * float(np.linalg.norm(b))
    if norm == 0.0 or not math.isfinite(norm):
        return None
    return max(-1.0, min(1.0, float(np.dot(a, b)) / norm))
