# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""One record per unit of a bitstream, for `nnrconv inspect`."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from nnrconv.core._errors import BitstreamError
from nnrconv.nnc import cabac
from nnrconv.nnc._budget import declared_bytes
from nnrconv.nnc._container import flatten_units
from nnrconv.nnc._decoding import _topology_bytes
from nnrconv.nnc._enums import (
    NnrUnitType,
    PayloadType,
    TopologyStorageFormat,
)
from nnrconv.nnc._framing import (
    ParsedUnit,
    advance_context,
    read_units,
    with_source,
)
from nnrconv.nnc._integrity import check_stream
from nnrconv.nnc._mps import LayerParameterSet
from nnrconv.nnc._ndu import CompressedDataUnit, NduHeader, NodeId, decode_reference_list
from nnrconv.nnc._units import TopologyUnit, UnitContext

# -- inspection --------------------------------------------------------------------------------


__all__ = [
    "UnitInfo",
    "inspect_units",
]


@dataclass(frozen=True, slots=True)
class UnitInfo:
    """One line of `nnrconv inspect`: a unit's kind, place and main content.

    Attributes:
        index: top-level unit index.
        unit_type: the unit type's name, e.g. "NNR_NDU".
        byte_offset: offset of the unit in the file.
        size: `nnr_unit_size` in bytes.
        tensor: NDU: the tensor name (several joined by ", "; "#i" for an unresolved index).
        shape: NDU: `tensor_dimensions`.
        payload_type: NDU: the payload type's name.
        topology_storage_format: TPL: the storage format's name (or "reserved (n)").
        member: position inside an aggregate unit, `None` for top-level units.
        qp: NNR_PT_FLOAT NDU: the tensor's QP (MPS/LPS value plus the coded offset).
        step: NNR_PT_FLOAT NDU: the quantization step of that QP.
        bits_per_parameter: NDU: 8 · unit size / element count.
        dq_flag: NDU: dependent quantization.
        scan_order: NDU: the scan order.
        snr_db: NDU: weight SNR against an original model, filled in by `nnrconv.inspect`.
        decoded_bytes: NDU: the memory its decoded tensor(s) take, as the header declares them.
        integrity: "verified" (the stream's integrity record covers the unit and it matched),
            "unverified" (the stream carries no integrity record) or "record" (the record itself).
        node: NDU: its parameter-update-tree node, "device/parameter/depth" (profile 1).
        parent: update NDU: the parent it names, "device/parameter/depth" (by node id) or
            "sha256:<first 12 hex digits>" (by payload digest).
    """

    index: int
    unit_type: str
    byte_offset: int
    size: int
    tensor: str | None = None
    shape: tuple[int, ...] | None = None
    payload_type: str | None = None
    topology_storage_format: str | None = None
    member: int | None = None
    qp: int | None = None
    step: float | None = None
    bits_per_parameter: float | None = None
    dq_flag: bool | None = None
    scan_order: int | None = None
    snr_db: float | None = None
    decoded_bytes: int | None = None
    integrity: str | None = None
    node: str | None = None
    parent: str | None = None


def _storage_name(code: int) -> str:
    try:
        return TopologyStorageFormat(code).name
    except ValueError:
        return f"reserved ({code})"


def _coded_qp(unit: CompressedDataUnit, ctx: UnitContext, lps: LayerParameterSet | None) -> int | None:
    """The QP at the start of an NNR_PT_FLOAT payload, or None when it cannot be read."""
    if unit.header.nnr_compressed_data_unit_payload_type != PayloadType.NNR_PT_FLOAT:
        return None
    if lps is not None and lps.lps_qp_density is not None:
        qpd, base = lps.lps_qp_density, lps.lps_quantization_parameter
    else:
        qpd, base = ctx.mps_qp_density, ctx.mps_quantization_parameter
    if qpd is None or base is None:
        return None
    try:
        return base + cabac.PayloadDecoder(unit.payload).decode_qp_offset(qpd)
    except BitstreamError:
        return None


def _node_label(node: NodeId | None) -> str | None:
    return None if node is None else f"{node.device_id}/{node.parameter_id}/{node.put_node_depth}"


