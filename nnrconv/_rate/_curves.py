# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Allocation units and their rate curves R_u(qp), D_u(qp), from nnc's `tensor_rate`.

A unit is a set of lossy float tensors that share one QP: each large tensor is its own unit, and
the many small ones (biases, norms) form one unit, so that probing sensitivities costs one model
run per unit, not per tensor. Within a unit, tensors follow NNCodec's rule: 1-D and 0-d tensors
are coded 2·2^qp_density finer than the unit's QP. "All units at QP q" is therefore exactly one
global QP q, NNCodec's way, which keeps the global QP a candidate of the same search.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from nnrconv import nnc
from nnrconv._rate._compensate import Compensation

__all__ = ["MAX_UNITS", "NONWEIGHT_OFFSET", "RateCurves", "Unit", "lossy_tensors", "make_units"]

MAX_UNITS = 96
"""At most this many units: the largest tensors alone, the rest together (one run each to probe)."""

NONWEIGHT_OFFSET = -8
"""QP offset of 1-D and 0-d tensors inside a unit (NNCodec's nonweight_qp = qp - 2·2^2)."""


@dataclass(frozen=True, slots=True)
class Unit:
    """Tensors coded at one QP (plus NONWEIGHT_OFFSET for the 1-D ones)."""

    names: tuple[str, ...]
    elements: int

    @property
    def label(self) -> str:
        return self.names[0] if len(self.names) == 1 else f"{len(self.names)} small tensors"


def lossy_tensors(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The tensors nnc would quantize (finite floats of 16 or more elements): what a plan decides."""
    options = nnc.CodingOptions()
    chosen = {}
    for name, array in tensors.items():
        plan = nnc.plan_tensor(array, options)
        if plan is not None and plan.payload_type == nnc.PayloadType.NNR_PT_FLOAT and not plan.exact:
            chosen[name] = array
    return chosen


def make_units(tensors: Mapping[str, np.ndarray], max_units: int = MAX_UNITS) -> list[Unit]:
    """Units over `tensors` (already the lossy ones), largest first, deterministic on ties."""
    order = sorted(tensors, key=lambda n: (-tensors[n].size, n))
    alone, rest = order[: max_units - 1], order[max_units - 1 :]
    units = [Unit((n,), int(tensors[n].size)) for n in alone]
    if rest:
        units.append(Unit(tuple(rest), int(sum(tensors[n].size for n in rest))))
    return units


def tensor_qp(array: np.ndarray, unit_qp: int) -> int:
    """The QP a tensor of a unit at `unit_qp` is coded with."""
    return unit_qp + (NONWEIGHT_OFFSET if array.ndim < 2 else 0)


class RateCurves:
    """Cached (payload bytes, squared error) of every tensor at every QP asked for.

    With `compensation`, the tensors it covers are coded error-compensated (on their grid, DQ
    off): their bytes, errors and reconstructions are those of the compensated values.
    """

    def __init__(
        self, tensors: Mapping[str, np.ndarray], jobs: int = 1, compensation: Compensation | None = None
    ) -> None:
        self.tensors = dict(tensors)
        self.jobs = max(1, jobs)
        self.compensation = compensation
        self._cache: dict[tuple[str, int], tuple[int, float]] = {}

    def compensated(self, name: str) -> bool:
        return self.compensation is not None and name in self.compensation.hessians

    def variants(self, unit: Unit) -> tuple[int, ...]:
        """The code offsets a unit may take (one here: its QP; see `_mixed.MixedCurves`)."""
        return (0,)

    def compensated_in(self, name: str, code: int) -> bool:
        """Whether tensor `name` of a unit at `code` (its QP here) is coded error-compensated."""
        return self.compensated(name)

    def _measure(self, key: tuple[str, int]) -> tuple[int, float]:
        name, qp = key
        if self.compensated(name):
            assert self.compensation is not None
            return self.compensation.measure(name, qp)
        rate = nnc.tensor_rate(self.tensors[name], qp)
        return rate.payload_bytes, rate.sse

    def fill(self, units: list[Unit], unit_qps: list[int]) -> None:
        """Measure every tensor of `units` at every unit QP in `unit_qps` (threads release the GIL)."""
        keys = [(n, tensor_qp(self.tensors[n], q)) for u in units for n in u.names for q in unit_qps]
        todo = sorted({k for k in keys if k not in self._cache}, key=lambda k: (-self.tensors[k[0]].size, k))
        with ThreadPoolExecutor(self.jobs) as pool:
            for key, value in zip(todo, pool.map(self._measure, todo), strict=True):
                self._cache[key] = value

    def unit(self, unit: Unit, unit_qp: int) -> tuple[int, float]:
        """(payload bytes, squared error) of a unit at a QP."""
        self.fill([unit], [unit_qp])
        size, sse = 0, 0.0
        for name in unit.names:
            b, e = self._cache[(name, tensor_qp(self.tensors[name], unit_qp))]
            size, sse = size + b, sse + e
        return size, sse

    def tensor(self, name: str, qp: int) -> tuple[int, float]:
        """(payload bytes, squared error) of one tensor at its own QP `qp`."""
        if (name, qp) not in self._cache:
            self._cache[(name, qp)] = self._measure((name, qp))
        return self._cache[(name, qp)]

    def reconstruction(self, unit_qps: Mapping[Unit, int]) -> dict[str, np.ndarray]:
        """What the decoder returns for every tensor of the units at their QPs."""
        jobs = [(n, tensor_qp(self.tensors[n], q)) for u, q in unit_qps.items() for n in u.names]

        def rebuild(key: tuple[str, int]) -> np.ndarray:
            if self.compensated(key[0]):
                assert self.compensation is not None
                return self.compensation.array(*key)
            return nnc.tensor_rate(self.tensors[key[0]], key[1]).reconstruction

        with ThreadPoolExecutor(self.jobs) as pool:
            return {k[0]: r for k, r in zip(jobs, pool.map(rebuild, jobs), strict=True)}
