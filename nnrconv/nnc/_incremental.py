# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Incremental coding: a model coded as an update of a base NNR model (ISO/IEC 15938-17:2024,
parameter update tree), the way NNCodec 2.1.3 codes `compress_differences` with `tca` and an
`hdsp_tool`.

An update bitstream has `mps_parent_signalling_enabled_flag` = 1. Each lossy float tensor that
changed travels as an NDU naming its parent (its own node id one level below the parent's, and
the parent by payload digest or node id) and codes the quantized difference to the base tensor, with
temporal context adaptation on the base tensor's levels and history-dependent significance
probability where that codes smaller. A tensor whose difference quantizes to zero is left out;
other tensors that changed (integers, raw or lossless floats) are sent whole, without parent.
Decoding needs the same base: restored = base + decoded difference, and the base's value for
every tensor the update leaves out.

Updates chain: the model a chain (a full model, then updates in order) decodes to is the base of
the next update. Each tensor's current node is the last NDU that sent it: its node id, decoded
levels (the next TCA reference, as NNCodec keeps them), accumulated significance history (HDSP)
and payload digest. By default an update names its parents by that digest (parent_node_id_type
ICNN_NDU_PL_SHA256, ISO/IEC 15938-17:2024): it is bound to the exact decoded base, and a base with
the same names and shapes but other values is refused before anything is decoded.

An update's data units come most useful first (`importance_order`), so that a receiver of a cut
update can apply the complete ones and keep the base for the rest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from nnrconv.core._errors import BaseMismatchError
from nnrconv.nnc._enums import ParentNodeIdType
from nnrconv.nnc._ndu import CompressedDataUnit, NduHeader, NodeId
from nnrconv.nnc._payloads import UpdateParent

__all__ = [
    "BaseModel",
    "BaseTensor",
    "ParentRef",
    "check_parent",
    "importance_order",
    "read_base",
    "read_chain",
    "verify_parents",
]

ParentRef = Literal["sha256", "id"]
"""How an update names its parents: by the SHA-256 of the parent NDU's payload (bound to that
exact parent), or by node id alone (device, parameter, depth; what NNCodec 2.1.3's encoder writes)."""


@dataclass(frozen=True, slots=True)
class BaseTensor:
    """One tensor of a base model (or of the model a chain of updates decodes to).

    Attributes:
        values: the decoded tensor.
        node_id: the parameter-update-tree node of the last NDU that sent it (None: no node id).
        levels: that NDU's int32 levels when DeepCABAC-coded as NNR_PT_FLOAT (the TCA reference).
        significance: HDSP history, 1 where any NDU of the chain sent a non-zero level (or, raw,
            a non-zero value); None: derived from `levels`.
        payload_sha256: SHA-256 of that NDU's payload (what an update bound to it names).
        payload_sha512: SHA-512 of the same (what another encoder may name instead).
    """

    values: np.ndarray
    node_id: NodeId | None
    levels: np.ndarray | None = None
    significance: np.ndarray | None = None
    payload_sha256: bytes | None = None
    payload_sha512: bytes | None = None

    @property
    def history(self) -> np.ndarray | None:
        """HDSP history after this node (NNCodec's `HdspTool.add_data_to_hist` on each decoded NDU)."""
        if self.significance is not None:
            return self.significance
        return None if self.levels is None else (self.levels != 0).astype(np.uint8)

    def parent(self, name: str, source: str, ref: ParentRef = "sha256") -> UpdateParent:
        """What an update NDU of this tensor is coded against."""
        if self.node_id is None:
            raise BaseMismatchError(
                f"{source}: tensor {name!r} has no node id (node_id_present_flag = 0), so an update cannot name it"
            )
        values = np.ascontiguousarray(self.values, dtype=np.float32)
        digest = self.payload_sha256 if ref == "sha256" else None
        return UpdateParent(values, self.node_id, self.levels, self.history, digest)


