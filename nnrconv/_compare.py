# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`nnrconv diff` / `nnrconv.compare`: tensor-by-tensor differences between two models.

Tensors are paired by name first. Converters rename tensors (ONNX → NNEF names variables after
their operations), so what is left is paired by content: same element type and the same shape
once unit dimensions are dropped (NNEF keeps a bias as [1, C] where ONNX has [C]). Bit-identical
contents pair first, in model order; then each remaining tensor of the first model takes the
closest remaining tensor of the second (smallest relative error, earliest position on ties),
provided the error stays below `MAX_CONTENT_REL_ERROR`: past that it is some other tensor.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from nnrconv import nnc
from nnrconv._carriage import comparable
from nnrconv.core import Model

__all__ = ["MAX_CONTENT_REL_ERROR", "Comparison", "TensorDifference", "compare", "render"]

BY_NAME = "name"
BY_CONTENT = "content"
# A pairing by content needs max|a-b| <= this * max|a| (an SNR of roughly 6 dB or better).
MAX_CONTENT_REL_ERROR = 0.5


@dataclass(frozen=True, slots=True)
class TensorDifference:
    """How one tensor differs between two models (`compare`).

    `max_rel` is max|a - b| / max|a| (0 for identical tensors, inf when a is all zeros and b is
    not); `snr_db` is inf for identical tensors and None when the two cannot be compared
    numerically. `other_name` is the tensor's name in the second model, `matched_by` says how
    it was paired ("name" or "content").
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    max_abs: float
    bit_identical: bool
    other_name: str = ""
    matched_by: str = BY_NAME
    max_rel: float = 0.0
    snr_db: float | None = math.inf
    other_shape: tuple[int, ...] = ()


@dataclass(slots=True)
class Comparison:
    differences: list[TensorDifference] = field(default_factory=list)
    only_in_first: list[str] = field(default_factory=list)
    only_in_second: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.only_in_first and not self.only_in_second and all(d.bit_identical for d in self.differences)

    @property
    def max_abs(self) -> float:
        return max((d.max_abs for d in self.differences), default=0.0)

    @property
    def matched_by_name(self) -> int:
        return sum(d.matched_by == BY_NAME for d in self.differences)

    @property
    def matched_by_content(self) -> int:
        return sum(d.matched_by == BY_CONTENT for d in self.differences)


def compare(first: Model, second: Model) -> Comparison:
    """Tensor-by-tensor differences between two models: paired by name, then by content."""
    result = Comparison()
    left = [name for name in first.tensors if name not in second.tensors]
    right = [name for name in second.tensors if name not in first.tensors]
    pairs: dict[str, tuple[str, str]] = {}
    for name in first.tensors:
        if name in second.tensors:
            pairs[name] = (name, BY_NAME)
    arrays_a = {name: comparable(first.tensors[name]) for name in left}
    arrays_b = {name: comparable(second.tensors[name]) for name in right}
    for a_name, b_name in _pair_by_content(arrays_a, arrays_b):
        pairs[a_name] = (b_name, BY_CONTENT)
    for name, tensor in first.tensors.items():
        if name not in pairs:
            result.only_in_first.append(name)
            continue
        other, how = pairs[name]
        a = arrays_a[name] if how == BY_CONTENT else comparable(tensor)
        b = arrays_b[other] if how == BY_CONTENT else comparable(second.tensors[other])
        result.differences.append(_difference(name, other, how, a, b, tensor.dtype.name))
    matched = {other for other, _ in pairs.values()}
    result.only_in_second = [n for n in second.tensors if n not in matched]
    return result


def _key(array: np.ndarray) -> tuple[str, tuple[int, ...]]:
    """What two tensors must share to be the same tensor under another name."""
    return array.dtype.str, tuple(d for d in array.shape if d != 1)


def _digest(array: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16).digest()


def _pair_by_content(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> list[tuple[str, str]]:
    """Pairs (name in first, name in second) of the tensors that names could not pair."""
    pairs: list[tuple[str, str]] = []
    free = dict(second)  # insertion order = position in the second model
    # Bit-identical contents first: exact, and cheap (one digest per tensor).
    by_digest: dict[tuple[tuple[str, tuple[int, ...]], bytes], list[str]] = {}
    for name, array in free.items():
        by_digest.setdefault((_key(array), _digest(array)), []).append(name)
    rest = []
    for name, array in first.items():
        candidates = by_digest.get((_key(array), _digest(array)))
        if candidates:
            other = candidates.pop(0)
            del free[other]
            pairs.append((name, other))
        else:
            rest.append(name)
    # Then the closest tensor of the same kind and shape, if close enough to be the same one.
    for name in rest:
        a = first[name]
        best, best_error = None, MAX_CONTENT_REL_ERROR
        for other, b in free.items():
            if _key(b) != _key(a) or a.dtype.kind not in "fiu":
                continue
            error = _relative_error(a.reshape(-1), b.reshape(-1))
            if error <= best_error and (best is None or error < best_error):
                best, best_error = other, error
        if best is not None:
            del free[best]
            pairs.append((name, best))
    return pairs


def _relative_error(a: np.ndarray, b: np.ndarray) -> float:
    if a.size == 0:
        return 0.0
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    diff = float(np.max(np.abs(a64 - b64)))
    scale = float(np.max(np.abs(a64)))
    if diff == 0:
        return 0.0
    return diff / scale if scale > 0 else math.inf


def _difference(name: str, other: str, how: str, a: np.ndarray, b: np.ndarray, dtype: str) -> TensorDifference:
    same_layout = a.shape == b.shape or (how == BY_CONTENT and _key(a) == _key(b))
    identical = same_layout and a.dtype == b.dtype and a.tobytes() == b.tobytes()
    numeric = a.dtype.kind in "fiub" and b.dtype.kind in "fiub"
    snr: float | None = None
    if not same_layout:
        max_abs = max_rel = math.inf
    elif numeric and a.size:
        flat_a, flat_b = a.reshape(-1), b.reshape(-1)
        max_abs = float(np.max(np.abs(flat_a.astype(np.float64) - flat_b.astype(np.float64))))
        max_rel = _relative_error(flat_a, flat_b)
        snr = math.inf if identical else nnc.snr_db(flat_a, flat_b)
    else:
        max_abs = max_rel = 0.0 if identical else math.inf
        snr = math.inf if identical else None
    return TensorDifference(name, tuple(a.shape), dtype, max_abs, identical, other, how, max_rel, snr, tuple(b.shape))


def _number(value: float | None, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return format(value, spec)


def render(comparison: Comparison, first: str, second: str, show_all: bool = False) -> list[str]:
    """The lines `nnrconv diff` prints: a table of differing (or, with show_all, all) tensors,
    the unmatched ones, and the summary (how many matched by name, by content, unmatched)."""
    rows = [d for d in comparison.differences if show_all or not d.bit_identical]
    lines = []
    if rows:
        header = f"{'tensor':<40} {'dtype':<8} {'shape':<18} {'max|diff|':>10} {'rel.err':>9} {'SNR dB':>7}"
        lines.append(f"{header}  matched")
    for d in rows:
        shape = str(list(d.shape)).replace(" ", "")
        how = "name" if d.matched_by == BY_NAME else f"content: {d.other_name}"
        if d.other_shape and d.other_shape != d.shape:
            how += " " + str(list(d.other_shape)).replace(" ", "")
        lines.append(
            f"{d.name:<40} {d.dtype:<8} {shape:<18} {_number(d.max_abs):>10} {_number(d.max_rel):>9} "
            f"{_number(d.snr_db, '.1f'):>7}  {how}"
        )
    lines += [f"{name}: only in {first}" for name in comparison.only_in_first]
    lines += [f"{name}: only in {second}" for name in comparison.only_in_second]
    same = sum(d.bit_identical for d in comparison.differences)
    unmatched = len(comparison.only_in_first) + len(comparison.only_in_second)
    lines.append(
        f"{len(comparison.differences)} tensors compared, {same} bit-identical, "
        f"largest difference {comparison.max_abs:.6g}; matched {comparison.matched_by_name} by name, "
        f"{comparison.matched_by_content} by content, {unmatched} unmatched"
    )
    return lines
