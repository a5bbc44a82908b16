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

__all__ = ["MergeResult", "merge", "merge_models"]


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


def merge_models(
    base: nnc.BaseModel, models: Sequence[Model], weights: Sequence[float] | None = None
) -> tuple[Model, int]:
    """The first model with every float tensor the base's data units carry replaced by the
    base plus the weighted mean of the models' differences to it.

    Returns:
        (merged model, number of tensors that changed).

    Raises:
        BaseMismatchError: the models do not hold the same tensors and shapes.
        UnsupportedError: a tensor that cannot be averaged (integer, or kept in the topology)
            differs between models; the message names it.
    """
    share = _normalized(weights, len(models))
    first = models[0]
    for other in models[1:]:
        if set(other.tensors) != set(first.tensors):
            missing = sorted(set(first.tensors) ^ set(other.tensors))
            raise BaseMismatchError(f"the updates hold different tensors ({', '.join(map(repr, missing[:5]))})")
    merged: dict[str, ArrayTensor] = {}
    changed = 0
    for name, tensor in first.tensors.items():
        arrays = [m.tensors[name].numpy() for m in models]
        if any(a.shape != arrays[0].shape for a in arrays):
            raise BaseMismatchError(f"tensor {name!r} has different shapes in the updates")
        reference = base.tensors.get(name)
        if reference is None or not np.issubdtype(arrays[0].dtype, np.floating):
            if any(not np.array_equal(a, arrays[0]) for a in arrays[1:]):
                raise UnsupportedError(
                    f"tensor {name!r} ({arrays[0].dtype}) differs between updates and cannot be averaged"
                )
            continue
        start = np.asarray(reference.values, dtype=np.float64).reshape(arrays[0].shape)
        mean = start + sum(w * (a.astype(np.float64) - start) for w, a in zip(share, arrays, strict=True))
        out = mean.astype(arrays[0].dtype)
        if not np.array_equal(out, np.asarray(reference.values).reshape(out.shape).astype(out.dtype)):
            changed += 1
        merged[name] = ArrayTensor(name, out, role=tensor.role)
    for name, tensor in merged.items():
        first.tensors[name] = tensor
    return first, changed


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
    from nnrconv._api import NNR_FORMAT, _output_format, _read_bitstream, _require_input, decode, save

    started = time.perf_counter()
    if not updates:
        raise ValueError("merge needs at least one update")
    paths = [Path(u) for u in updates]
    target = Path(target)
    for path in paths:
        _require_input(path)
    if not full and _output_format(target, None) != NNR_FORMAT:
        raise UnsupportedError(f"{target}: the merged update is an NNR bitstream (.nnr); add --full for a full model")
    base_model = read_base_files(base, jobs=jobs or (options.jobs if options else None), parent_ref=parent_ref)
    models = []
    for path in paths:
        data = _read_bitstream(path)
        if not _is_update(data, str(path)):
            raise BaseMismatchError(f"{path} is a full model, not an update of {base_model.source}")
        models.append(decode(data, source=str(path), jobs=jobs, base=base_model))
    share = _normalized(weights, len(models))
    model, changed = merge_models(base_model, models, share)
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
