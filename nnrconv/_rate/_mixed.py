# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Per unit, plain coding (dependent quantization on) or error-compensated coding (DQ off).

NOTE: the two levers compete: error compensation shapes a layer's error away from its inputs'
correlations but codes level for level without dependent quantization, whose trellis is worth
about 2 QP on its own. Which one wins differs per layer (measured on the four models of
`benchmarks/rate_vs_task.py`: on PP-OCR cls the plain plan beat the compensated one, 7.1 vs 8.1
bits per parameter; on rec the compensated one won). Here both are choices of the same
equal-slope search: a unit's "code" is its QP, plus VARIANT_STRIDE when it is compensated, so
the allocator's tables, probes and closed loop run unchanged over both.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from nnrconv._rate._curves import RateCurves, Unit

__all__ = ["VARIANT_STRIDE", "MixedCurves", "split_code"]

VARIANT_STRIDE = 1000
"""A compensated unit's code is its QP plus this (QPs lie within [-160, 60])."""


def split_code(code: int) -> tuple[int, int]:
    """(variant, QP) of a unit's code: variant 0 plain, 1 compensated."""
    variant = 1 if code > VARIANT_STRIDE // 2 else 0
    return variant, code - variant * VARIANT_STRIDE


class MixedCurves:
    """Rate curves over both variants: codes below VARIANT_STRIDE // 2 are `plain`'s QPs, codes
    above it `compensated`'s (only for units with a compensated tensor)."""

    def __init__(self, plain: RateCurves, compensated: RateCurves) -> None:
        self.plain, self.twin = plain, compensated
        self.tensors, self.jobs, self.compensation = plain.tensors, plain.jobs, compensated.compensation

    def variants(self, unit: Unit) -> tuple[int, ...]:
        """The code offsets `unit` may take."""
        return (0, VARIANT_STRIDE) if any(self.twin.compensated(n) for n in unit.names) else (0,)

    def compensated_in(self, name: str, code: int) -> bool:
        """Whether tensor `name` of a unit at `code` is coded error-compensated."""
        return split_code(code)[0] == 1 and self.twin.compensated(name)

    def _of(self, code: int) -> tuple[RateCurves, int]:
        variant, qp = split_code(code)
        return (self.twin if variant else self.plain), qp

    def fill(self, units: list[Unit], codes: list[int]) -> None:
        for offset in (0, VARIANT_STRIDE):
            chosen = [u for u in units if offset in self.variants(u)]
            qps = [split_code(c)[1] for c in codes if split_code(c)[0] * VARIANT_STRIDE == offset]
            if chosen and qps:
                (self.twin if offset else self.plain).fill(chosen, qps)

    def unit(self, unit: Unit, code: int) -> tuple[int, float]:
        curves, qp = self._of(code)
        return curves.unit(unit, qp)

    def reconstruction(self, unit_codes: Mapping[Unit, int]) -> dict[str, np.ndarray]:
        plain = {u: split_code(c)[1] for u, c in unit_codes.items() if split_code(c)[0] == 0}
        twin = {u: split_code(c)[1] for u, c in unit_codes.items() if split_code(c)[0] == 1}
        return {**self.plain.reconstruction(plain), **self.twin.reconstruction(twin)}
