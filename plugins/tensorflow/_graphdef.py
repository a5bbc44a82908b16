# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Frozen GraphDef `.pb` files: weights are the values of `Const` nodes.

Tensor keys (NNR topology element ids) are the `Const` node names; constants inside the
function library are keyed `<function>/<node>`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from pathlib import Path

from google.protobuf.message import DecodeError
from tensorflow.core.framework import graph_pb2

from nnrconv.core import BitstreamError, FormatError, LazyTensor, Model, Tensor
from nnrconv_tensorflow import _roles
from nnrconv_tensorflow._model import FORMAT, GRAPHDEF, TFNative, neutral_graph, set_roles
from nnrconv_tensorflow._tensors import TF_TO_DTYPE, clear_values, fill_values, proto_shape, proto_to_array

__all__ = ["const_sites", "graph_from_bytes", "model_from_graph_def", "read_graph_def", "rebuild", "write"]


def const_sites(graph_def: graph_pb2.GraphDef) -> Iterator[tuple[str, str, str, object]]:
    """(key, scope, node name, value TensorProto) of every Const whose type nnrconv models."""
    taken = {n.name for n in graph_def.node}
    scopes = [("", graph_def.node)] + [(f.signature.name, f.node_def) for f in graph_def.library.function]
    for scope, nodes in scopes:
        for node in nodes:
            if node.op != "Const" or "value" not in node.attr:
                continue
            proto = node.attr["value"].tensor
            if proto.dtype not in TF_TO_DTYPE or proto_shape(proto) is None:
                continue
            key = node.name if not scope else f"{scope}/{node.name}"
            if scope and key in taken:
                key += "@library"
            yield key, scope, node.name, proto


def graph_from_bytes(data: bytes, what: str) -> graph_pb2.GraphDef:
    """Parse a GraphDef; None-safe error for anything that is not one.

    Raises:
        ValueError: the bytes do not parse, or hold no node.
    """
    graph_def = graph_pb2.GraphDef()
    try:
        graph_def.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ValueError(f"{what}: not a TensorFlow GraphDef (protobuf parse failed: {exc})") from exc
    if not graph_def.node:
        raise ValueError(f"{what}: not a TensorFlow GraphDef (no nodes)")
    return graph_def


def read_graph_def(path: Path) -> graph_pb2.GraphDef:
    """Read a frozen graph file.

    Raises:
        FormatError: the file cannot be read or is not a GraphDef.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FormatError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        return graph_from_bytes(data, str(path))
    except ValueError as exc:
        raise FormatError(str(exc)) from exc


def _lazy(key: str, proto: object) -> Tensor:
    dtype = TF_TO_DTYPE[proto.dtype]  # type: ignore[attr-defined]
    return LazyTensor(key, dtype, proto_shape(proto), lambda: proto_to_array(proto, dtype))  # type: ignore[arg-type]


def model_from_graph_def(graph_def: graph_pb2.GraphDef, source: str) -> Model:
    """A Model whose tensors are lazy views of the Const values (decoded on access)."""
    tensors: dict[str, Tensor] = {}
    refs: dict[str, list[tuple[str, str]]] = {}
    for key, scope, name, proto in const_sites(graph_def):
        tensors[key] = _lazy(key, proto)
        refs[key] = [(scope, name)]
    metadata = {"tensorflow.kind": GRAPHDEF, "tensorflow.producer": str(graph_def.versions.producer)}
    flow = _roles.Dataflow(graph_def.node, graph_def.library.function)
    set_roles(tensors, _roles.infer(flow, refs), metadata)
    native = TFNative(GRAPHDEF, graph_def=graph_def, loaded=dict(tensors))
    graph = neutral_graph(Path(source).stem, graph_def.node, tensors)
    return Model(graph, tensors, source_format=FORMAT, native=native, metadata=metadata)


def rebuild(model: Model, strip: Collection[str]) -> graph_pb2.GraphDef:
    """A copy of the GraphDef: `strip`ped constants emptied, replaced tensors written back.

    Raises:
        FormatError: a tensor does not fit its Const's type or shape.
    """
    native: TFNative = model.native
    graph_def = graph_pb2.GraphDef()
    graph_def.CopyFrom(native.graph_def)
    for key, _, _, proto in const_sites(graph_def):
        if key in strip:
            clear_values(proto)
            continue
        tensor = model.tensors.get(key)
        if tensor is None or native.loaded.get(key) is tensor:
            continue
        try:
            fill_values(proto, tensor.numpy())
        except ValueError as exc:
            raise FormatError(f"tensor {key!r}: {exc}") from exc
    return graph_def


def fill_stripped(graph_def: graph_pb2.GraphDef, tensors: Mapping[str, Tensor], stripped: Collection[str]) -> None:
    """Put decoded tensors back into the emptied constants of a topology GraphDef.

    Args:
        graph_def: the topology's GraphDef, changed in place.
        tensors: the decoded tensors by key.
        stripped: keys of the constants whose values were removed (the container lists them;
            a constant may legitimately hold no values, which TensorFlow reads as zeros).

    Raises:
        BitstreamError: an emptied constant has no tensor, a tensor has no emptied constant, or
            the values do not fit.
    """
    stripped = set(stripped)
    used = set()
    for key, _, _, proto in const_sites(graph_def):
        if key not in stripped:
            continue
        tensor = tensors.get(key)
        if tensor is None:
            raise BitstreamError("the TensorFlow topology's constant has no values and no NNR data unit", tensor=key)
        try:
            fill_values(proto, tensor.numpy())
        except ValueError as exc:
            raise BitstreamError(str(exc), tensor=key) from exc
        used.add(key)
    missing = sorted(stripped - used)
    if missing:
        raise BitstreamError(f"{len(missing)} emptied constant(s) are not in the GraphDef: {missing[:5]!r}")
    extra = sorted(set(tensors) - used)
    if extra:
        raise BitstreamError(f"{len(extra)} decoded tensor(s) match no emptied constant of the GraphDef: {extra[:5]!r}")


def write(model: Model, path: Path) -> None:
    """Write the frozen graph (only `path`).

    Raises:
        FormatError: a tensor does not fit, the GraphDef exceeds 2 GiB, or the file cannot be written.
    """
    write_graph_def(rebuild(model, strip=()), path)


def write_graph_def(graph_def: graph_pb2.GraphDef, path: Path) -> None:
    """Serialize deterministically (stable bytes across processes) and write; errors name the file."""
    try:
        data = graph_def.SerializeToString(deterministic=True)
    except ValueError as exc:
        raise FormatError(f"{path}: the GraphDef cannot be serialized: {exc}") from exc
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise FormatError(f"{path}: cannot write: {exc.strerror}") from exc
