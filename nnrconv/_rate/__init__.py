# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Rate control by what the network computes: per-tensor QPs for an output-fidelity or size target.

nnc says what each tensor costs at each QP (`nnc.tensor_rate`); this package asks the format's
runner what each tensor's error does to the outputs on calibration feeds, and returns a plan
(`nnc.CodingOptions(plan=...)`) that nnc codes.
"""

from __future__ import annotations

from nnrconv._rate._allocate import Allocation, Allocator
from nnrconv._rate._curves import RateCurves, lossy_tensors, make_units
from nnrconv._rate._feeds import Feeds, calibration_feeds, parse_input_shapes
from nnrconv._rate._measure import OutputProbe, snr_of
from nnrconv._rate._resolve import Resolved, prepare, resolve

__all__ = [
    "Allocation",
    "Allocator",
    "Feeds",
    "Resolved",
    "prepare",
    "resolve",
    "OutputProbe",
    "RateCurves",
    "calibration_feeds",
    "lossy_tensors",
    "make_units",
    "parse_input_shapes",
    "snr_of",
]
