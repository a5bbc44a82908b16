# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Which data units of an update matter most: each tensor's output improvement, measured.

A receiver of an update cut short applies the complete units at its start (`--salvage --base`),
so the units go out most useful first (`nnc.importance_order`). When the model runs, usefulness
is measured rather than guessed from the weights: a tensor's *improvement* is how far the
outputs stay from the new model's when every other tensor is updated and this one alone keeps
its base value (relative output noise energy summed over the float outputs, the rate
allocator's `OutputProbe`, on `--calibration` inputs or seeded synthetic ones).

NOTE: measured the other way round (the base with one tensor's difference alone applied), the
order was worse than the difference energy on the PP-OCR classifier (benchmarks/partial_update.py:
54 % against 79 % of the output error removed on average over the received fractions): a
difference applied alone into the base interacts with the others (batch-norm statistics above
all), while the error left by one missing tensor near the new model is what a receiver sees once
most units arrived, and adds up over tensors. Each measurement is one run of the model per
changed tensor, so large models and updates that change many tensors keep the difference-energy
order unless calibration inputs ask for the measurement.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from nnrconv import nnc
from nnrconv.core import FormatPlugin, Model, NNRConvError, UnsupportedError

__all__ = ["MAX_PROBED_PARAMETERS", "MAX_PROBED_TENSORS", "changed_tensors", "measured_importance"]

MAX_PROBED_TENSORS = 256
"""Without calibration inputs, updates changing more float tensors than this are not probed."""

MAX_PROBED_PARAMETERS = 50_000_000
"""Without calibration inputs, models with more parameters than this are not probed."""


def changed_tensors(model: Model, base: nnc.BaseModel) -> dict[str, np.ndarray]:
    """The base values of the model's float tensors that the update changes (same name and size)."""
    changed: dict[str, np.ndarray] = {}
    for tensor in model:
        before = base.tensors.get(tensor.name)
        if before is None or not (tensor.dtype.is_numpy_native and tensor.dtype.is_floating_point):
            continue
        new = tensor.numpy()
        if before.values.size != new.size:
            continue
        old = before.values.reshape(new.shape)
        if not np.array_equal(old, new):
            changed[tensor.name] = old
    return changed


def _total(noise: Mapping[str, float]) -> float:
    return float(sum(noise.values()))


def measured_importance(
    model: Model,
    base: nnc.BaseModel,
    fmt: FormatPlugin | None,
    *,
    calibration: str | os.PathLike[str] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
) -> dict[str, float] | None:
    """Per changed float tensor, the output error left when it alone stays at its base; None when
    the model is not measured (no runner, nothing changed, too large, or it does not run on
    synthetic inputs): the caller then orders by difference energy.

    Raises:
        UnsupportedError: `calibration` is given but the model cannot run on it.
    """
    if fmt is None or not fmt.can_run(model):
        if calibration is not None:
            raise UnsupportedError(
                "--calibration measures which update units matter most by running the model; this model has no runner"
            )
        return None
    changed = changed_tensors(model, base)
    if not changed:
        return None
    if calibration is None and (len(changed) > MAX_PROBED_TENSORS or model.parameter_count > MAX_PROBED_PARAMETERS):
        return None
    from nnrconv._rate import OutputProbe, calibration_feeds

    shapes = {name: tuple(dims) for name, dims in (input_shapes or {}).items()}
    feeds, _ = calibration_feeds(calibration, fmt.input_specs(model), shapes=shapes, seed=seed)
    try:
        probe = OutputProbe(fmt, model, feeds, margins=False)
        if not probe.names:
            return None
        return {name: _total(probe.noise({name: old})) for name, old in changed.items()}
    except NNRConvError as exc:
        if calibration is not None:
            raise UnsupportedError(f"{exc}; the update's units cannot be measured on the calibration inputs") from exc
        return None
