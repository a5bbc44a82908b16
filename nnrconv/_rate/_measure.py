# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Running a model with some tensors replaced, and how far its outputs move (output SNR).

Output fidelity is measured per float output over all calibration feeds: noise energy over signal
energy. The model's output SNR is that of its worst output, so that a small output (a box map, a
state) is not hidden by a large one.

NOTE: probability outputs (non-negative, summing to 1 over the last axis) are compared as
log-probabilities floored at PROBABILITY_FLOOR, i.e. as logits up to a constant: on saturated
softmax outputs the SNR of probabilities jumped by 8 dB between neighbouring QPs (PP-OCR's
direction classifier), as a few samples near p = 0.5 dominated it, while classes far below the
floor never decide anything.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

from nnrconv._rate._feeds import Feeds, batched
from nnrconv.core import ArrayTensor, FormatPlugin, Model, NNRConvError

__all__ = ["PROBABILITY_FLOOR", "OutputProbe", "snr_of"]

PROBABILITY_FLOOR = 1e-4
"""Probabilities below this are compared as equal (log(1e-4): never a decision)."""


def _is_probability(values: np.ndarray) -> bool:
    if values.dtype.kind != "f" or values.ndim < 1 or values.shape[-1] < 2 or values.size == 0:
        return False
    if float(values.min()) < 0 or float(values.max()) > 1:
        return False
    return bool(np.allclose(values.sum(axis=-1, dtype=np.float64), 1.0, atol=1e-3))


def _as_logits(values: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(values.astype(np.float64), PROBABILITY_FLOOR))


MARGIN_FLOOR = 0.05
"""Decision margins (top-1 minus top-2 logit) below this count as this: a near-tie, not a zero."""


class _Margins:
    """Decision margins of a probability output: which two classes lead each row, by how much."""

    def __init__(self, probabilities: np.ndarray) -> None:
        logits = _as_logits(probabilities).reshape(-1, probabilities.shape[-1])
        order = np.argsort(-logits, axis=-1, kind="stable")[:, :2]
        self.top = order
        rows = np.arange(logits.shape[0])
        self.rows = rows
        self.margin = logits[rows, order[:, 0]] - logits[rows, order[:, 1]]

    def noise(self, probabilities: np.ndarray) -> tuple[float, int]:
        """Σ (change of each row's margin / its margin)², and the row count."""
        logits = _as_logits(probabilities).reshape(-1, probabilities.shape[-1])
        moved = logits[self.rows, self.top[:, 0]] - logits[self.rows, self.top[:, 1]] - self.margin
        ratio = moved / np.maximum(self.margin, MARGIN_FLOOR)
        return float(np.dot(ratio, ratio)), int(ratio.size)


def snr_of(noise: Mapping[str, float]) -> float:
    """Output SNR (dB) from per-output relative noise: that of the worst output."""
    worst = max(noise.values(), default=0.0)
    return math.inf if worst <= 0 else -10.0 * math.log10(worst)


class OutputProbe:
    """The model's reference outputs on the feeds, and runs with replaced tensors."""

    def __init__(self, fmt: FormatPlugin, model: Model, feeds: Feeds, *, margins: bool = True) -> None:
        self.fmt, self.model = fmt, model
        self.runs = 0
        joined = batched(feeds)
        self.feeds = feeds
        if joined is not None:
            try:
                self.reference = [self._run(joined[0])]
                self.feeds = joined
            except NNRConvError:
                joined = None
        if joined is None:
            self.reference = [self._run(feed) for feed in feeds]
        self.names = [
            n
            for n in self.reference[0]
            if self.reference[0][n].dtype.kind == "f"
            and any(float(np.square(r[n], dtype=np.float64).sum()) > 0 for r in self.reference)
        ]
        self.probabilities = {n for n in self.names if all(_is_probability(r[n]) for r in self.reference)}
        self._ref = [{n: self._view(n, r[n]) for n in self.names} for r in self.reference]
        self._power = {n: sum(float(np.square(r[n]).sum()) for r in self._ref) for n in self.names}
        # Classifier-like outputs also report how their decision margins move (key "name:margin"):
        # near-ties decide whether an answer flips, which the outputs' overall SNR hardly sees.
        self._margins = (
            [{n: _Margins(r[n]) for n in sorted(self.probabilities)} for r in self.reference] if margins else []
        )

    @property
    def keys(self) -> list[str]:
        """What `noise` reports: every float output, and ":margin" for classifier-like ones."""
        return self.names + ([f"{n}:margin" for n in sorted(self.probabilities)] if self._margins else [])

    def _view(self, name: str, values: np.ndarray) -> np.ndarray:
        """What is compared: logits for probability outputs, else the values (float64)."""
        if name in self.probabilities:
            logits = _as_logits(values)
            return logits - logits.mean(axis=-1, keepdims=True)
        return values.astype(np.float64)

    def _run(self, feed: dict[str, np.ndarray], model: Model | None = None) -> dict[str, np.ndarray]:
        self.runs += 1
        return self.fmt.run(model or self.model, feed)

    def with_tensors(self, replaced: Mapping[str, np.ndarray]) -> Model:
        """The model with some tensors replaced (cast back to each tensor's own element type)."""
        tensors = dict(self.model.tensors)
        for name, values in replaced.items():
            old = tensors[name]
            array = np.ascontiguousarray(values.reshape(old.shape), dtype=old.dtype.storage_dtype)
            tensors[name] = ArrayTensor(name, array, dtype=old.dtype, role=old.role)
        return dataclasses.replace(self.model, tensors=tensors)

    def outputs(self, replaced: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        model = self.with_tensors(replaced)
        return [self._run(feed, model) for feed in self.feeds]

    def noise(self, replaced: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Relative noise energy of every float output when `replaced` tensors replace the model's."""
        return self.compare(self.outputs(replaced))

    def compare(self, outputs: list[dict[str, np.ndarray]]) -> dict[str, float]:
        noise = dict.fromkeys(self.names, 0.0)
        for ref, out in zip(self._ref, outputs, strict=True):
            for n in self.names:
                diff = ref[n] - self._view(n, out[n])
                noise[n] += float(np.dot(diff.ravel(), diff.ravel()))
        result = {n: noise[n] / self._power[n] for n in self.names}
        for n in sorted(self.probabilities) if self._margins else ():
            parts = [m[n].noise(out[n]) for m, out in zip(self._margins, outputs, strict=True)]
            result[f"{n}:margin"] = sum(p[0] for p in parts) / max(1, sum(p[1] for p in parts))
        return result

    def agreement(self, outputs: list[dict[str, np.ndarray]]) -> float | None:
        """Share of positions whose argmax over the last axis is unchanged (classifier-like
        outputs: float, last axis above 1); None when no output is like that."""
        same = total = 0
        for ref, out in zip(self.reference, outputs, strict=True):
            for n in self.names:
                a, b = ref[n], out[n]
                if a.ndim >= 2 and a.shape[-1] > 1:
                    same += int(np.sum(np.argmax(a, axis=-1) == np.argmax(b, axis=-1)))
                    total += int(np.prod(a.shape[:-1]))
        return same / total if total else None