@dataclass(frozen=True, slots=True)
class BaseModel:
    """A decoded base model an update refers to: a full model, or what a chain decodes to.

    Attributes:
        tensors: name -> tensor, in stream order.
        source: the base's file names, for messages ("base.nnr + u1.nnr" for a chain).
        parent_ref: how updates coded against it name their parents (`ParentRef`).
        links: how many bitstreams the chain holds (1: a full model alone).
    """

    tensors: dict[str, BaseTensor]
    source: str = "<base>"
    parent_ref: ParentRef = "sha256"
    links: int = 1

    def get(self, name: str, shape: tuple[int, ...], what: str) -> BaseTensor:
        """The base tensor an update of `name` refers to, with the same shape.

        Raises:
            BaseMismatchError: the base lacks the tensor or its shape differs.
        """
        tensor = self.tensors.get(name)
        if tensor is None:
            raise BaseMismatchError(f"tensor {name!r} of {what} is not in the base {self.source}")
        base_shape = tuple(tensor.values.shape) or (1,)
        if (tuple(shape) or (1,)) != base_shape:
            raise BaseMismatchError(
                f"tensor {name!r} has shape {tuple(shape)} in {what} but {base_shape} in the base {self.source}"
            )
        return tensor


def read_base(
    data: bytes | bytearray | memoryview,
    *,
    source: str = "<base>",
    jobs: int | None = None,
    parent_ref: ParentRef = "sha256",
) -> BaseModel:
    """Decode a full model and keep what updates of it need (levels, node ids, payload digests).

    Raises:
        BaseMismatchError: the bitstream is itself an update, or has no node ids (profile 0).
        BitstreamError, UnsupportedError: as `decode_model`.
    """
    return read_chain([(data, source)], jobs=jobs, parent_ref=parent_ref)


def read_chain(
    links: Sequence[tuple[bytes | bytearray | memoryview, str]],
    *,
    jobs: int | None = None,
    parent_ref: ParentRef = "sha256",
) -> BaseModel:
    """Decode a chain: a full model, then updates in the order they were made, each applied to
    what the previous ones decode to. The result is the base of the next update.

    Args:
        links: (bitstream, file name) pairs, the full model first.
        jobs: decoding threads.
        parent_ref: how updates coded against the result name their parents.

    Raises:
        BaseMismatchError: the chain does not fit: it starts with an update, a later link is a
            full model, or an update was made against another model (a link missing, the order
            wrong, another base); the message names the link and the first tensor at fault.
        BitstreamError, UnsupportedError: as `decode_model`.
    """
    if not links:
        raise ValueError("a chain holds at least the full base model")
    model: BaseModel | None = None
    for data, source in links:
        model = _apply_link(model, data, source, jobs)
    assert model is not None
    return replace(model, parent_ref=parent_ref)


