# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Equal-slope allocation of per-unit QPs, verified on the model's outputs (closed loop).

NOTE: what was measured before this design (issue #16): noise-injection sensitivities on
synthetic inputs far from the operating point swung results from 0.79x to 1.12x NNCodec, so
here sensitivities are probed *at* the operating point (each unit quantized at the QP one
global QP would give it, on the calibration feeds), the additive prediction
D_o = sum_u s_uo * SSE_u(qp_u) only guides a Lagrangian choice, and every candidate plan is then
run and measured; the prediction's error is corrected by rescaling its goal (closed loop). One
global QP is the same search with all units equal, and stays a candidate the result must beat.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from nnrconv import nnc
from nnrconv._rate._compensate import Compensation
from nnrconv._rate._curves import RateCurves, Unit, tensor_qp
from nnrconv._rate._measure import OutputProbe, snr_of
from nnrconv._rate._mixed import VARIANT_STRIDE, MixedCurves, split_code
from nnrconv.core import UnsupportedError
from nnrconv.nnc import TensorChoice

__all__ = ["Allocation", "Allocator"]

QP_BELOW, QP_ABOVE = 32, 24
"""Each unit's QP is chosen within [q* - QP_BELOW, q* + QP_ABOVE] of the global operating point.

NOTE: finer than the probe is where the linear prediction holds best (smaller errors), so the
range below is wide: basic-pitch's constant-Q front end must be coded ~30 QP finer than the
global QP meeting 30 dB on real notes (log-magnitudes of near-silence amplify its errors); with
16 below, no calibrated plan kept its transcription (1.00x the global QP), with 32, 0.69x.
Coarser than the probe the prediction fails fast (see `probe_sensitivities`), hence 24 above."""
_QP_MIN, _QP_MAX = -160, 60
LOOP_ROUNDS = 6
"""Closed-loop verifications of the per-unit plan (one model run each)."""
FLOOR_BELOW = 16
"""A unit's error floor is its error this many QP below the finest QP a plan may choose."""
REPROBE_STEP, REPROBE_ROUNDS = 4, 6
"""A unit planned coarser than where it was probed is probed again, alone, at the plan's QP
rounded up to a multiple of REPROBE_STEP above the center; at most REPROBE_ROUNDS times per plan.
Between probes a unit's sensitivity is interpolated linearly in the QP.

NOTE: a unit that measured no output change at the center is not insensitive: PP-OCR det's
squeeze-excitation layers feed saturated HardSigmoids, so their error at the global QP moved no
output (sensitivity 0.0), the plan sent them to the coarsest QP, and there they un-saturated and
took the output SNR from 41 dB to -9 dB: every calibrated plan failed. Keeping each unit's
largest sensitivity instead of one per QP cost cls 0.92x -> 0.96x without data (units that are
coarse only where they are insensitive paid for it everywhere)."""


@dataclass(slots=True)
class Allocation:
    """A plan and what it was measured to do.

    Attributes:
        plan: per tensor, the QP it is coded with (DQ on).
        method: "per-tensor" or "global QP".
        payload_bytes: NDU payload bytes of the planned tensors.
        output_snr_db: measured output SNR (dB) on the calibration feeds, or weight SNR (no runner).
        global_qp, global_bytes, global_snr_db: the best single-QP candidate.
        unit_qps: per unit label, its QP.
        runs: model runs spent.
        replaced: error-compensated tensors to code instead of the model's (on their plan's grid).
    """

    plan: dict[str, TensorChoice]
    method: str
    payload_bytes: int
    output_snr_db: float
    global_qp: int
    global_bytes: int
    global_snr_db: float
    unit_qps: dict[str, int] = field(default_factory=dict)
    runs: int = 0
    replaced: dict[str, np.ndarray] = field(default_factory=dict)


class Allocator:
    """Chooses per-unit QPs for a target, from rate curves and (when a runner exists) outputs."""

    def __init__(self, units: list[Unit], curves: RateCurves | MixedCurves, probe: OutputProbe | None) -> None:
        self.units, self.curves, self.probe = units, curves, probe
        self._signal = sum(float(np.square(a, dtype=np.float64).sum()) for a in curves.tensors.values()) or 1.0
        self._probes: list[dict[int, np.ndarray]] = []
        """Per unit, its sensitivity per output at each QP it was probed at."""
        self._center = 0
        self._floors: dict[Unit, float] = {}
        self.compensated: Allocator | None = None
        """The same search where each unit may also be coded error-compensated (`_mixed`; set by
        `prepare` when calibration inputs gave the layer inputs' correlations): a second
        candidate of every target."""

    # -- measuring -----------------------------------------------------------------------------
    def measure(self, qps: dict[Unit, int]) -> dict[str, float]:
        """Relative noise per output of the plan (weight domain without a runner: one 'output')."""
        if self.probe is None:
            return {"weights": sum(self.curves.unit(u, q)[1] for u, q in qps.items()) / self._signal}
        return self.probe.noise(self.curves.reconstruction(qps))

    def size(self, qps: dict[Unit, int]) -> int:
        return sum(self.curves.unit(u, q)[0] for u, q in qps.items())

    def uniform(self, qp: int) -> dict[Unit, int]:
        return dict.fromkeys(self.units, qp)

    def global_for_snr(self, target_db: float, start: int = -32) -> tuple[int, float]:
        """The coarsest single QP whose measured SNR meets the target (and that SNR)."""
        cache: dict[int, float] = {}

        def snr(q: int) -> float:
            if q not in cache:
                cache[q] = snr_of(self.measure(self.uniform(q)))
            return cache[q]

        lo, hi = start, start  # lo passes, hi fails
        if snr(start) >= target_db:
            while hi < _QP_MAX and snr(hi) >= target_db:
                lo, hi = hi, min(_QP_MAX, hi + 8)
            if snr(hi) >= target_db:
                return hi, snr(hi)
        else:
            while lo > _QP_MIN and snr(lo) < target_db:
                hi, lo = lo, max(_QP_MIN, lo - 8)
            if snr(lo) < target_db:
                raise UnsupportedError(
                    f"output SNR {target_db:g} dB is out of reach: the finest QP gives {snr(lo):.1f} dB"
                )
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if snr(mid) >= target_db else (lo, mid)
        return lo, snr(lo)

    def global_for_bytes(self, budget: int) -> int:
        """The finest single QP whose payload fits `budget` bytes."""
        lo, hi = _QP_MIN, _QP_MAX  # hi fits (coarsest), lo may not
        if self.size(self.uniform(hi)) > budget:
            raise UnsupportedError(
                f"the budget is out of reach: the coarsest QP needs {self.size(self.uniform(hi))} bytes"
            )
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if self.size(self.uniform(mid)) <= budget else (mid, hi)
        return hi

    def probe_sensitivities(self, center: int) -> None:
        """s_uo: relative output noise per unit of squared weight error, each unit alone at `center`."""
        self._center = center
        self._floors = {}
        qps = list(range(max(_QP_MIN, center - QP_BELOW), min(_QP_MAX, center + QP_ABOVE) + 1))
        for offset in (0, VARIANT_STRIDE):
            chosen = [u for u in self.units if offset in self.curves.variants(u)]
            if chosen:
                self.curves.fill(chosen, [q + offset for q in qps])
        if self.probe is None:
            self._probes = [
                {center + v: np.array([1.0 / self._signal]) for v in self.curves.variants(u)} for u in self.units
            ]
            return
        self._probes = [
            {center + v: self._sensitivity(u, center + v) for v in self.curves.variants(u)} for u in self.units
        ]

    def _sensitivity(self, unit: Unit, qp: int) -> np.ndarray:
        """Relative output noise per squared weight error, per output, of `unit` alone at `qp`."""
        assert self.probe is not None
        sse = self._error(unit, qp)
        noise = self.probe.noise(self.curves.reconstruction({unit: qp}))
        return np.array([noise[n] / sse if sse > 0 else 0.0 for n in self.probe.keys], dtype=np.float64)

    def sensitivity(self, index: int, qp: int) -> np.ndarray:
        """Unit `index`'s sensitivity per output at `qp` (a code, see `_mixed`): as measured where
        it was probed, linear in the QP between two probes of its variant, that of the nearest
        probe outside them."""
        probes = self._probes[index]
        points = sorted(p for p in probes if split_code(p)[0] == split_code(qp)[0])
        if qp <= points[0] or qp >= points[-1]:
            return probes[points[0] if qp <= points[0] else points[-1]]
        hi = next(p for p in points if p >= qp)
        lo = max(p for p in points if p <= qp)
        if hi == lo:
            return probes[lo]
        t = (qp - lo) / (hi - lo)
        return (1.0 - t) * probes[lo] + t * probes[hi]

    def _floor(self, unit: Unit) -> float:
        """The squared error no QP removes: float32 rounding of values far above the step, e.g.
        PP-OCR det's batch-norm variance of 1e8 (error 7.0 at every QP), which otherwise
        dominates its unit's error and hides what the unit's other tensors do to the outputs."""
        if unit not in self._floors:  # the values' own property: plain coding, even if compensated
            qp = max(_QP_MIN, self._center - QP_BELOW - FLOOR_BELOW)
            tensors = self.curves.tensors
            self._floors[unit] = sum(nnc.tensor_rate(tensors[n], tensor_qp(tensors[n], qp)).sse for n in unit.names)
        return self._floors[unit]

    def _error(self, unit: Unit, qp: int) -> float:
        """A unit's squared error at `qp` above its floor: what its sensitivity multiplies."""
        return max(0.0, self.curves.unit(unit, qp)[1] - self._floor(unit))

    def _reprobe(self, qps: Mapping[Unit, int]) -> bool:
        """Probe again every unit planned coarser than its coarsest probe (see REPROBE_STEP);
        whether any was."""
        if self.probe is None or not self._probes:
            return False
        probed = False
        top = min(_QP_MAX, self._center + QP_ABOVE)
        for i, unit in enumerate(self.units):
            variant, planned = split_code(qps[unit])
            offset = variant * VARIANT_STRIDE
            if planned + offset <= max(p for p in self._probes[i] if split_code(p)[0] == variant):
                continue
            qp = min(top, self._center + REPROBE_STEP * math.ceil((planned - self._center) / REPROBE_STEP))
            self._probes[i][qp + offset] = self._sensitivity(unit, qp + offset)
            probed = True
        return probed

    # -- equal slope ---------------------------------------------------------------------------
    def _tables(self) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """Per unit, the codes (QPs, per variant) a plan may choose, and its bytes and predicted
        noise per output at each."""
        qps = np.arange(max(_QP_MIN, self._center - QP_BELOW), min(_QP_MAX, self._center + QP_ABOVE) + 1)
        codes, sizes, noises = [], [], []
        for i, unit in enumerate(self.units):
            mine = np.concatenate([qps + v for v in self.curves.variants(unit)])
            pairs = [self.curves.unit(unit, int(c)) for c in mine]
            codes.append(mine)
            sizes.append(np.array([p[0] for p in pairs], dtype=np.float64))
            floor = self._floor(unit)
            noises.append(
                np.stack(
                    [self.sensitivity(i, int(c)) * max(0.0, p[1] - floor) for c, p in zip(mine, pairs, strict=True)]
                )
            )
        return codes, sizes, noises

    def _solve(self, slope: float) -> tuple[dict[Unit, int], float, np.ndarray]:
        codes, sizes, noises = self._tables_cache
        chosen: dict[Unit, int] = {}
        total = 0.0
        noise = np.zeros(noises[0].shape[1] if noises else 1)
        for i, unit in enumerate(self.units):
            k = int(np.argmin(sizes[i] + slope * noises[i].sum(axis=1)))
            chosen[unit] = int(codes[i][k])
            total += sizes[i][k]
            noise += noises[i][k]
        return chosen, total, noise

    def _slope_search(self, ok: Callable[[float, np.ndarray], bool]) -> dict[Unit, int]:
        """The smallest slope (fewest bytes) whose solution satisfies `ok(bytes, noise)`."""
        self._tables_cache = self._tables()
        lo, hi = -12.0, 30.0  # log10 of the slope
        if not ok(*self._solve(10.0**hi)[1:]):
            return self._solve(10.0**hi)[0]
        for _ in range(48):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if ok(*self._solve(10.0**mid)[1:]) else (mid, hi)
        return self._solve(10.0**hi)[0]

    # -- targets -------------------------------------------------------------------------------
    def for_output_snr(self, target_db: float) -> Allocation:
        """Fewest bytes whose measured SNR meets `target_db`; never more than one global QP."""
        q_global, snr_global = self.global_for_snr(target_db)
        global_qps = self.uniform(q_global)
        global_size = self.size(global_qps)
        self.probe_sensitivities(q_global)
        best = (global_size, global_qps, snr_global, "global QP")
        rounds = LOOP_ROUNDS if self.probe is not None else 1
        for qps, size, measured in self.closed_loop(target_db, rounds):
            if measured >= target_db and size < best[0]:
                best = (size, qps, measured, "per-tensor")
        size, qps, snr, method = best
        return self._result(qps, method, size, snr, q_global, global_size, snr_global)

    def plan_for_noise(self, goal: float) -> dict[Unit, int]:
        """The equal-slope plan whose *predicted* worst relative output noise is at most `goal`
        (after `probe_sensitivities`)."""
        for _ in range(REPROBE_ROUNDS):
            qps = self._slope_search(lambda _b, n: float(n.max(initial=0.0)) <= goal)
            if not self._reprobe(qps):
                return qps
        return self._slope_search(lambda _b, n: float(n.max(initial=0.0)) <= goal)

    def closed_loop(self, target_db: float, rounds: int):  # type: ignore[no-untyped-def]
        """Plans (qps, bytes, measured SNR) converging on the target: the predicted-noise goal is
        corrected by secant steps on log10(goal) from the measured SNRs, kept inside the bracket
        of passing and failing goals."""
        x = -target_db / 10.0
        passing, failing = -math.inf, math.inf  # largest passing x, smallest failing x
        previous: tuple[float, float] | None = None
        for _ in range(rounds):
            qps = self.plan_for_noise(10.0**x)
            measured = snr_of(self.measure(qps))
            yield qps, self.size(qps), measured
            if not math.isfinite(measured):
                return
            if measured >= target_db:
                passing = max(passing, x)
                if measured - target_db < 0.05:
                    return
            else:
                failing = min(failing, x)
            slope = -10.0
            if previous is not None and previous[0] != x:
                slope = min(-2.0, max(-20.0, (measured - previous[1]) / (x - previous[0])))
            previous = (x, measured)
            step = x + (measured - target_db - 0.02) / -slope
            if math.isfinite(passing) and math.isfinite(failing) and not passing < step < failing:
                step = (passing + failing) / 2
            if abs(step - x) < 1e-4:
                return
            x = step

    def for_bytes(self, budget: int) -> Allocation:
        """Lowest output noise within `budget` payload bytes; one global QP if it measures better."""
        q_global = self.global_for_bytes(budget)
        global_qps = self.uniform(q_global)
        self.probe_sensitivities(q_global)
        self._tables_cache = self._tables()
        qps = self._within(budget)
        for _ in range(REPROBE_ROUNDS):
            if not self._reprobe(qps):
                break
            self._tables_cache = self._tables()
            qps = self._within(budget)
        snr_global = snr_of(self.measure(global_qps))
        snr_plan = snr_of(self.measure(qps))
        size_global = self.size(global_qps)
        if snr_plan >= snr_global:
            return self._result(qps, "per-tensor", self.size(qps), snr_plan, q_global, size_global, snr_global)
        return self._result(global_qps, "global QP", size_global, snr_global, q_global, size_global, snr_global)

    def _within(self, budget: int) -> dict[Unit, int]:
        """The largest slope (least noise) whose solution fits the budget."""
        lo, hi = -12.0, 30.0
        if self._solve(10.0**lo)[1] > budget:
            return self.uniform(self.global_for_bytes(budget))
        for _ in range(48):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self._solve(10.0**mid)[1] <= budget else (lo, mid)
        return self._spend(self._solve(10.0**lo)[0], budget)

    def _spend(self, chosen: dict[Unit, int], budget: int) -> dict[Unit, int]:
        """What the equal-slope solution left of the budget, spent on one QP finer at a time
        (largest predicted noise drop per byte first): with two variants per unit the solution
        jumps in large steps and left 2.3 % of a small model's budget unused."""
        codes, sizes, noises = self._tables_cache
        at = {unit: int(np.flatnonzero(codes[i] == chosen[unit])[0]) for i, unit in enumerate(self.units)}
        left = budget - sum(sizes[i][at[u]] for i, u in enumerate(self.units))
        while True:
            best, best_gain = None, 0.0
            for i, unit in enumerate(self.units):
                k = at[unit]
                if k == 0 or split_code(int(codes[i][k - 1]))[0] != split_code(int(codes[i][k]))[0]:
                    continue  # finest QP of its variant
                extra = sizes[i][k - 1] - sizes[i][k]
                drop = float(noises[i][k].sum() - noises[i][k - 1].sum())
                if 0 < extra <= left and drop > 0 and drop / extra > best_gain:
                    best, best_gain = i, drop / extra
            if best is None:
                return {u: int(codes[i][at[u]]) for i, u in enumerate(self.units)}
            unit = self.units[best]
            left -= sizes[best][at[unit] - 1] - sizes[best][at[unit]]
            at[unit] -= 1

    def _result(
        self,
        qps: dict[Unit, int],
        method: str,
        size: int,
        snr: float,
        q_global: int,
        size_global: int,
        snr_global: float,
    ) -> Allocation:
        plan: dict[str, TensorChoice] = {}
        replaced = {}
        compensation = self.curves.compensation
        for unit, code in qps.items():
            for name in unit.names:
                qp = tensor_qp(self.curves.tensors[name], split_code(code)[1])
                if self.curves.compensated_in(name, code) and compensation is not None:
                    plan[name] = Compensation.choice(qp)
                    replaced[name] = compensation.array(name, qp)
                else:
                    plan[name] = TensorChoice(qp=qp)
        return Allocation(
            plan,
            method,
            size,
            snr,
            q_global,
            size_global,
            snr_global,
            {u.label: split_code(q)[1] for u, q in qps.items()},
            self.probe.runs if self.probe is not None else 0,
            replaced,
        )
