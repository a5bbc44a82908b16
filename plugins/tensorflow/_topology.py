# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Topology bytes of NNR_TPL format 4 (NNR_TPL_TEF): the NNRTF container, both ways."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from nnrconv.core import BitstreamError, FormatError, Model, Tensor, TopologyTensor
from nnrconv_tensorflow import _container, _family, _graphdef, _savedmodel
from nnrconv_tensorflow._model import GRAPHDEF, SAVEDMODEL, TFNative

__all__ = ["expected_tensors", "from_topology", "topology_bytes"]

SOURCE = "<NNR topology>"


def topology_bytes(model: Model, native: TFNative, carried: set[str]) -> bytes:
    kind = _family.kind_of(model)
    if kind is not None:
        return _family.module_for(kind).to_container(model, carried)
    if native.kind == SAVEDMODEL:
        return _savedmodel.to_container(model, carried)
    graph_def = _graphdef.rebuild(model, strip=carried)
    try:
        # Deterministic: map fields (node attributes) in key order, whatever order parsing and
        # edits left them in, so that a model read back from NNR yields the same topology bytes.
        data = graph_def.SerializeToString(deterministic=True)
    except ValueError as exc:
        raise FormatError(f"the TensorFlow topology cannot be serialized: {exc}") from exc
    listed = json.dumps(sorted(carried), separators=(",", ":")).encode()
    return _container.pack({":kind": GRAPHDEF.encode(), ":carried": listed, ":graph": data})


def from_topology(topology: bytes, tensors: Mapping[str, Tensor]) -> Model:
    if not topology:
        raise BitstreamError(
            "the TensorFlow topology unit is empty (NNCodec writes no graph); "
            "nnrconv needs the graph to rebuild a model"
        )
    if _container.is_container(topology):
        entries = _container.unpack(topology)
        kind = entries.get(":kind", b"")
        family = _family.from_container(kind, entries, tensors)
        if family is not None:
            return family
        if kind == SAVEDMODEL.encode():
            return _savedmodel.from_container(entries, tensors)
        if kind != GRAPHDEF.encode() or ":graph" not in entries:
            raise BitstreamError(f"the TensorFlow topology container has an unknown kind {kind[:32]!r}")
        data = entries[":graph"]
        try:
            stripped = [str(k) for k in json.loads(entries.get(":carried", b"[]"))]
        except (TypeError, ValueError) as exc:
            raise BitstreamError(f"the TensorFlow topology lists its carried constants badly: {exc}") from exc
    else:
        data = topology  # a bare GraphDef, as another writer may carry it: fill what was sent
        stripped = list(tensors)
    try:
        graph_def = _graphdef.graph_from_bytes(data, "the NNR topology unit")
    except ValueError as exc:
        raise BitstreamError(str(exc)) from exc
    _graphdef.fill_stripped(graph_def, tensors, stripped)
    return _graphdef.model_from_graph_def(graph_def, SOURCE)


def expected_tensors(topology: bytes) -> list[TopologyTensor] | None:
    """The emptied constants of a frozen graph, or the carried checkpoint entries of a SavedModel,
    with their declared types and shapes; None for the Keras and TFLite kinds and a bare GraphDef.

    Raises:
        BitstreamError: the container, its manifest or its graph is malformed.
    """
    from nnrconv_tensorflow._tensors import TF_TO_DTYPE, proto_shape

    if not _container.is_container(topology):
        return None
    entries = _container.unpack(topology)
    kind = entries.get(":kind", b"")
    found: list[tuple[str, int, tuple[int, ...] | None]] = []
    try:
        if kind == SAVEDMODEL.encode():
            for e in json.loads(entries[":manifest"])["entries"]:
                if e["carried"]:
                    found.append((str(e["key"]), int(e["dtype"]), tuple(int(d) for d in e["shape"])))
        elif kind == GRAPHDEF.encode() and ":graph" in entries:
            stripped = {str(k) for k in json.loads(entries.get(":carried", b"[]"))}
            graph_def = _graphdef.graph_from_bytes(entries[":graph"], "the NNR topology unit")
            found = [(k, p.dtype, proto_shape(p)) for k, _, _, p in _graphdef.const_sites(graph_def) if k in stripped]
        else:
            return None
    except (KeyError, TypeError, ValueError) as exc:
        raise BitstreamError(f"the TensorFlow topology is malformed: {exc}") from exc
    result = []
    for key, tf_dtype, shape in found:
        dtype = TF_TO_DTYPE.get(tf_dtype)
        if dtype is None or shape is None:
            raise BitstreamError("the TensorFlow topology declares no usable type and shape", tensor=key)
        result.append(TopologyTensor(key, dtype, shape, dtype.storage_nbytes(math.prod(shape))))
    return result
