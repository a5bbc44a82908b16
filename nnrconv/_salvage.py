# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`--salvage`: decode what survives of a damaged `.nnr`, filling lost tensors from a base or zeros.

The stream-level work (which units survive, resynchronising after damage) is `nnc.decode_salvaged`;
this module fills each lost tensor and tells the user, one `SalvageWarning` per lost unit, naming
the unit index and byte offset: from `--base` when the base has a tensor of that name and shape,
else zeros of the dimensions the damaged unit's header still declares. Units whose tensors are
unknown (a damaged header, units missing after a cut) are filled from what the topology expects
(`FormatPlugin.topology_tensors`: name, type and shape of each tensor a data unit must bring),
or, when the format cannot tell or the stream has no topology, only from a base. An update cut
short in transmission is the same case: its complete units (most useful first) apply, the base
keeps the rest, and one line says how many arrived.

Zero fills are checked against the memory budget (`--max-memory`) before any is allocated: a
topology, like a unit header, can declare sizes far beyond what the stream holds.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from nnrconv import nnc
from nnrconv.core import BitstreamError, DType, NNRConvError, TopologyTensor
from nnrconv.nnc._budget import current_budget, format_size

__all__ = ["SalvageWarning", "decode"]


class SalvageWarning(UserWarning):
    """A unit of a salvaged bitstream was lost; the message names it and what replaced its tensors."""


def _warn(message: str) -> None:
    warnings.warn(message, SalvageWarning, stacklevel=3)


def decode(data: bytes, *, source: str, jobs: int | None = None, base: nnc.BaseModel | None = None) -> nnc.DecodedModel:
    """`nnc.decode_model` of what survives of `data`, lost tensors filled, each loss warned about.

    Raises:
        BitstreamError: damage salvage cannot work around (parameter sets, topology), or zero
            fills beyond the memory budget.
    """
    decoded, salvaged = nnc.decode_salvaged(data, source=source, jobs=jobs, base=base)
    tensors = dict(decoded.tensors)
    fills = {name: t.values for name, t in base.tensors.items()} if base is not None else {}
    for note in salvaged.notes:
        _warn(f"{source}: {note}")
    cut = any(unit.reason.startswith(("cut:", "missing: the stream is cut")) for unit in salvaged.lost)
    if cut and base is not None:  # an update cut short in transmission: what arrived applies
        ndus = sum(isinstance(p.unit, nnc.CompressedDataUnit) for p in nnc.read_units(salvaged.stream, source))
        _warn(
            f"{source}: the stream is cut short at byte {len(data)}: its {ndus} complete data units are "
            f"decoded, {base.source} kept for the rest"
        )
    expected = _expected(decoded, source)
    unknown = [unit for unit in salvaged.lost if not unit.tensors]
    filled = f"filled from {base.source}" if base is not None else "give --base BASE.nnr to fill them"
    missing = [unit for unit in unknown if unit.unit_index is None]
    if missing and expected is None:
        first = missing[0]
        _warn(f"{source}: {len(missing)} unit(s) missing after byte offset {first.byte_offset} ({first.reason})")
    headed = [(name, unit) for unit in salvaged.lost if unit.unit_index is not None for name in unit.tensors]
    zeros = [_declared(name, u.shape, u.dtype) for name, u in headed if _base_fill(fills, name, u.shape) is None]
    _check_budget(tensors, zeros, source)
    for unit in salvaged.lost:
        if unit.unit_index is None:
            continue
        where = f"{source}: unit {unit.unit_index}, byte offset {unit.byte_offset}: {unit.reason}"
        if not unit.tensors:
            named = "" if expected is None else " (the topology names them below)"
            _warn(f"{where}; its tensors are unknown{named}")
        for name in unit.tensors:
            fill = _base_fill(fills, name, unit.shape)
            if fill is not None:
                tensors[name], how = fill, f"filled from {base.source}"  # type: ignore[union-attr]
            else:
                tensors[name], how = np.zeros(unit.shape or (1,), unit.dtype or np.float32), "filled with zeros"
            _warn(f"{where}; tensor {name!r} {how}")
    if expected is not None:
        where = _where_lost(unknown, salvaged, len(data))
        _fill_expected(tensors, expected, fills, base, source, where, quiet_base=cut)
    elif unknown:
        absent = [name for name in fills if name not in tensors]
        for name in absent:
            tensors[name] = np.array(fills[name], copy=True)
        named = ", ".join(map(repr, absent[:3])) + (" …" if len(absent) > 3 else "")
        _warn(
            f"{source}: the tensors of lost units are unknown: {filled}"
            + (f" ({len(absent)}: {named})" if absent else "")
        )
    return dataclasses.replace(decoded, tensors=tensors, verified=False)