def _apply_link(
    previous: BaseModel | None, data: bytes | bytearray | memoryview, source: str, jobs: int | None
) -> BaseModel:
    """The model `previous` becomes once the bitstream `data` is applied (or `data` alone)."""
    from nnrconv.nnc._container import flatten_units
    from nnrconv.nnc._decoding import decode_model
    from nnrconv.nnc._framing import read_units
    from nnrconv.nnc._mps import ModelParameterSet

    sent: dict[str, tuple[NodeId | None, bytes, bytes]] = {}
    is_update = False
    for _, parsed in flatten_units(read_units(data, source)):
        unit = parsed.unit
        if isinstance(unit, ModelParameterSet):
            is_update = bool(unit.mps_parent_signalling_enabled_flag)
        elif isinstance(unit, CompressedDataUnit) and unit.header.topology_elem_id is not None:
            payload = unit.payload
            digests = hashlib.sha256(payload).digest(), hashlib.sha512(payload).digest()
            sent[unit.header.topology_elem_id] = (unit.header.node_id, *digests)
    if previous is None and is_update:
        raise BaseMismatchError(
            f"{source} is an incremental update (parent signalling); a base, or the first link of a chain, "
            "must be the full model the first update was made against"
        )
    if previous is not None and not is_update:
        raise BaseMismatchError(
            f"{source} is a full model, not an update; in a chain (--base FULL --base UPDATE ...) only the "
            "first link is a full model"
        )
    levels: dict[str, np.ndarray] = {}
    decoded = decode_model(data, source=source, jobs=jobs, base=previous, _levels_sink=levels)
    if previous is None:
        if decoded.general_profile_idc != 1:
            raise BaseMismatchError(f"{source} is a profile 0 bitstream without node ids; a base must be profile 1")
        tensors = {}
        for name, array in decoded.tensors.items():
            node, sha256, sha512 = _node(sent, name)
            level = levels.get(name)
            tensors[name] = BaseTensor(array, node, level, _significance(None, level, array), sha256, sha512)
        return BaseModel(tensors, source)
    tensors = dict(previous.tensors)
    for name in sent:
        node, sha256, sha512 = _node(sent, name)
        level = levels.get(name)
        before = previous.tensors.get(name)
        history = _significance(before.history if before is not None else None, level, decoded.tensors[name])
        tensors[name] = BaseTensor(decoded.tensors[name], node, level, history, sha256, sha512)
    return BaseModel(tensors, f"{previous.source} + {source}", links=previous.links + 1)


def _significance(history: np.ndarray | None, levels: np.ndarray | None, values: np.ndarray) -> np.ndarray:
    """HDSP history after one more decoded NDU, as NNCodec's `HdspTool.add_data_to_hist` keeps it:
    1 where this or an earlier NDU of the tensor was non-zero (its levels, or a raw tensor's values)."""
    seen = (np.asarray(levels if levels is not None else values) != 0).astype(np.uint8)
    if history is None or history.shape != seen.shape:
        return seen
    return history | seen


def _node(
    sent: dict[str, tuple[NodeId | None, bytes, bytes]], name: str
) -> tuple[NodeId | None, bytes | None, bytes | None]:
    return sent.get(name, (None, None, None))


def importance_order(
    tensors: Sequence[tuple[str, np.ndarray]],
    base: BaseModel,
    sizes: dict[str, int] | None = None,
    *,
    measured: Mapping[str, float] | None = None,
) -> list[str]:
    """Names of an update's tensors, largest expected output improvement (per byte, given the
    units' `sizes`) first.

    `measured`: per tensor, the output improvement measured by running the model (the output
    error left when that tensor alone keeps its base value, `nnrconv._update_order`; a negative
    value goes last). When it names every measurable
    tensor it decides the order; otherwise (no runner, or some tensor left out, whose scale
    would not compare) the expected improvement of applying a tensor's update is its relative
    difference energy, Σ(new - base)² / Σ base²: a layer's output moves by about the relative
    change of its weights whatever their scale (a batch-norm variance of 100 and a kernel of
    0.01 count alike). Ties keep stream order; tensors whose difference cannot be measured (not
    numeric, or a zero base) go first.
    """
    by_output = measured is not None and all(
        name in measured for name, array in tensors if name in base.tensors and array.dtype.kind == "f"
    )

    def score(item: tuple[int, tuple[str, np.ndarray]]) -> tuple[float, int]:
        index, (name, array) = item
        before = base.tensors.get(name)
        if before is None or not np.issubdtype(array.dtype, np.number):
            return (-np.inf, index)
        if by_output and name in measured:  # type: ignore[operator]
            gain = float(measured[name])  # type: ignore[index]
        else:
            old = before.values.astype(np.float64).ravel()
            diff = array.astype(np.float64).ravel() - old
            scale = float(np.dot(old, old))
            if scale == 0:
                return (-np.inf, index)
            gain = float(np.dot(diff, diff)) / scale
        if sizes is not None and gain > 0:  # no gain stays no gain, whatever the size
            gain /= max(1, sizes.get(name, 1))
        return (-gain, index)

    return [name for _, (name, _) in sorted(enumerate(tensors), key=score)]


