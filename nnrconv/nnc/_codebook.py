# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Codebook quantization (`integer_codebook()`), decided per tensor as NNCodec's codebook_mode 2.

A tensor is uniformly quantized without dependent quantization (at QP - 2^qp_density when the
uniform alternative uses DQ, the grid DQ effectively has); its sorted unique levels become the
codebook and each level is coded as its codebook index minus CbZeroOffset. The zero offset is the
one whose trial payload (profile 0, no codebook truncation) is shortest, the first on ties; the
Exp-Golomb order of the entry deltas is the cheapest of 0..15. The codebook is kept only when its
payload plus header is smaller than the uniform payload. As in NNCodec 2.1.3 the header is
counted in *bits* against payload *bytes* (`get_codebook_bytes` returns `getNumBitsTouched`),
which is reproduced so that both encoders make the same choice; likewise its trial encoders are
initialised with cabac_unary_length_minus1 greater-than flags (one fewer than the NDU's coder,
`initCtxModels(cabac_unary_length_minus1)` without the +1 of `coder/baseline.py`).

NOTE: NNCodec trial-codes the whole tensor once per codebook entry to find the zero offset. Up to
`EXHAUSTIVE_BUDGET` entries * elements nnrconv does the same (choices and payloads are then
byte-identical); above it only the offsets within `WINDOW` of the most frequent entry and of the
entry nearest zero are tried (a 1024x1024 Gaussian tensor has ~700 entries: 209 s exhaustive),
so a large tensor's zero offset, and hence its payload, may differ from NNCodec's (both decode).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnrconv.nnc import cabac
from nnrconv.nnc._bitio import BitWriter
from nnrconv.nnc._ndu_elements import Codebook

__all__ = ["EXHAUSTIVE_BUDGET", "WINDOW", "CodebookChoice", "build_codebook", "choose_codebook", "codebook_bits"]

EXHAUSTIVE_BUDGET = 1 << 24
"""Codebook entries * tensor elements up to which every zero offset is trial-coded (NNCodec's way)."""

WINDOW = 2
"""Above the budget: offsets tried on each side of the most frequent entry and of the entry nearest 0."""


@dataclass(frozen=True, slots=True)
class CodebookChoice:
    """A tensor's codebook and the indices (minus CbZeroOffset) that are coded."""

    codebook: Codebook
    indices: np.ndarray


def codebook_bits(codebook: Codebook) -> int:
    """Length in bits of `integer_codebook()`."""
    w = BitWriter()
    codebook.write(w)
    return w.bit_position


def _trial_unary(cabac_unary_length_minus1: int) -> int:
    """NNCodec's trial coders have cabac_unary_length_minus1 flags, not cabac_unary_length_minus1 + 1."""
    return max(0, cabac_unary_length_minus1 - 1)


def _payload_size(levels: np.ndarray, coding: cabac.TensorCoding) -> int:
    enc = cabac.PayloadEncoder()
    enc.encode_levels(levels, coding, row_skip=False, param_opt=True)
    return len(enc.finish())


def _candidate_offsets(entries: np.ndarray, raw: np.ndarray) -> list[int]:
    n = len(entries)
    if n * raw.size <= EXHAUSTIVE_BUDGET:
        return list(range(n))
    centres = (int(np.argmax(np.bincount(raw.ravel(), minlength=n))), int(np.argmin(np.abs(entries.astype(np.int64)))))
    return sorted({z for c in centres for z in range(c - WINDOW, c + WINDOW + 1) if 0 <= z < n})


def build_codebook(levels: np.ndarray, cabac_unary_length_minus1: int = 10) -> CodebookChoice:
    """The codebook of integer levels: entries, zero offset (trial-coded) and the cheapest egk."""
    entries, inverse = np.unique(levels, return_inverse=True)
    raw = np.ascontiguousarray(inverse.reshape(levels.shape), dtype=np.int32)
    trial = cabac.TensorCoding(cabac_unary_length_minus1=_trial_unary(cabac_unary_length_minus1), general_profile_idc=0)
    best_zero, best_size = 0, None
    for zero in _candidate_offsets(entries, raw):
        size = _payload_size(np.ascontiguousarray(raw - zero, dtype=np.int32), trial)
        if best_size is None or size < best_size:
            best_zero, best_size = zero, size
    values = tuple(int(v) for v in entries)
    best_cb = None
    for egk in range(16):
        cb = Codebook(egk, values, best_zero)
        if best_cb is None or codebook_bits(cb) < codebook_bits(best_cb):
            best_cb = cb
    assert best_cb is not None
    return CodebookChoice(best_cb, np.ascontiguousarray(raw - best_zero, dtype=np.int32))


def choose_codebook(
    codebook_levels: np.ndarray,
    uniform_levels: np.ndarray,
    uniform_dq: bool,
    *,
    scan_order: int,
    profile: int,
    parent_node_id_present_flag: bool = False,
    cabac_unary_length_minus1: int = 10,
) -> CodebookChoice | None:
    """The codebook for `codebook_levels` when it codes smaller than `uniform_levels`, else None."""
    choice = build_codebook(codebook_levels, cabac_unary_length_minus1)
    common = {
        "scan_order": scan_order,
        "cabac_unary_length_minus1": _trial_unary(cabac_unary_length_minus1),
        "general_profile_idc": profile,
        "parent_node_id_present_flag": parent_node_id_present_flag,
    }
    uniform = _payload_size(uniform_levels, cabac.TensorCoding(dq_flag=uniform_dq, **common))
    coded = _payload_size(choice.indices, cabac.TensorCoding(dq_flag=False, **common))
    return choice if coded + codebook_bits(choice.codebook) < uniform else None
