# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`nnrconv inspect` on NNR inside a native container (`.nnr.onnx`, NNEF, TensorFlow, Keras, PyTorch).

NOTE: a container holds the parts of an NNR bitstream without its order: the parameter sets and
one data unit per coded tensor (found by the plugin's `extract_embedded`, nothing decoded). The
units are listed as `nnc.inspect_units` sees the stream they make (parameter sets without their
integrity record, then every unit in container order), each with the tensor's name, element
type and shape as the container declares them; the units are checked against the record
(`nnc.check_parts`) and the rest of the container against its container digest, through the
plugin-neutral `FormatPlugin.container_digest_status`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from nnrconv import nnc
from nnrconv.core import BitstreamError, EmbeddedModel, FormatError, FormatPlugin
from nnrconv.nnc._integrity import strip_record

__all__ = ["ContainerReport", "EmbeddedUnit", "inspect_container"]


@dataclass(frozen=True, slots=True)
class EmbeddedUnit:
    """One NNR unit inside a container.

    Attributes:
        index: the unit's position (parameter sets first, then data units in container order).
        unit_type: "NNR_STR", "NNR_MPS", "NNR_NDU", ...; "integrity record" for the record.
        size: its size in bytes.
        tensor, dtype, shape: NDU: the tensor it carries, as the container declares it.
        decoded_bytes: NDU: the size of the tensor once decoded (element count times element size).
        payload_type, qp, bits_per_parameter: NDU: as `nnrconv inspect` shows them for `.nnr`.
    """

    index: int
    unit_type: str
    size: int
    tensor: str | None = None
    dtype: str | None = None
    shape: tuple[int, ...] | None = None
    decoded_bytes: int | None = None
    payload_type: str | None = None
    qp: int | None = None
    bits_per_parameter: float | None = None


@dataclass(frozen=True, slots=True)
class ContainerReport:
    """What `nnrconv inspect` shows of a container.

    Attributes:
        path, format: the file and its format plugin's name.
        container_digest: "verified", "unverified (no container digest)" or "damaged: <error>".
        integrity: the units against the parameter sets' integrity record: "verified",
            "unverified (no integrity record)" or "damaged: <error>".
        units: the parameter set units, then one data unit per coded tensor.
    """

    path: str
    format: str
    container_digest: str
    integrity: str
    units: list[EmbeddedUnit] = field(default_factory=list)

    @property
    def damaged(self) -> bool:
        return self.container_digest.startswith("damaged") or self.integrity.startswith("damaged")

    def json_lines(self) -> list[str]:
        """One JSON object for the container, then one per unit."""
        head = {"path": self.path, "format": self.format, "container_digest": self.container_digest}
        head |= {"integrity": self.integrity, "units": len(self.units)}
        return [json.dumps(head)] + [json.dumps(_plain(dataclasses.asdict(u))) for u in self.units]

    def text_lines(self) -> list[str]:
        """The table `nnrconv inspect` prints."""
        lines = [
            f"{self.path}: {self.format} container with NNR-coded tensors",
            f"{'#':>4} {'unit':<17} {'size':>10}  {'payload':<16} {'dtype':<9} {'shape':<18} "
            f"{'QP':>5} {'bits/p':>7} {'decoded':>10}  tensor",
        ]
        for unit in self.units:
            shape = "x".join(str(d) for d in unit.shape) if unit.shape else ""
            qp = "" if unit.qp is None else str(unit.qp)
            bits = "" if unit.bits_per_parameter is None else f"{unit.bits_per_parameter:.2f}"
            decoded = "" if unit.decoded_bytes is None else f"{unit.decoded_bytes:,}"
            lines.append(
                f"{unit.index:>4} {unit.unit_type:<17} {unit.size:>10}  {unit.payload_type or '':<16} "
                f"{unit.dtype or '':<9} {shape:<18} {qp:>5} {bits:>7} {decoded:>10}  {unit.tensor or ''}"
            )
        ndus = [u for u in self.units if u.tensor is not None]
        coded = sum(u.size for u in ndus)
        decoded = sum(u.decoded_bytes or 0 for u in ndus)
        lines.append(f"total: {len(ndus)} coded tensors, {coded:,} bytes of data units, decoded {decoded:,} bytes")
        lines.append(f"integrity: {self.integrity}")
        lines.append(f"container digest: {self.container_digest}")
        return lines


def _plain(data: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in data.items()}


def inspect_container(fmt: FormatPlugin, path: Path) -> ContainerReport:
    """The units and integrity of the container at `path`, read by `fmt` (nothing decoded).

    A container whose digest does not match is reported without units (reading it would fail).

    Raises:
        FormatError: `path` holds no NNR-coded tensors (a plain model).
    """
    status = fmt.container_digest_status(path)
    if status.startswith("damaged"):
        return ContainerReport(str(path), fmt.name, status, "not checked (the container is damaged)")
    try:
        parts = fmt.extract_embedded(path)
    except BitstreamError as exc:
        return ContainerReport(str(path), fmt.name, status, f"damaged: {exc}")
    if parts is None or not parts.units:
        raise FormatError(f"{path}: a plain {fmt.name} model: no NNR-coded tensors to inspect")
    ndus = {name: unit.ndu for name, unit in parts.units.items()}
    try:
        verified = nnc.check_parts(parts.parameter_sets, ndus)
        integrity = "verified" if verified else "unverified (no integrity record)"
    except BitstreamError as exc:
        integrity = f"damaged: {exc}"
    return ContainerReport(str(path), fmt.name, status, integrity, _units(parts, str(path)))


def _units(parts: EmbeddedModel, source: str) -> list[EmbeddedUnit]:
    parameter_sets = bytes(parts.parameter_sets)
    plain = strip_record(parameter_sets)
    stream = plain + b"".join(unit.ndu for unit in parts.units.values())
    try:
        infos = [info for info in nnc.inspect_units(stream, source=source) if info.member is None]
    except (BitstreamError, FormatError):
        infos = []
    leading = [i for i in infos if i.unit_type != "NNR_NDU"]
    ndu_infos = [i for i in infos if i.unit_type == "NNR_NDU"]
    units = [EmbeddedUnit(i.index, i.unit_type, i.size) for i in leading]
    if not leading:
        units.append(EmbeddedUnit(0, "parameter sets", len(plain)))
    if len(plain) != len(parameter_sets):
        units.append(EmbeddedUnit(len(units), "integrity record", len(parameter_sets) - len(plain)))
    if len(ndu_infos) != len(parts.units):
        ndu_infos = []
    for position, (name, unit) in enumerate(parts.units.items()):
        info = ndu_infos[position] if ndu_infos else None
        count = math.prod(unit.shape)
        units.append(
            EmbeddedUnit(
                len(units),
                "NNR_NDU",
                len(unit.ndu),
                name,
                unit.dtype.name,
                tuple(unit.shape),
                unit.dtype.storage_nbytes(count),
                info.payload_type if info else None,
                info.qp if info else None,
                info.bits_per_parameter if info else None,
            )
        )
    return units
