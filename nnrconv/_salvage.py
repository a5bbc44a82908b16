# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`--salvage`: decode what survives of a damaged `.nnr`, filling lost tensors from a base or zeros.

The stream-level work (which units survive, resynchronising after damage) is `nnc.decode_salvaged`;
this module fills each lost tensor and tells the user, one `SalvageWarning` per lost unit, naming
the unit index and byte offset: from `--base` when the base has a tensor of that name and shape,
else zeros of the dimensions the damaged unit's header still declares. Units whose tensors are
unknown (a damaged header, units missing after a cut) can only be filled from a base. An update
cut short in transmission is the same case: its complete units (most useful first) apply, the
base keeps the rest, and one line says how many arrived.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from nnrconv import nnc

__all__ = ["SalvageWarning", "decode"]


class SalvageWarning(UserWarning):
    """A unit of a salvaged bitstream was lost; the message names it and what replaced its tensors."""


def _warn(message: str) -> None:
    warnings.warn(message, SalvageWarning, stacklevel=3)


def decode(data: bytes, *, source: str, jobs: int | None = None, base: nnc.BaseModel | None = None) -> nnc.DecodedModel:
    """`nnc.decode_model` of what survives of `data`, lost tensors filled, each loss warned about.

    Raises:
        BitstreamError: damage salvage cannot work around (parameter sets, topology).
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
    unknown = [unit for unit in salvaged.lost if not unit.tensors]
    filled = f"filled from {base.source}" if base is not None else "give --base BASE.nnr to fill them"
    missing = [unit for unit in unknown if unit.unit_index is None]
    if missing:
        first = missing[0]
        _warn(f"{source}: {len(missing)} unit(s) missing after byte offset {first.byte_offset} ({first.reason})")
    for unit in salvaged.lost:
        if unit.unit_index is None:
            continue
        where = f"{source}: unit {unit.unit_index}, byte offset {unit.byte_offset}: {unit.reason}"
        if not unit.tensors:
            _warn(f"{where}; its tensors are unknown")
        for name in unit.tensors:
            fill = fills.get(name)
            if fill is not None and (tuple(fill.shape) or (1,)) == tuple(unit.shape or (1,)):
                tensors[name], how = np.array(fill, copy=True), f"filled from {base.source}"  # type: ignore[union-attr]
            else:
                tensors[name], how = np.zeros(unit.shape or (1,), unit.dtype or np.float32), "filled with zeros"
            _warn(f"{where}; tensor {name!r} {how}")
    if unknown:
        absent = [name for name in fills if name not in tensors]
        for name in absent:
            tensors[name] = np.array(fills[name], copy=True)
        named = ", ".join(map(repr, absent[:3])) + (" …" if len(absent) > 3 else "")
        _warn(
            f"{source}: the tensors of lost units are unknown: {filled}"
            + (f" ({len(absent)}: {named})" if absent else "")
        )
    return dataclasses.replace(decoded, tensors=tensors, verified=False)