def _expected(decoded: nnc.DecodedModel, source: str) -> list[TopologyTensor] | None:
    """What the stream's topology expects from data units; None without topology or when its
    format cannot tell (or its plugin is missing: rebuilding the model reports that)."""
    from nnrconv._topology import owner

    try:
        fmt, topology = owner(decoded.topology_storage_format, decoded.topology, source)
    except NNRConvError:
        return None
    if fmt is None or not fmt.available:
        return None
    try:
        return fmt.topology_tensors(topology)
    except BitstreamError as exc:
        raise exc.located(unit_index=2) from exc
    except NNRConvError:
        return None


def _base_fill(fills: Mapping[str, np.ndarray], name: str, shape: Sequence[int] | None) -> np.ndarray | None:
    fill = fills.get(name)
    if fill is None or (shape is not None and (tuple(fill.shape) or (1,)) != (tuple(shape) or (1,))):
        return None
    return np.array(fill, copy=True)


def _declared(name: str, shape: Sequence[int] | None, dtype: np.dtype | None) -> TopologyTensor:
    """A lost unit's tensor as its header still declares it (only its size is used: the budget)."""
    count = int(np.prod(shape or (1,), dtype=object))
    return TopologyTensor(name, DType.FLOAT, tuple(shape or (1,)), count * np.dtype(dtype or np.float32).itemsize)


def zeros_of(spec: TopologyTensor) -> np.ndarray:
    """Zeros as `from_topology` takes them: the storage type, in the shape (flat for packed
    sub-byte types, or when the topology gives only the byte size)."""
    storage = spec.dtype.storage_dtype
    if spec.shape is None or spec.dtype.is_packed:
        return np.zeros(spec.nbytes // storage.itemsize, storage)
    return np.zeros(spec.shape, storage)


def _check_budget(tensors: Mapping[str, np.ndarray], zeros: Sequence[TopologyTensor], source: str) -> None:
    """Refuse zero fills that, with the tensors decoded, exceed the memory budget (before allocating).

    Raises:
        BitstreamError: naming the largest fill and the sizes.
    """
    if not zeros:
        return
    budget = current_budget()
    held = sum(int(a.nbytes) for a in tensors.values())
    needed = held + sum(spec.nbytes for spec in zeros)
    if needed > budget:
        largest = max(zeros, key=lambda spec: spec.nbytes)
        shape = list(largest.shape) if largest.shape is not None else "?"
        raise BitstreamError(
            f"{source}: salvage: zero-filling {len(zeros)} lost tensor(s) (largest {largest.name!r} {shape}, "
            f"{format_size(largest.nbytes)}) needs {format_size(needed)} with the decoded tensors, above the "
            f"memory budget of {format_size(budget)} (--max-memory)",
            tensor=largest.name,
        )


def _where_lost(unknown: Sequence[nnc.LostUnit], salvaged: nnc.Salvaged, length: int) -> str:
    """Where the units of tensors the topology expects went: the lost units whose tensors are
    unknown, or the end of a stream cut at a unit boundary (no record lists what is missing)."""
    damaged = [f"unit {u.unit_index} at byte offset {u.byte_offset}" for u in unknown if u.unit_index is not None]
    places = damaged[:3] + (["…"] if len(damaged) > 3 else [])
    missing = [u for u in unknown if u.unit_index is None]
    last = max([k[0] for k in salvaged.kept[-1:]] + [u.unit_index for u in salvaged.lost if u.unit_index is not None])
    if missing:
        after = missing[0].byte_offset
        places.append(f"{len(missing)} unit(s) missing after byte offset {after}, from unit {last + 1} on")
    if not places:
        places.append(f"missing: the stream ends at byte offset {length}, after unit {last}")
    return "; ".join(places)


def _fill_expected(
    tensors: dict[str, np.ndarray],
    expected: Sequence[TopologyTensor],
    fills: Mapping[str, np.ndarray],
    base: nnc.BaseModel | None,
    source: str,
    where: str,
    *,
    quiet_base: bool = False,
) -> None:
    """Fill every tensor the topology expects and no surviving unit brought, from the base when
    it has one of that name and shape, else with zeros (budget checked first), warning for each
    (for each zero fill only with `quiet_base`: a cut update already said the base keeps the rest)."""
    absent = [spec for spec in expected if spec.name not in tensors]
    from_base = {spec.name: _base_fill(fills, spec.name, spec.shape) for spec in absent}
    _check_budget(tensors, [spec for spec in absent if from_base[spec.name] is None], source)
    for spec in absent:
        fill = from_base[spec.name]
        if fill is not None:
            how = f"filled from {base.source}"  # type: ignore[union-attr]
        else:
            fill, how = zeros_of(spec), "filled with zeros"
        tensors[spec.name] = fill
        if quiet_base and how != "filled with zeros":
            continue
        shape = list(spec.shape) if spec.shape is not None else f"{spec.nbytes} bytes"
        _warn(f"{source}: tensor {spec.name!r} {shape} {spec.dtype.name}: its data unit is lost ({where}); {how}")
