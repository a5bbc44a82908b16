# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""What every format's error-compensation tests share: the end-to-end check (an output target
with calibration holds on the decoded model, whose compensated values decode exactly), and a
fixture that lets small layers be compensated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nnrconv
from nnrconv import nnc
from nnrconv._rate import Allocation, Allocator, OutputProbe, _hessian, calibration_feeds, prepare, snr_of
from nnrconv.core import FormatPlugin, Model


def compensated_target_holds(
    path: Path, calib: Path, fmt: FormatPlugin, model: Model, out: Path, target: float = 30.0
) -> tuple[str, Allocation, Allocator]:
    """Convert `path` to `out` at `target` dB with `calib`; assert the decoded model meets the
    target on the calibration inputs and holds exactly the compensated values the allocator
    measured. Returns the summary line, the compensated allocation and the allocator."""
    result = nnrconv.convert(path, out, options=nnc.CodingOptions(output_snr_db=target), calibration=calib)
    assert result.allocation is not None and "error-compensated layers" in result.allocation
    decoded = nnrconv.load(out)
    feeds, _ = calibration_feeds(calib, fmt.input_specs(model))
    probe = OutputProbe(fmt, model, feeds, margins=False)
    assert snr_of(probe.compare([fmt.run(decoded, f) for f in probe.feeds])) >= target
    allocator, _ = prepare(nnrconv.load(path), fmt, calibration=calib)
    assert allocator.compensated is not None
    allocation = allocator.compensated.for_output_snr(target)
    assert allocation.replaced
    for name, values in allocation.replaced.items():
        assert np.array_equal(decoded.tensors[name].numpy(), values), name
    return result.allocation, allocation, allocator


@pytest.fixture(scope="module", autouse=True)
def every_layer_compensated():
    """For tests of layer geometry on a few samples (autouse where imported): the rank rule
    (`MIN_ROWS_PER_INPUT`, tested in tests/rate) would leave their small linear layers out."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_hessian, "MIN_ROWS_PER_INPUT", 0)
        yield