def _parent_label(header: NduHeader) -> str | None:
    """The parent an update NDU names: its node (one level up) or its payload digest."""
    parent = header.parent_node_id
    if parent is None:
        return None
    digest = parent.parent_node_payload_sha256 or parent.parent_node_payload_sha512
    if digest is not None:
        return f"{parent.parent_node_id_type.name[-6:].lower()}:{digest.hex()[:12]}"
    if header.node_id is not None:
        return f"{parent.parent_device_id}/{header.node_id.parameter_id}/{header.node_id.put_node_depth - 1}"
    return f"{parent.parent_device_id}/{parent.parameter_id}/{(parent.put_node_depth or 0) - 1}"


def _info(
    parsed: ParsedUnit,
    index: int,
    member: int | None,
    reflist: tuple[str, ...] | None,
    ctx: UnitContext,
    lps: LayerParameterSet | None,
) -> UnitInfo:
    unit = parsed.unit
    info = UnitInfo(index, NnrUnitType(unit.nnr_unit_type).name, parsed.byte_offset, parsed.size, member=member)
    if isinstance(unit, CompressedDataUnit):
        header = unit.header
        labels = [
            e if isinstance(e, str) else (reflist[e] if reflist and 0 <= e < len(reflist) else f"#{e}")
            for e in header.topology_elements
        ]
        qp = _coded_qp(unit, ctx, lps)
        qpd = lps.lps_qp_density if lps is not None and lps.lps_qp_density is not None else ctx.mps_qp_density
        count = math.prod(header.tensor_dimensions) if header.tensor_dimensions else 0
        return UnitInfo(
            index,
            info.unit_type,
            parsed.byte_offset,
            parsed.size,
            tensor=", ".join(labels),
            shape=header.tensor_dimensions,
            payload_type=header.nnr_compressed_data_unit_payload_type.name,
            member=member,
            qp=qp,
            step=cabac.step_size(qp, qpd) if qp is not None and qpd is not None else None,
            bits_per_parameter=8 * parsed.size / count if count else None,
            dq_flag=header.dq_flag,
            scan_order=header.scan_order,
            decoded_bytes=declared_bytes(header)[0],
            node=_node_label(header.node_id),
            parent=_parent_label(header),
        )
    if isinstance(unit, TopologyUnit):
        return UnitInfo(
            index,
            info.unit_type,
            parsed.byte_offset,
            parsed.size,
            topology_storage_format=_storage_name(unit.topology_storage_format),
            member=member,
        )
    return info


def inspect_units(data: bytes | bytearray | memoryview, source: str = "<bytes>") -> list[UnitInfo]:
    """One record per unit (aggregate members follow their aggregate), for `nnrconv inspect`.

    A stream with an integrity record is verified first (each record then says "verified").

    Raises:
        BitstreamError: as `read_units`.
        UnsupportedError: as `read_units`.
    """
    view = memoryview(data).cast("B")
    try:
        check = check_stream(view)
    except BitstreamError as exc:
        raise with_source(exc, source) from None
    units = read_units(view, source)
    reflist = None
    for _, parsed in flatten_units(units):
        unit = parsed.unit
        if isinstance(unit, TopologyUnit) and unit.topology_storage_format == TopologyStorageFormat.NNR_TPL_REFLIST:
            try:
                reflist = decode_reference_list(_topology_bytes(unit, parsed, source))
            except BitstreamError:
                reflist = None
            break
    infos: list[UnitInfo] = []
    state: dict[str, object] = {"ctx": UnitContext(), "lps": None}

    def visit(parsed: ParsedUnit, index: int, member: int | None) -> None:
        ctx = state["ctx"]
        if isinstance(parsed.unit, LayerParameterSet):
            state["lps"] = parsed.unit
        infos.append(_info(parsed, index, member, reflist, ctx, state["lps"]))  # type: ignore[arg-type]
        state["ctx"] = advance_context(ctx, parsed.unit)  # type: ignore[arg-type]
        for position, inner in enumerate(parsed.members):
            visit(inner, index, position)

    for parsed in units:
        visit(parsed, parsed.index, None)
    status = "verified" if check.verified else "unverified"
    return [
        replace(
            info,
            integrity="record" if info.index == check.record_index else status,
            topology_storage_format="integrity record"
            if info.index == check.record_index
            else info.topology_storage_format,
        )
        for info in infos
    ]
