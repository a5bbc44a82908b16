# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Incremental coding: a model coded as an update of a base NNR model (ISO/IEC 15938-17:2024,
parameter update tree), the way NNCodec 2.1.3 codes `compress_differences` with `tca` and an
`hdsp_tool`.

An update bitstream has `mps_parent_signalling_enabled_flag` = 1. Each lossy float tensor that
changed travels as an NDU naming its parent (node id of the base tensor's NDU, one level deeper;
parent_node_id_type ICNN_NDU_ID) and codes the quantized difference to the base tensor, with
temporal context adaptation on the base tensor's levels and history-dependent significance
probability where that codes smaller. A tensor whose difference quantizes to zero is left out;
other tensors that changed (integers, raw or lossless floats) are sent whole, without parent.
Decoding needs the same base: restored = base + decoded difference, and the base's value for
every tensor the update leaves out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnrconv.core._errors import BaseMismatchError
from nnrconv.nnc._ndu import NduHeader, NodeId
from nnrconv.nnc._payloads import UpdateParent

__all__ = ["BaseModel", "BaseTensor", "check_parent", "read_base"]


@dataclass(frozen=True, slots=True)
class BaseTensor:
    """One tensor of a base model, as decoded from its NDU.

    Attributes:
        values: the decoded tensor.
        node_id: its NDU's parameter-update-tree node (None: the NDU had none).
        levels: its int32 levels when it was DeepCABAC-coded as NNR_PT_FLOAT (the TCA base).
    """

    values: np.ndarray
    node_id: NodeId | None
    levels: np.ndarray | None = None

    @property
    def history(self) -> np.ndarray | None:
        """HDSP history after the base: 1 where the base's level is non-zero (NNCodec's
        `HdspTool.add_data_to_hist` on the coded base)."""
        return None if self.levels is None else (self.levels != 0).astype(np.uint8)

    def parent(self, name: str, source: str) -> UpdateParent:
        """What an update NDU of this tensor is coded against."""
        if self.node_id is None:
            raise BaseMismatchError(
                f"{source}: tensor {name!r} has no node id (node_id_present_flag = 0), so an update cannot name it"
            )
        values = np.ascontiguousarray(self.values, dtype=np.float32)
        return UpdateParent(values, self.node_id, self.levels, self.history)


@dataclass(frozen=True, slots=True)
class BaseModel:
    """A decoded base model an update refers to.

    Attributes:
        tensors: name -> tensor, in stream order.
        source: the base's file name, for messages.
    """

    tensors: dict[str, BaseTensor]
    source: str = "<base>"

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


def read_base(data: bytes | bytearray | memoryview, *, source: str = "<base>", jobs: int | None = None) -> BaseModel:
    """Decode a base model and keep what updates of it need (levels and node ids).

    Raises:
        BaseMismatchError: the bitstream is itself an update, or has no node ids (profile 0).
        BitstreamError, UnsupportedError: as `decode_model`.
    """
    from nnrconv.nnc._decoding import decode_with_levels

    decoded, levels, nodes = decode_with_levels(data, source=source, jobs=jobs)
    depth = max((n.put_node_depth for n in nodes.values() if n is not None), default=0)
    if depth > 0:
        raise BaseMismatchError(
            f"{source} is itself an incremental update (put_node_depth {depth}); give the full model it was "
            "made from as base (chains of updates are not supported yet)"
        )
    if decoded.general_profile_idc != 1:
        raise BaseMismatchError(f"{source} is a profile 0 bitstream without node ids; a base must be profile 1")
    tensors = {name: BaseTensor(array, nodes.get(name), levels.get(name)) for name, array in decoded.tensors.items()}
    return BaseModel(tensors, source)


def check_parent(header: NduHeader, name: str, base: BaseModel) -> BaseTensor:
    """The base tensor an update NDU refers to, after checking its node and parent ids.

    NNCodec's decoder asserts the same: equal device_id and parameter_id, and put_node_depth one
    more than the parent's.

    Raises:
        BaseMismatchError: the base lacks the tensor, its shape differs, or the ids disagree.
    """
    dims = header.tensor_dimensions or (1,)
    tensor = base.get(name, tuple(dims), "the update")
    parent = header.parent_node_id
    assert parent is not None
    node = tensor.node_id
    if node is None:
        raise BaseMismatchError(f"tensor {name!r}: the base {base.source} sends it without a node id")
    if header.node_id is not None:
        device, parameter, depth = header.node_id.device_id, header.node_id.parameter_id, header.node_id.put_node_depth
    else:
        device, parameter, depth = node.device_id, parent.parameter_id, parent.put_node_depth
    if parent.parent_device_id is None:
        raise BaseMismatchError(
            f"tensor {name!r}: the update names its parent by payload hash "
            f"({parent.parent_node_id_type.name}), which nnrconv cannot match yet"
        )
    expected = (node.device_id, node.parameter_id, node.put_node_depth + 1)
    if (parent.parent_device_id, parameter, depth) != expected or device != node.device_id:
        raise BaseMismatchError(
            f"tensor {name!r}: the update's parent (device {parent.parent_device_id}, parameter {parameter}, "
            f"depth {depth} - 1) is not the base's node (device {node.device_id}, parameter {node.parameter_id}, "
            f"depth {node.put_node_depth}) in {base.source}"
        )
    if parent.temporal_context_modeling_flag and tensor.levels is None:
        raise BaseMismatchError(
            f"tensor {name!r}: the update uses temporal context adaptation but the base {base.source} "
            "does not send the tensor as DeepCABAC-coded levels"
        )
    return tensor
