# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Updates from many providers (federated averaging): `nnrconv merge BASE UPDATE... OUT`.

Each provider sends an NNR update of the same base. The merged model is the base plus the
weighted mean of the providers' differences, Σ wᵢ (modelᵢ - base) / Σ wᵢ, per float tensor; it
is coded once, as an update of the same base (or, with `full`, as a complete model in any
format). Every update is checked against the base before anything is decoded (bound parents:
the payload digests of the base's data units), so an update of another base is refused.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnrconv import nnc
from nnrconv._updates import BasePaths, base_paths, read_base_files
from nnrconv.core import ArrayTensor, BaseMismatchError, Model, UnsupportedError

__all__ = ["FederatedAverage", "MergeResult", "merge"]


@dataclass(frozen=True, slots=True)
class MergeResult:
    """What `merge` wrote.

    Attributes:
        target: the output file.
        updates: how many updates were averaged.
        weights: each update's weight, normalized to sum to 1.
        tensors: tensors averaged (float tensors that differ from the base in some update).
        update_bytes: each input update's size.
        target_bytes: the output's size.
        seconds: wall time.
    """

    target: Path
    updates: int
    weights: tuple[float, ...]
    tensors: int
    update_bytes: tuple[int, ...]
    target_bytes: int
    seconds: float


def _normalized(weights: Sequence[float] | None, count: int) -> tuple[float, ...]:
    if weights is None:
        return tuple(1.0 / count for _ in range(count))
    if len(weights) != count:
        raise ValueError(f"{len(weights)} weights for {count} updates; give one weight per update")
    if any(not np.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero, got {list(weights)}")
    total = float(sum(weights))
    return tuple(float(w) / total for w in weights)


class FederatedAverage:
    """The running weighted mean of models' differences to a base, one model at a time.

    Memory holds the first model (the template the result is written from), one float64
    accumulator per averaged tensor and the model being added, however many models there are.
    """

    def __init__(self, base: nnc.BaseModel) -> None:
        self.base = base
        self.template: Model | None = None
        self.sums: dict[str, np.ndarray] = {}
        self.fixed: dict[str, np.ndarray] = {}
        self.weight = 0.0

    def add(self, model: Model, weight: float, source: str) -> None:
        """Add one model with its (normalized) weight.

        Raises:
            BaseMismatchError: it holds other tensors or shapes than the models before it.
            UnsupportedError: a tensor that cannot be averaged (integer, or kept in the
                topology) differs from the first model's; the message names it.
        """
        if self.template is None:
            self.template = model
        elif set(model.tensors) != set(self.template.tensors):
            odd = sorted(set(model.tensors) ^ set(self.template.tensors))
            raise BaseMismatchError(
                f"{source} holds other tensors than the first update ({', '.join(map(repr, odd[:5]))})"
            )
        for name, tensor in model.tensors.items():
            array = tensor.numpy()
            reference = self.base.tensors.get(name)
            if reference is None or not np.issubdtype(array.dtype, np.floating):
                first = self.fixed.setdefault(name, array)
                if first.shape != array.shape or not np.array_equal(first, array):
                    raise UnsupportedError(
                        f"tensor {name!r} ({array.dtype}) differs between updates and cannot be averaged ({source})"
                    )
                continue
            start = np.asarray(reference.values, dtype=np.float64)
            if start.size != array.size:
                raise BaseMismatchError(
                    f"tensor {name!r} has {array.size} elements in {source}, {start.size} in the base"
                )
            total = self.sums.setdefault(name, np.zeros(array.shape, np.float64))
            if total.shape != array.shape:
                raise BaseMismatchError(f"tensor {name!r} has shape {array.shape} in {source}, {total.shape} before")
            total += weight * (array.astype(np.float64) - start.reshape(array.shape))
        self.weight += weight

    def result(self) -> tuple[Model, int]:
        """The first model with each averaged tensor set to base + mean difference, and how many
        of them differ from the base."""
        assert self.template is not None, "add a model first"
        changed = 0
        for name, total in self.sums.items():
            tensor = self.template.tensors[name]
            start = np.asarray(self.base.tensors[name].values, dtype=np.float64).reshape(total.shape)
            out = (start + total / self.weight).astype(tensor.numpy().dtype)
            changed += not np.array_equal(out, start.astype(out.dtype))
            self.template.tensors[name] = ArrayTensor(name, out, role=tensor.role)
        return self.template, changed


def merge(
    base: BasePaths,
    updates: Sequence[str | os.PathLike[str]],
    target: str | os.PathLike[str],
    *,
    weights: Sequence[float] | None = None,
    full: bool = False,
    force: bool = False,
    options: nnc.CodingOptions | None = None,
    jobs: int | None = None,
    parent_ref: nnc.ParentRef = "sha256",
) -> MergeResult:
    """Average updates of one base into one update of that base (or a full model with `full`).

    Args:
        base: the base the updates were made against (a file, or a chain).
        updates: NNR updates from the providers.
        target: the output: an `.nnr` update, or with `full` a model in any output format.
        weights: one weight per update (e.g. its number of training samples); default equal.
        full: write the merged model itself rather than an update of the base.
        force, options, jobs, parent_ref: as `convert`.

    Raises:
        BaseMismatchError: an update is not an update of this base (exit code 3).
        UnsupportedError: an update output other than `.nnr`, or a tensor that cannot be averaged.
        ValueError: no update, or weights that do not fit.
    """
    from nnrconv._api import NNR_FORMAT, _output_format, _read_bitstream, _require_input, check_output, decode, save

    started = time.perf_counter()
    if not updates:
        raise ValueError("merge needs at least one update")
    paths = [Path(u) for u in updates]
    target = Path(target)
    for path in paths:
        _require_input(path)
    check_output(target, inputs=(*base_paths(base), *paths), force=force)  # before any decoding
    if not full and _output_format(target, None) != NNR_FORMAT:
        raise UnsupportedError(f"{target}: the merged update is an NNR bitstream (.nnr); add --full for a full model")
    base_model = read_base_files(base, jobs=jobs or (options.jobs if options else None), parent_ref=parent_ref)
    share = _normalized(weights, len(paths))
    average = FederatedAverage(base_model)
    for path, weight in zip(paths, share, strict=True):  # one decoded update in memory at a time
        data = _read_bitstream(path)
        if not _is_update(data, str(path)):
            raise BaseMismatchError(f"{path} is a full model, not an update of {base_model.source}")
        average.add(decode(data, source=str(path), jobs=jobs, base=base_model), weight, str(path))
    model, changed = average.result()
    save(
        model,
        target,
        force=force,
        inputs=(*base_paths(base), *paths),
        options=options,
        base=None if full else base_model,
    )
    return MergeResult(
        target=target,
        updates=len(paths),
        weights=share,
        tensors=changed,
        update_bytes=tuple(p.stat().st_size for p in paths),
        target_bytes=target.stat().st_size,
        seconds=time.perf_counter() - started,
    )


def _is_update(data: bytes, source: str) -> bool:
    """Whether a bitstream's model parameter set enables parent signalling."""
    for parsed in nnc.read_units(data, source):
        if isinstance(parsed.unit, nnc.ModelParameterSet):
            return bool(parsed.unit.mps_parent_signalling_enabled_flag)
    return False