def verify_parents(updates: Iterable[tuple[NduHeader, str]], base: BaseModel, source: str) -> None:
    """Check every update NDU of `source` against `base` before anything is decoded, in stream order.

    Raises:
        BaseMismatchError: for the first NDU whose parent is not in `base` (`check_parent`),
            naming the update, the base and the tensor.
    """
    for header, name in updates:
        try:
            check_parent(header, name, base)
        except BaseMismatchError as exc:
            raise BaseMismatchError(f"{source} does not follow {base.source}: {exc}") from None


def check_parent(header: NduHeader, name: str, base: BaseModel) -> BaseTensor:
    """The base tensor an update NDU refers to, after checking its parent reference.

    A parent named by payload digest must be the base tensor's last NDU, byte for byte; a parent
    named by node id (and the NDU's own node, when it has one) must be one level above it, as
    NNCodec's decoder asserts (equal device_id and parameter_id, put_node_depth one more).

    Raises:
        BaseMismatchError: the base lacks the tensor, its shape differs, or the reference disagrees.
    """
    dims = header.tensor_dimensions or (1,)
    tensor = base.get(name, tuple(dims), "the update")
    parent = header.parent_node_id
    assert parent is not None
    node = tensor.node_id
    if node is None:
        raise BaseMismatchError(f"tensor {name!r}: the base {base.source} sends it without a node id")
    by_digest = {
        ParentNodeIdType.ICNN_NDU_PL_SHA256: ("SHA-256", parent.parent_node_payload_sha256, tensor.payload_sha256),
        ParentNodeIdType.ICNN_NDU_PL_SHA512: ("SHA-512", parent.parent_node_payload_sha512, tensor.payload_sha512),
    }
    if parent.parent_node_id_type in by_digest:
        kind, wanted, have = by_digest[parent.parent_node_id_type]
        if (wanted or b"") != have:
            ours = have.hex()[:12] if have else "none"
            raise BaseMismatchError(
                f"tensor {name!r}: the update was made against another model (its parent's payload {kind} is "
                f"{(wanted or b'').hex()[:12]}…, the tensor's in {base.source} is {ours}…)"
            )
        if header.node_id is None:
            _check_tca(header, name, tensor, base)
            return tensor
        device, parameter, depth = header.node_id.device_id, header.node_id.parameter_id, header.node_id.put_node_depth
        parent_device = device
    elif header.node_id is not None:
        device, parameter, depth = header.node_id.device_id, header.node_id.parameter_id, header.node_id.put_node_depth
        parent_device = parent.parent_device_id
    else:
        device, parameter, depth = node.device_id, parent.parameter_id, parent.put_node_depth
        parent_device = parent.parent_device_id
    expected = (node.device_id, node.parameter_id, node.put_node_depth + 1)
    if (parent_device, parameter, depth) != expected or device != node.device_id:
        raise BaseMismatchError(
            f"tensor {name!r}: the update's parent (device {parent_device}, parameter {parameter}, "
            f"depth {depth} - 1) is not the tensor's node (device {node.device_id}, parameter {node.parameter_id}, "
            f"depth {node.put_node_depth}) in {base.source}"
        )
    _check_tca(header, name, tensor, base)
    return tensor


def _check_tca(header: NduHeader, name: str, tensor: BaseTensor, base: BaseModel) -> None:
    parent = header.parent_node_id
    if parent is not None and parent.temporal_context_modeling_flag and tensor.levels is None:
        raise BaseMismatchError(
            f"tensor {name!r}: the update uses temporal context adaptation but the base {base.source} "
            "does not send the tensor as DeepCABAC-coded levels"
        )
