# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Where the weights of an ONNX model live, and how their payloads are read, stripped and filled.

NOTE: one traversal (`weight_sites`) decides both which tensors a model has and what they are
called. `load`, `save`, `topology_bytes` and `from_topology` all walk the model with it, so a
key computed while encoding names the same slot while decoding; that is the whole contract
between the topology bytes and the NNR data units.

Order of the walk: a graph's initializers, then its nodes in order; for each node the tensor of
a `Constant` node, then the subgraphs of its GRAPH / GRAPHS attributes, depth first. The main
graph comes first, then the nodes of every local function.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx

from nnrconv.core import DType, TensorRole

__all__ = [
    "WeightSite",
    "clear_payload",
    "element_count",
    "expected_items",
    "has_payload",
    "is_external",
    "node_scope",
    "payload_array",
    "payload_field",
    "set_payload",
    "tensor_dtype",
    "weight_roles",
    "weight_sites",
]

INITIALIZER = "initializer"
CONSTANT = "constant"
MAIN_SCOPE = ""

_A = onnx.AttributeProto
_DEFAULT_DOMAINS = ("", "ai.onnx")
_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")
_PAYLOAD_FIELDS = ("raw_data", *_TYPED_FIELDS, "external_data", "data_location")


@dataclass(slots=True)
class WeightSite:
    """One tensor of the model and its slot in the proto.

    Attributes:
        key: the unique name used as the NNR topology element id.
        name: the tensor's name in its own scope (initializer name or Constant output name).
        proto: the TensorProto inside the ModelProto; editing it edits the model.
        kind: "initializer" or "constant".
        scope: where it lives ("" for the main graph, else a path of node/attribute names).
        container: the GraphProto (or FunctionProto) whose initializers or nodes hold it.
        node: for a Constant, its NodeProto.
    """

    key: str
    name: str
    proto: onnx.TensorProto
    kind: str
    scope: str
    container: onnx.GraphProto | onnx.FunctionProto | None = None
    node: onnx.NodeProto | None = None


def node_scope(scope: str, node: onnx.NodeProto, index: int, attribute: str, position: int | None) -> str:
    """The scope of a subgraph held in attribute `attribute` of the `index`-th node of `scope`."""
    label = node.name or f"{node.op_type}_{index}"
    suffix = attribute if position is None else f"{attribute}[{position}]"
    return f"{scope}/{label}.{suffix}" if scope else f"{label}.{suffix}"


def _constant_tensor(node: onnx.NodeProto) -> onnx.TensorProto | None:
    if node.op_type != "Constant" or node.domain not in _DEFAULT_DOMAINS:
        return None
    for attribute in node.attribute:
        if attribute.name == "value" and attribute.type == _A.TENSOR:
            return attribute.t
    return None


_Found = tuple[str, str, onnx.TensorProto, str, "onnx.GraphProto | onnx.FunctionProto", "onnx.NodeProto | None"]


def _walk_nodes(container: onnx.GraphProto | onnx.FunctionProto, scope: str) -> Iterator[_Found]:
    for index, node in enumerate(container.node):
        tensor = _constant_tensor(node)
        if tensor is not None:
            yield CONSTANT, (node.output[0] if node.output else ""), tensor, scope, container, node
        for attribute in node.attribute:
            if attribute.type == _A.GRAPH:
                yield from _walk_graph(attribute.g, node_scope(scope, node, index, attribute.name, None))
            elif attribute.type == _A.GRAPHS:
                for position, graph in enumerate(attribute.graphs):
                    yield from _walk_graph(graph, node_scope(scope, node, index, attribute.name, position))


def _walk_graph(graph: onnx.GraphProto, scope: str) -> Iterator[_Found]:
    for tensor in graph.initializer:
        yield INITIALIZER, tensor.name, tensor, scope, graph, None
    yield from _walk_nodes(graph, scope)


def weight_sites(model: onnx.ModelProto) -> list[WeightSite]:
    """Every weight of `model` in traversal order, each with a unique, deterministic key.

    A name already taken by an earlier site (the same name in another scope) is keyed
    ``name@scope``; should that collide too, ``#1``, ``#2``… is appended.
    """
    sites: list[WeightSite] = []
    taken: set[str] = set()
    walks = [_walk_graph(model.graph, MAIN_SCOPE)]
    walks += [_walk_nodes(f, f"function {f.domain}:{f.name}") for f in model.functions]
    for walk in walks:
        for kind, name, proto, scope, container, node in walk:
            key = name or f"<{kind}>"
            if key in taken:
                key = f"{key}@{scope or 'main'}"
            base, number = key, 0
            while key in taken:
                number += 1
                key = f"{base}#{number}"
            taken.add(key)
            sites.append(WeightSite(key, name, proto, kind, scope, container, node))
    return sites


