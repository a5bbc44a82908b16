# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Which tensors of a model travel as NNR data units, and as which array.

Most tensors travel as themselves. bfloat16 and float8 have no NNR output format and numpy has no
bfloat16, so for formats whose plugin restores them (`FormatPlugin.carries_narrow_floats`) they
travel in a carrier that every NNR decoder reads (see `nnrconv.core._narrow`): a bfloat16
tensor's float32 values in lossy modes, the integers of its bit patterns with `--lossless`; float8
always as bit patterns; float16 off a QP grid, with `--lossless`, as bit patterns too.

Carriers are thunks, so that a model's tensors are read (and widened) one at a time while they
are coded, never all at once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from nnrconv import nnc
from nnrconv.core import DType, Model, Tensor
from nnrconv.core._narrow import BIT_PATTERN_TYPES, bfloat16_values, bit_carrier

__all__ = ["Carrier", "carriers"]

Carrier = Callable[[], np.ndarray]


def _bits(tensor: Tensor) -> Carrier:
    return lambda: bit_carrier(tensor.numpy())


def carrier(tensor: Tensor, options: nnc.CodingOptions, narrow: bool) -> Carrier | None:
    """The thunk giving the array NNC codes for `tensor`, or None when it stays in the topology.

    `narrow`: the format restores narrow floats from their carriers. Only native numpy tensors
    are read here (whether their values can be carried depends on them); narrow ones are not.
    """
    dtype = tensor.dtype
    if narrow and dtype is DType.BFLOAT16:
        return _bits(tensor) if options.lossless else (lambda: bfloat16_values(tensor.numpy()))
    if narrow and dtype in BIT_PATTERN_TYPES and dtype is not DType.FLOAT16:
        return _bits(tensor)  # float8: exact, as the integers of its bits
    if not dtype.is_numpy_native or not nnc.can_carry(dtype.storage_dtype):
        return None
    if nnc.can_carry(tensor.numpy(), options):
        return tensor.numpy
    if narrow and dtype is DType.FLOAT16:
        return _bits(tensor)  # lossless and off any QP grid: exact as bit patterns
    return None


def carriers(model: Model, options: nnc.CodingOptions, narrow: bool) -> dict[str, Carrier]:
    """Per carried tensor, in model order, the thunk giving its NNC array."""
    found = {}
    for tensor in model:
        made = carrier(tensor, options, narrow)
        if made is not None:
            found[tensor.name] = made
    return found
