# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""How one tensor is laid out and coded in a DeepCABAC payload, and the checks on the arrays given.

Shared by the coder wrappers (`cabac`) and the quantizer (`_quantization`); users reach these
names through `nnrconv.nnc.cabac`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class TensorCoding:
    """How one tensor is entropy coded; every field comes from the NDU header or the MPS.

    Attributes:
        dq_flag: dependent quantization (levels are 2k - sgn(k)·(state & 1)).
        scan_order: 0 row-major, 1..4 block scan with blocks of 8, 16, 32, 64 (forced to 0 for
            tensors with one row or one column).
        cabac_unary_length_minus1: number of greater-than flags minus 1 (NNCodec writes 10).
        general_profile_idc: 0 (1st edition syntax) or 1 (2nd edition: row skipping, codebook-aware
            binarization).
        parent_node_id_present_flag: the NDU signals a parent node; then a
            hist_dep_sig_prob_enabled_flag is coded per tensor (1 when coded with a history).
        codebook_size: size of the tensor's codebook, 0 without codebook.
        codebook_zero_offset: `CbZeroOffset` of the codebook.
    """

    dq_flag: bool = False
    scan_order: int = 0
    cabac_unary_length_minus1: int = 10
    general_profile_idc: int = 1
    parent_node_id_present_flag: bool = False
    codebook_size: int = 0
    codebook_zero_offset: int = 0

    def core_kwargs(self) -> dict:
        """Keyword arguments of the compiled core's encode_levels / decode_levels."""
        if not 0 <= self.cabac_unary_length_minus1 <= 255:
            raise ValueError(f"cabac_unary_length_minus1 {self.cabac_unary_length_minus1!r} is not in 0..255 (u(8))")
        return {
            "dq": bool(self.dq_flag),
            "scan_order": int(self.scan_order),
            "profile": int(self.general_profile_idc),
            "num_gtx": int(self.cabac_unary_length_minus1) + 1,
            "parent_present": bool(self.parent_node_id_present_flag),
            "codebook_size": int(self.codebook_size),
            "codebook_zero_offset": int(self.codebook_zero_offset),
        }


@dataclass(frozen=True, slots=True)
class TensorLayout:
    """One tensor of an NDU payload, for `entry_points`.

    Attributes:
        dims: tensor dimensions.
        coding: its coding parameters.
        qp_density: when not None, a QP offset of 6 + qp_density bits precedes the levels
            (NNR_PT_FLOAT / NNR_PT_BLOCK).
        base, history: as for `PayloadDecoder.decode_levels` (incremental coding).
    """

    dims: tuple[int, ...]
    coding: TensorCoding
    qp_density: int | None = None
    base: np.ndarray | None = None
    history: np.ndarray | None = None


def matrix_view(dims: Sequence[int]) -> tuple[int, int]:
    """The (rows, columns) matrix DeepCABAC scans: dims[0] x prod(dims[1:]); a scalar is [1]."""
    dims = tuple(int(d) for d in dims) or (1,)
    if any(d <= 0 for d in dims):
        raise ValueError(f"tensor dimensions must be positive, got {dims!r}")
    return dims[0], math.prod(dims[1:])


def qp_offset_bits(qp_density: int) -> int:
    """Width of the bypass-coded QP offset field: 6 + qp_density."""
    if not 0 <= qp_density <= 7:
        raise ValueError(f"qp_density {qp_density!r} is not in 0..7 (u(3))")
    return 6 + qp_density


def checked_levels(levels: np.ndarray) -> np.ndarray:
    """The levels if they are a C-contiguous int32 array; TypeError / ValueError otherwise."""
    if not isinstance(levels, np.ndarray):
        raise TypeError(f"levels must be a numpy int32 array, got {type(levels).__name__}")
    if levels.dtype != np.int32:
        raise TypeError(f"levels must have dtype int32, got {levels.dtype}; convert with levels.astype(np.int32)")
    if not levels.flags.c_contiguous:
        raise ValueError("levels must be C-contiguous; pass np.ascontiguousarray(levels)")
    return levels


def checked_side_array(array: np.ndarray | None, shape: tuple[int, ...], dtype: type, what: str) -> np.ndarray | None:
    """Check a base / history array against the tensor it goes with (same element count)."""
    if array is None:
        return None
    if not isinstance(array, np.ndarray) or array.dtype != dtype:
        raise TypeError(f"{what} must be a numpy {np.dtype(dtype).name} array")
    if array.size != math.prod(shape or (1,)):
        raise ValueError(f"{what} has {array.size} elements, the tensor has shape {shape}")
    return np.ascontiguousarray(array)
