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

import dataclasses
from collections.abc import Callable

import numpy as np

from nnrconv import nnc
from nnrconv.core import DType, Model, Tensor
from nnrconv.core._narrow import BIT_PATTERN_TYPES, bfloat16_values, bit_carrier, numeric_view, restore_narrow

__all__ = ["Carrier", "carriers", "comparable", "decoded_snr_db", "source_defaults", "with_roles"]

Carrier = Callable[[], np.ndarray]


class _Source:
    """A carrier: the tensor's data, converted; `release()` drops a memory map after each read."""

    __slots__ = ("convert", "tensor")

    def __init__(self, tensor: Tensor, convert: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.tensor, self.convert = tensor, convert

    def __call__(self) -> np.ndarray:
        array = self.tensor.numpy()
        return array if self.convert is None else self.convert(array)

    def release(self) -> None:
        release = getattr(self.tensor, "release", None)
        if release is not None:
            release()


def _bits(tensor: Tensor) -> Carrier:
    return _Source(tensor, bit_carrier)


def carrier(tensor: Tensor, options: nnc.CodingOptions, narrow: bool) -> Carrier | None:
    """The thunk giving the array NNC codes for `tensor`, or None when it stays in the topology.

    `narrow`: the format restores narrow floats from their carriers. Only native numpy tensors
    are read here (whether their values can be carried depends on them); narrow ones are not.
    """
    dtype = tensor.dtype
    if narrow and dtype is DType.BFLOAT16:
        return _bits(tensor) if options.lossless else _Source(tensor, bfloat16_values)
    if narrow and dtype in BIT_PATTERN_TYPES and dtype is not DType.FLOAT16:
        return _bits(tensor)  # float8: exact, as the integers of its bits
    if not dtype.is_numpy_native or not nnc.can_carry(dtype.storage_dtype):
        return None
    source = _Source(tensor)
    fits = nnc.can_carry(tensor.numpy(), options)
    source.release()
    if fits:
        return source
    if narrow and dtype is DType.FLOAT16:
        return _bits(tensor)  # lossless and off any QP grid: exact as bit patterns
    return None


def source_defaults(model: Model, options: nnc.CodingOptions) -> nnc.CodingOptions:
    """`options` knowing which tensors were bfloat16, so that they take their own default SNR
    target (`nnc.BFLOAT16_SNR_DB`): nnc only sees their float32 view."""
    if options.snr_db is not None or options.lossless or options.qp is not None:
        return options
    names = frozenset(t.name for t in model if t.dtype is DType.BFLOAT16)
    return dataclasses.replace(options, bfloat16_tensors=names) if names != options.bfloat16_tensors else options


def carriers(model: Model, options: nnc.CodingOptions, narrow: bool) -> dict[str, Carrier]:
    """Per carried tensor, in model order, the thunk giving its NNC array."""
    found = {}
    for tensor in model:
        made = carrier(tensor, options, narrow)
        if made is not None:
            found[tensor.name] = made
    return found


def decoded_snr_db(tensor: Tensor, decoded: np.ndarray) -> float | None:
    """Weight SNR of a decoded data unit against the original tensor, carriers undone; None when
    the two cannot be compared numerically (float8, strings, other sizes)."""
    original = numeric_view(tensor.numpy(), tensor.dtype)
    if tensor.dtype in BIT_PATTERN_TYPES and decoded.dtype.kind in "iu":
        try:
            decoded = restore_narrow(decoded, tensor.dtype)
        except ValueError:
            return None
    restored = numeric_view(decoded, tensor.dtype)
    if original is None or restored is None or original.size != restored.size:
        return None
    if original.dtype.kind not in "fiu" or restored.dtype.kind not in "fiu":
        return None
    return nnc.snr_db(original, restored)


def comparable(tensor: Tensor) -> np.ndarray:
    """A tensor's data for `diff`: bfloat16 as its exact float32 values (a bijection, so equality
    is unchanged), everything else as stored."""
    array = tensor.numpy()
    view = numeric_view(array, tensor.dtype)
    return array if view is None else view


def with_roles(model: Model, options: nnc.CodingOptions) -> nnc.CodingOptions:
    """`options` with each tensor's role from the plugin (`Tensor.role`), so that nnc codes
    weights and non-weights by what they are rather than by their number of dimensions."""
    if options.roles is not None:
        return options
    return dataclasses.replace(options, roles={tensor.name: tensor.role for tensor in model})
