# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""NNR inside ONNX (integration mode 2): weights become NNR data units decoded by graph nodes.

Layout of a `.nnr.onnx` file (a valid ONNX model; domain `org.mpeg.nnr`, version 2, declared
in `opset_import`). Each coded weight `W` becomes ONE node `NnrDecode() -> W` of that domain,
with no inputs, whose attribute `nnr` is a UINT8 tensor holding one complete NNR_NDU unit:
- A `Constant` keeps its place and everything it had (name, doc string, attributes in order);
  only its op type and domain change, its `value` attribute holds the tensor without payload,
  serialized (a STRING: onnx.checker refuses a tensor attribute without data), and `nnr` follows.
- A graph initializer leaves the initializer list; its node comes first in the graph with
  `value` (the initializer without payload and without its name, which is the node's output,
  serialized) and `nnr_index` (its position among the initializers); when it was also a graph
  input, `nnr_input_index` and `nnr_input` (that entry, serialized).
Optional attributes say what an exact restore needs beyond that, only when needed:
`nnr_tensor_id` (the NDU's topology element id, when it is not the output name), `nnr_flags`
(bit 0: the Constant's tensor was named like its output, a name dropped from `value`; bits 1-3:
the payload field, 0 = raw_data, else 1 + index in `_TYPED_FIELDS`; bit 4: the Constant wrote
its empty domain explicitly), and `nnr_domain` (a Constant's domain when it was not "").
The NNR start unit and model parameter set travel base64-encoded in `metadata_props` under
`org.mpeg.nnr.parameter_sets`. Everything else in the graph is untouched, so restoring gives
the plain model byte for byte.

NOTE: why this layout: each coded weight costs its data unit plus about 40 bytes; no name is
repeated (the first layout, `_embed_v1`, added a coded tensor `W.nnr`, a second node and a
serialized template per weight: 90-200 KB on real models with a few hundred Constants). What
a `.nnr.onnx` still carries beyond the `.nnr` is mostly the graph itself, which an NNR topology
unit holds deflated and an ONNX file cannot.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper

from nnrconv.core import FormatError
from nnrconv_onnx import _embed_v1
from nnrconv_onnx._weights import (
    CONSTANT,
    WeightSite,
    clear_payload,
    payload_field,
    set_payload,
    tensor_dtype,
    weight_sites,
)

__all__ = [
    "DOMAIN",
    "OP_TYPE",
    "PARAMETER_SETS_KEY",
    "Embedded",
    "embed",
    "extract",
    "has_external_data",
    "is_embedded",
    "restore",
]

DOMAIN = "org.mpeg.nnr"
OP_TYPE = "NnrDecode"
DOMAIN_VERSION = 2
PARAMETER_SETS_KEY = "org.mpeg.nnr.parameter_sets"
_UNIT, _VALUE, _INDEX, _INPUT_INDEX, _INPUT = "nnr", "value", "nnr_index", "nnr_input_index", "nnr_input"
_TENSOR_ID, _FLAGS, _DOMAIN = "nnr_tensor_id", "nnr_flags", "nnr_domain"
_NAMED_LIKE_OUTPUT = 1
_EMPTY_DOMAIN_SET = 16
_TYPED_FIELDS = ("float_data", "int32_data", "int64_data", "double_data", "uint64_data")
# The payload field's code in `nnr_flags` bits 1-3.
_FIELD_CODES = {"raw_data": 0, **{name: index + 1 for index, name in enumerate(_TYPED_FIELDS)}}


def is_embedded(proto: onnx.ModelProto) -> bool:
    """Whether the model declares the NNR decode domain (it holds NNR-coded weights)."""
    return any(op.domain == DOMAIN for op in proto.opset_import)


def _layout_version(proto: onnx.ModelProto) -> int:
    return next((op.version for op in proto.opset_import if op.domain == DOMAIN), 0)


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    yield from _graphs(sub)


def _unit_tensor(ndu: bytes) -> onnx.TensorProto:
    tensor = onnx.TensorProto(data_type=onnx.TensorProto.UINT8, dims=[len(ndu)])
    tensor.raw_data = ndu
    return tensor


def embed(
    proto: onnx.ModelProto,
    parameter_sets: bytes,
    ndus: Mapping[str, bytes],
    fields: Mapping[str, str] | None = None,
) -> onnx.ModelProto:
    """A copy of `proto` whose weights named in `ndus` are replaced by their coded data units.

    Args:
        proto: the plain model (payloads of the coded weights are dropped).
        parameter_sets: the bytes of the NNR start unit and model parameter set.
        ndus: topology element id (as `weight_sites` keys it) -> complete NNR_NDU unit bytes.
        fields: tensor id -> the payload field the original file used (`payload_field`), when
            `proto` no longer holds the payloads; default: read from `proto`.
    """
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    by_graph: dict[int, tuple[onnx.GraphProto, list[tuple[WeightSite, int]]]] = {}
    for site in weight_sites(out):
        if site.key not in ndus:
            continue
        field = _FIELD_CODES[fields[site.key] if fields and site.key in fields else payload_field(site.proto)]
        if site.kind == CONSTANT:
            assert site.node is not None  # a Constant site always has its node
            _constant_to_decode(site, ndus[site.key], field)
        else:
            assert isinstance(site.container, onnx.GraphProto)  # functions have no initializers
            by_graph.setdefault(id(site.container), (site.container, []))[1].append((site, field))
    # Children before parents: rewriting a graph copies its nodes, subgraphs included, which
    # would detach the subgraph messages that later rewrites hold. The walk is pre-order.
    for graph, sites in reversed(by_graph.values()):
        _initializers_to_decode(graph, sites, ndus)
    out.opset_import.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    entry = out.metadata_props.add()
    entry.key, entry.value = PARAMETER_SETS_KEY, base64.b64encode(parameter_sets).decode("ascii")
    return out


def _constant_to_decode(site: WeightSite, ndu: bytes, field: int) -> None:
    """Turn the Constant node in place into its decode node (see the module docstring)."""
    node = site.node
    assert node is not None
    output = node.output[0]
    named = site.proto.name and site.proto.name == output
    flags = (_NAMED_LIKE_OUTPUT if named else 0) | field << 1
    template = onnx.TensorProto()
    template.CopyFrom(site.proto)
    clear_payload(template)
    if flags & _NAMED_LIKE_OUTPUT:
        template.ClearField("name")
    value = next(a for a in node.attribute if a.name == _VALUE and a.type == onnx.AttributeProto.TENSOR)
    value.ClearField("t")
    value.s, value.type = template.SerializeToString(), onnx.AttributeProto.STRING
    extra: dict[str, object] = {_UNIT: _unit_tensor(ndu)}
    if site.key != output:
        extra[_TENSOR_ID] = site.key
    if node.domain:
        extra[_DOMAIN] = node.domain
    elif node.HasField("domain"):
        flags |= _EMPTY_DOMAIN_SET
    if flags:
        extra[_FLAGS] = flags
    node.op_type, node.domain = OP_TYPE, DOMAIN
    node.attribute.extend(helper.make_attribute(k, v) for k, v in extra.items())


def _initializers_to_decode(
    graph: onnx.GraphProto, coded: list[tuple[WeightSite, int]], ndus: Mapping[str, bytes]
) -> None:
    """Move coded initializers out of `graph.initializer` into decode nodes at the graph's front."""
    positions = {t.name: i for i, t in reversed(list(enumerate(graph.initializer)))}
    inputs = {v.name: i for i, v in reversed(list(enumerate(graph.input)))}
    nodes = []
    for site, field in coded:
        template = onnx.TensorProto()
        template.CopyFrom(site.proto)
        flags = field << 1
        clear_payload(template)
        template.ClearField("name")
        attributes: dict[str, object] = {_VALUE: template.SerializeToString(), _UNIT: _unit_tensor(ndus[site.key])}
        attributes[_INDEX] = positions[site.name]
        if site.name in inputs:
            attributes[_INPUT_INDEX] = inputs[site.name]
            attributes[_INPUT] = graph.input[inputs[site.name]].SerializeToString()
        if site.key != site.name:
            attributes[_TENSOR_ID] = site.key
        if flags:
            attributes[_FLAGS] = flags
        node = helper.make_node(OP_TYPE, [], [site.name], domain=DOMAIN)
        node.attribute.extend(helper.make_attribute(k, v) for k, v in attributes.items())
        nodes.append(node)
    coded_names = {site.name for site, _ in coded}
    _replace(graph.node, nodes + list(graph.node))
    _replace(graph.initializer, [t for t in graph.initializer if t.name not in coded_names])
    _replace(graph.input, [v for v in graph.input if v.name not in coded_names])


def _replace(repeated: object, items: list) -> None:
    """Set a repeated message field to `items` (copied first: clearing frees the originals)."""
    copies = []
    for item in items:
        copy = type(item)()
        copy.CopyFrom(item)
        copies.append(copy)
    del repeated[:]  # type: ignore[index]
    repeated.extend(copies)  # type: ignore[attr-defined]


def _is_decode(node: onnx.NodeProto) -> bool:
    return node.domain == DOMAIN and node.op_type == OP_TYPE


@dataclass(frozen=True, slots=True)
class Embedded:
    """What an embedded model holds: parameter sets and coded units, keyed by tensor id."""

    parameter_sets: bytes
    ndus: dict[str, bytes]


def _containers(proto: onnx.ModelProto) -> list[onnx.GraphProto | onnx.FunctionProto]:
    return [*_graphs(proto.graph), *proto.functions]


def _attributes(node: onnx.NodeProto) -> dict[str, onnx.AttributeProto]:
    return {a.name: a for a in node.attribute}


def _tensor_id(node: onnx.NodeProto, attributes: Mapping[str, onnx.AttributeProto]) -> str:
    found = attributes.get(_TENSOR_ID)
    return found.s.decode("utf-8") if found is not None else node.output[0]


def extract(proto: onnx.ModelProto, source: str) -> Embedded:
    """The parameter sets and NDU bytes of an embedded model, without changing it."""
    if _layout_version(proto) == _embed_v1.DOMAIN_VERSION:
        old = _embed_v1.extract(proto, source)
        return Embedded(old.parameter_sets, old.ndus)
    entry = next((p for p in proto.metadata_props if p.key == PARAMETER_SETS_KEY), None)
    if entry is None:
        raise FormatError(f"{source}: declares domain {DOMAIN} but has no {PARAMETER_SETS_KEY} metadata")
    try:
        parameter_sets = base64.b64decode(entry.value, validate=True)
    except ValueError as exc:
        raise FormatError(f"{source}: {PARAMETER_SETS_KEY} is not valid base64") from exc
    ndus: dict[str, bytes] = {}
    for container in _containers(proto):
        for node in container.node:
            if not _is_decode(node):
                continue
            attributes = _attributes(node)
            unit = attributes.get(_UNIT)
            if unit is None or not node.output or unit.type != onnx.AttributeProto.TENSOR:
                raise FormatError(f"{source}: decode node for {list(node.output)} has no coded unit")
            ndus[_tensor_id(node, attributes)] = unit.t.raw_data
    return Embedded(parameter_sets, ndus)


def restore(proto: onnx.ModelProto, arrays: Callable[[str], np.ndarray | None], source: str) -> onnx.ModelProto:
    """The plain model: every decode node undone, each weight filled from `arrays(tensor_id)`.

    `arrays` may return None to leave a weight without payload (for topology bytes).
    """
    if _layout_version(proto) == _embed_v1.DOMAIN_VERSION:
        return _embed_v1.restore(proto, arrays, source)
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for container in reversed(_containers(out)):  # children first: rewriting copies subgraphs
        _restore_container(container, arrays, source)
    kept_opsets = [op for op in out.opset_import if op.domain != DOMAIN]
    del out.opset_import[:]
    out.opset_import.extend(kept_opsets)
    kept_props = [p for p in out.metadata_props if p.key != PARAMETER_SETS_KEY]
    del out.metadata_props[:]
    out.metadata_props.extend(kept_props)
    return out


def _fill(tensor: onnx.TensorProto, array: np.ndarray | None, tensor_id: str, flags: int) -> None:
    """Put the payload back, in the field it came from.

    Without values (the seam decodes them later), a tensor that came from a typed field gets
    zeros there: the field is how the rewrite knows to put the values back where the file had
    them (float_data stays float_data, and the plain file comes back byte for byte).
    """
    field = (flags >> 1) & 0b111
    if array is None and field:
        dtype = tensor_dtype(tensor)
        if dtype is not None:
            array = np.zeros(int(np.prod(tensor.dims, dtype=np.int64)), dtype=dtype.storage_dtype)
    if array is not None:
        set_payload(tensor, array, tensor_id, field=_TYPED_FIELDS[field - 1] if field else "raw_data")


def has_external_data(proto: onnx.ModelProto) -> bool:
    """Whether a coded unit (or an initializer) lives in an external data file."""
    external = onnx.TensorProto.EXTERNAL
    if any(t.data_location == external for t in proto.graph.initializer):
        return True
    for container in _containers(proto):
        for node in container.node:
            unit = _attributes(node).get(_UNIT) if _is_decode(node) else None
            if unit is not None and unit.t.data_location == external:
                return True
    return False


def _restore_container(
    container: onnx.GraphProto | onnx.FunctionProto, arrays: Callable[[str], np.ndarray | None], source: str
) -> None:
    leading: list[tuple[int, onnx.TensorProto, tuple[int, bytes] | None]] = []
    kept = []
    for node in container.node:
        if not _is_decode(node):
            kept.append(node)
            continue
        attributes = _attributes(node)
        try:
            tensor_id = _tensor_id(node, attributes)
            value = attributes[_VALUE]
            tensor = onnx.TensorProto()
            tensor.ParseFromString(value.s)
        except (KeyError, TypeError, UnicodeDecodeError, IndexError, DecodeError) as exc:
            raise FormatError(
                f"{source}: decode node for {list(node.output)} has a missing or corrupt attribute"
            ) from exc
        flags = attributes[_FLAGS].i if _FLAGS in attributes else 0
        array = arrays(tensor_id)
        if _INDEX in attributes:  # an initializer
            tensor.name = node.output[0]
            _fill(tensor, array, tensor_id, flags)
            entry = (attributes[_INPUT_INDEX].i, attributes[_INPUT].s) if _INPUT_INDEX in attributes else None
            leading.append((attributes[_INDEX].i, tensor, entry))
            continue
        if flags & _NAMED_LIKE_OUTPUT:
            tensor.name = node.output[0]
        _fill(tensor, array, tensor_id, flags)
        value.ClearField("s")
        value.t.CopyFrom(tensor)
        value.type = onnx.AttributeProto.TENSOR
        domain = attributes[_DOMAIN].s.decode("utf-8") if _DOMAIN in attributes else ""
        extras = {_UNIT, _TENSOR_ID, _FLAGS, _DOMAIN}
        remaining = [a for a in node.attribute if a.name not in extras]
        del node.attribute[:]
        node.attribute.extend(remaining)
        node.op_type, node.domain = "Constant", domain
        if not domain and not flags & _EMPTY_DOMAIN_SET:
            node.ClearField("domain")
        kept.append(node)
    if not leading:
        return
    assert isinstance(container, onnx.GraphProto)  # only graphs hold initializers
    _replace(container.node, kept)
    initializers = list(container.initializer)
    graph_inputs = list(container.input)
    for index, tensor, _ in sorted(leading, key=lambda item: item[0]):
        initializers.insert(index, tensor)
    entries = sorted((entry for _, _, entry in leading if entry is not None), key=lambda item: item[0])
    for index, serialized in entries:
        value_info = onnx.ValueInfoProto()
        value_info.ParseFromString(serialized)
        graph_inputs.insert(index, value_info)
    _replace(container.initializer, initializers)
    _replace(container.input, graph_inputs)
