# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Fitting every tensor's QP into the one offset window the model parameter set allows.

Each NNR_PT_FLOAT payload codes its QP as an offset of 6 + qp_density bits from the MPS
quantization_parameter: 256 QPs (64 octaves at qp_density 2), while float32 spans about 277
octaves. A model whose tensors want QPs further apart (an attention mask of ±3.4e38 next to
weights of 0.01, or a tensor of denormals) cannot give each its own step.

NOTE: the window is placed where it costs least, counted in bits over the whole model: a tensor
whose QP lies inside costs nothing; one that wants a coarser step than the window's coarsest is
coded at that QP when its levels still fit (a finer step: more bits, never less accurate; an
exact grid moves by whole octaves), one octave costing a bit per element; any other travels
exactly as raw float32, costing about 32 bits per element. Models whose QPs all fit the window
keep the window NNCodec's choice gives (the midpoint), so their bytes do not change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from nnrconv.nnc import cabac
from nnrconv.nnc._coding import LEVEL_LIMIT, QP_MIN, CodingOptions, TensorPlan, qp_of_step
from nnrconv.nnc._enums import PayloadType
from nnrconv.nnc._snr_search import choose_mps_qp

__all__ = ["SNR_SEARCH_MARGIN", "fit_plans"]

SNR_SEARCH_MARGIN = 8
"""QPs below an SNR plan's estimate kept inside the window, for the search that verifies it."""

_RAW_BITS = 32.0
_QP_LIMIT = 4095  # mps_quantization_parameter is i(13)


def fit_plans(
    plans: Sequence[tuple[int, TensorPlan]], options: CodingOptions
) -> tuple[list[TensorPlan], int, tuple[int, int]]:
    """Place the QP window and adjust the plans that fall outside it.

    Args:
        plans: (element count, plan) per tensor.

    Returns:
        The plans (QPs clamped into the window, or raw float32 where no QP of the window can
        carry the tensor), the MPS quantization_parameter, and the window (lowest, highest QP).
    """
    qpd = options.qp_density
    wanted = [_Want(n, p, _finest(p, qpd)) for n, p in plans if _windowed(p)]
    qps = [w.qp for w in wanted]
    snr = [w.qp - SNR_SEARCH_MARGIN for w in wanted if w.plan.snr_db is not None]
    margin = [min(snr)] if snr else []
    mps, window = choose_mps_qp(qps + margin, qpd)
    if all(_cost(w, window, qpd) == 0.0 for w in wanted):
        return [p for _, p in plans], mps, window
    mps, window = _cheapest_window(wanted, qpd)
    return [_fitted(_Want(n, p, _finest(p, qpd)), window, qpd) if _windowed(p) else p for n, p in plans], mps, window


@dataclasses.dataclass(frozen=True, slots=True)
class _Want:
    """A planned QP, its tensor's element count, and the finest QP its levels fit at."""

    count: int
    plan: TensorPlan
    finest: int

    @property
    def qp(self) -> int:
        assert self.plan.qp is not None
        return self.plan.qp


def _windowed(plan: TensorPlan) -> bool:
    return plan.payload_type == PayloadType.NNR_PT_FLOAT and plan.qp is not None


def _finest(plan: TensorPlan, qp_density: int) -> int:
    """The finest QP whose levels stay within LEVEL_LIMIT for this tensor's peak."""
    if plan.peak == 0.0:
        return QP_MIN
    qp = max(qp_of_step(plan.peak / LEVEL_LIMIT, qp_density), QP_MIN)
    return qp + 1 if plan.peak / cabac.step_size(qp, qp_density) > LEVEL_LIMIT else qp


def _placed(want: _Want, window: tuple[int, int], qp_density: int) -> int | None:
    """The QP the plan gets inside `window`, or None when none carries it."""
    lo, hi = window
    qp = want.qp
    if lo <= qp <= hi:
        return qp
    if qp < lo:
        return None  # coarser than wanted: an exact grid breaks, a lossy tensor loses its target
    if want.plan.exact:
        k = 1 << qp_density
        qp -= -(-(qp - hi) // k) * k  # whole octaves: the values stay on the grid
    else:
        qp = hi
    return qp if qp >= lo and qp >= want.finest else None


def _cost(want: _Want, window: tuple[int, int], qp_density: int) -> float:
    """Extra bits, roughly, that `window` costs this tensor over its own QP."""
    placed = _placed(want, window, qp_density)
    if placed is None:
        return 0.0 if want.plan.peak == 0.0 else _RAW_BITS * want.count
    extra = (want.qp - placed) / (1 << qp_density) * want.count
    if want.plan.snr_db is not None and placed - window[0] < SNR_SEARCH_MARGIN:
        extra += 0.5  # prefer room for the SNR search, but never over a real cost
    return extra


def _cheapest_window(wanted: list[_Want], qp_density: int) -> tuple[int, tuple[int, int]]:
    """The MPS QP whose window costs least (ties: the first in ascending order, deterministic)."""
    _, (lo, hi) = choose_mps_qp([0], qp_density)
    below, above = -lo, hi  # the window spans mps - below .. mps + above
    groups: dict[tuple[int, bool, bool, bool, int], _Want] = {}
    for want in wanted:  # tensors that cost alike are counted together: models of thousands plan fast
        plan = want.plan
        key = (want.qp, plan.exact, plan.snr_db is not None, plan.peak == 0.0, want.finest)
        seen = groups.get(key)
        groups[key] = want if seen is None else dataclasses.replace(seen, count=seen.count + want.count)
    wanted = list(groups.values())
    candidates: set[int] = set()
    for want in wanted:
        for low_end in (want.qp, want.qp - SNR_SEARCH_MARGIN):
            candidates.add(low_end + below)
        candidates.add(want.qp - above)
    best: tuple[float, int] | None = None
    for mps in sorted(candidates):
        window = (mps - below, mps + above)
        cost = sum(_cost(w, window, qp_density) for w in wanted)
        if best is None or cost < best[0]:
            best = (cost, mps)
    assert best is not None
    mps = max(-_QP_LIMIT, min(_QP_LIMIT, best[1]))
    return mps, (mps - below, mps + above)


def _fitted(want: _Want, window: tuple[int, int], qp_density: int) -> TensorPlan:
    plan = want.plan
    placed = _placed(want, window, qp_density)
    if placed is None:
        if plan.peak == 0.0:
            return dataclasses.replace(plan, qp=None)  # all zero: any step, the MPS's
        return TensorPlan(PayloadType.NNR_PT_RAW_FLOAT)
    return plan if placed == plan.qp else dataclasses.replace(plan, qp=placed)