_ROLE_INPUTS: dict[str, tuple[TensorRole | None, ...]] = {
    "Conv": (None, TensorRole.WEIGHT, TensorRole.BIAS),
    "ConvTranspose": (None, TensorRole.WEIGHT, TensorRole.BIAS),
    "Gemm": (TensorRole.WEIGHT, TensorRole.WEIGHT, TensorRole.BIAS),
    "MatMul": (TensorRole.WEIGHT, TensorRole.WEIGHT),
    "BatchNormalization": (
        None,
        TensorRole.BN_GAMMA,
        TensorRole.BN_BETA,
        TensorRole.BN_MEAN,
        TensorRole.BN_VAR,
    ),
}


def weight_roles(model: onnx.ModelProto) -> dict[str, TensorRole]:
    """Role of each value name consumed by a Conv/Gemm/MatMul/BatchNormalization input slot.

    Only names that turn out to be weights matter; the first consumer found decides.
    """
    roles: dict[str, TensorRole] = {}

    def visit(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            slots = _ROLE_INPUTS.get(node.op_type) if node.domain in _DEFAULT_DOMAINS else None
            for name, role in zip(node.input, slots or (), strict=False):
                if role is not None and name:
                    roles.setdefault(name, role)
            for attribute in node.attribute:
                if attribute.type == _A.GRAPH:
                    visit(attribute.g)
                elif attribute.type == _A.GRAPHS:
                    for sub in attribute.graphs:
                        visit(sub)

    visit(model.graph)
    return roles


def tensor_dtype(proto: onnx.TensorProto) -> DType | None:
    """The element type of a TensorProto, or None for UNDEFINED and codes nnrconv does not know."""
    try:
        dtype = DType(proto.data_type)
    except ValueError:
        return None
    return None if dtype is DType.UNDEFINED else dtype


def element_count(proto: onnx.TensorProto) -> int:
    return int(np.prod(proto.dims, dtype=np.int64)) if proto.dims else 1


def expected_items(dtype: DType, count: int) -> int:
    """Items of `dtype.storage_dtype` holding `count` elements (packed types: bytes)."""
    return dtype.storage_nbytes(count) if dtype.is_packed else count


def is_external(proto: onnx.TensorProto) -> bool:
    return proto.data_location == onnx.TensorProto.EXTERNAL


def has_payload(proto: onnx.TensorProto) -> bool:
    """Whether the tensor holds data (in any field, or externally)."""
    return is_external(proto) or proto.HasField("raw_data") or any(len(getattr(proto, f)) for f in _TYPED_FIELDS)


def clear_payload(proto: onnx.TensorProto) -> None:
    """Remove the data, keeping name, dims, type, doc string and metadata."""
    for field in _PAYLOAD_FIELDS:
        proto.ClearField(field)


def _typed_items(proto: onnx.TensorProto, dtype: DType) -> np.ndarray:
    """The typed-field payload as `dtype.storage_dtype` items (onnx.proto's field rules)."""
    storage = dtype.storage_dtype
    if dtype is DType.STRING:
        return np.array(list(proto.string_data), dtype=object)
    if dtype in (DType.FLOAT, DType.COMPLEX64):
        return np.array(proto.float_data, dtype=np.float32).view(storage)
    if dtype in (DType.DOUBLE, DType.COMPLEX128):
        return np.array(proto.double_data, dtype=np.float64).view(storage)
    if dtype is DType.INT64:
        return np.array(proto.int64_data, dtype=np.int64)
    if dtype in (DType.UINT32, DType.UINT64):
        return np.array(proto.uint64_data, dtype=np.uint64).astype(storage)
    # int32_data holds every other type: integers and bools by value, 16- and 8-bit floats as
    # their bit patterns, and sub-byte types as packed bytes, one byte per entry.
    values = np.array(proto.int32_data, dtype=np.int32)
    if dtype is DType.FLOAT16:
        return values.astype(np.uint16).view(np.float16)
    return values.astype(storage)


def payload_array(proto: onnx.TensorProto, dtype: DType, key: str) -> np.ndarray:
    """The in-proto payload (raw_data or a typed field) as an exact array of `dtype`'s storage.

    Returns a flat array for packed types and an array of the tensor's dims otherwise.

    Raises:
        ValueError: the payload's length does not match the dims (message names the tensor).
    """
    count = element_count(proto)
    expected = expected_items(dtype, count)
    if proto.HasField("raw_data"):
        if dtype is DType.STRING:
            raise ValueError(f"tensor {key!r}: STRING tensors cannot use raw_data")
        raw = proto.raw_data
        itemsize = dtype.storage_dtype.itemsize
        if len(raw) != expected * itemsize:
            raise ValueError(
                f"tensor {key!r}: raw_data has {len(raw)} bytes, dims {list(proto.dims)} of "
                f"{dtype.name} need {expected * itemsize}"
            )
        array = np.frombuffer(raw, dtype=dtype.storage_dtype)
    else:
        array = _typed_items(proto, dtype)
        if array.size != expected:
            raise ValueError(
                f"tensor {key!r}: typed data has {array.size} items, dims {list(proto.dims)} of "
                f"{dtype.name} need {expected}"
            )
    return array if dtype.is_packed else array.reshape(tuple(proto.dims))


def _exact_cast(array: np.ndarray, dtype: DType, key: str) -> np.ndarray:
    """`array` as `dtype.storage_dtype`, refusing any conversion that changes a value."""
    storage = dtype.storage_dtype
    if array.dtype == storage:
        return array
    if dtype is DType.BFLOAT16 and array.dtype == np.float32:
        bits = np.ascontiguousarray(array).view(np.uint32)
        if np.any(bits & 0xFFFF):
            raise ValueError(f"tensor {key!r}: float32 values are not exact bfloat16 values")
        return (bits >> 16).astype(np.uint16)
    if dtype.is_numpy_native and dtype is not DType.STRING and array.dtype.kind in "biufc":
        cast = array.astype(storage)
        if cast.astype(array.dtype).tobytes() == np.ascontiguousarray(array).tobytes():
            return cast
        raise ValueError(f"tensor {key!r}: {array.dtype} values do not fit {dtype.name} exactly")
    raise ValueError(f"tensor {key!r}: an array of {array.dtype} cannot fill a {dtype.name} tensor")


def payload_field(proto: onnx.TensorProto) -> str:
    """The field holding the tensor's numeric payload: "raw_data" (also when there is none) or a
    typed field ("float_data", "int32_data", ...), so a rewrite can keep the file's layout."""
    for name in _NUMERIC_TYPED_FIELDS:
        if len(getattr(proto, name)):
            return name
    return "raw_data"


_NUMERIC_TYPED_FIELDS = ("float_data", "int32_data", "int64_data", "double_data", "uint64_data")


def _to_typed_field(proto: onnx.TensorProto, dtype: DType, field: str) -> None:
    """Move a raw_data payload into `field`, laid out as onnx.proto says (exact for every type)."""
    items = np.frombuffer(proto.raw_data, dtype=dtype.storage_dtype)
    if items.dtype == np.float16:  # int32_data holds float16 as bit patterns
        items = items.view(np.uint16)
    elif items.dtype.kind == "c":  # complex numbers as pairs of reals
        items = items.view(np.float32 if items.dtype.itemsize == 8 else np.float64)
    elif items.dtype == np.bool_:  # int32_data holds booleans as 0/1
        items = items.astype(np.int32)
    proto.ClearField("raw_data")
    getattr(proto, field).extend(items.tolist())


def set_payload(proto: onnx.TensorProto, array: np.ndarray, key: str, field: str = "raw_data") -> None:
    """Replace the payload with `array`, cast exactly to the proto's type and laid out as its dims.

    Numeric data goes to `field`: raw_data (little-endian, sub-byte types packed) or the typed
    field the tensor used before (`payload_field`); strings go to string_data.

    Raises:
        ValueError: the type is unknown, the values do not fit it exactly, or the element count
            differs from the dims (the message names the tensor).
    """
    dtype = tensor_dtype(proto)
    if dtype is None:
        raise ValueError(f"tensor {key!r}: element type code {proto.data_type} is not supported")
    count = element_count(proto)
    expected = expected_items(dtype, count)
    array = np.asarray(array)
    if array.size != expected:
        raise ValueError(
            f"tensor {key!r}: {array.size} values for dims {list(proto.dims)} of {dtype.name} "
            f"(expected {expected})"
        )
    clear_payload(proto)
    if expected == 0:
        # An empty tensor has nothing to store; leaving raw_data unset is what exporters write.
        return
    if dtype is DType.STRING:
        values = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in array.reshape(-1)]
        proto.string_data.extend(values)
        return
    proto.raw_data = np.ascontiguousarray(_exact_cast(array, dtype, key)).tobytes()
    if field != "raw_data" and not dtype.is_packed:
        _to_typed_field(proto, dtype, field)
