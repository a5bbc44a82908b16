# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Reading `.nnr.onnx` files of the first layout (domain `org.mpeg.nnr` version 1).

Files written before the layout of `_embed` (version 2) still load; nothing writes this layout
any more (`embed` is kept for the tests that build such files).

Layout of a version-1 `.nnr.onnx` file (a valid ONNX model):
- Each coded weight `W` becomes a UINT8 tensor `W.nnr` whose bytes are one complete NNR_NDU
  unit, consumed by a node `NnrDecode(W.nnr) -> W` of domain `org.mpeg.nnr` (declared in
  `opset_import`, version 1). A graph initializer's UINT8 tensor is an initializer of the same
  graph and its decode node comes first in the graph; a `Constant` keeps its place, now holding
  the UINT8 tensor, and its decode node follows it.
- The decode node's attributes: `template` (the original TensorProto without payload,
  serialized: name, type, dims, doc string); `tensor_id` (the NDU's topology element id) when it
  differs from the node's output name; for initializers `initializer_index` (its position), and
  when the initializer was also a graph input, `input_index` and `input_template` (that entry,
  serialized), so that the plain model comes back exactly.
- The NNR start unit and model parameter set that the data units need travel base64-encoded in
  `metadata_props` under `org.mpeg.nnr.parameter_sets`.
Everything else in the graph is untouched.
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
from nnrconv_onnx._weights import CONSTANT, INITIALIZER, WeightSite, clear_payload, set_payload, weight_sites

__all__ = ["DOMAIN_VERSION", "embed", "extract", "restore"]

DOMAIN = "org.mpeg.nnr"
OP_TYPE = "NnrDecode"
DOMAIN_VERSION = 1
PARAMETER_SETS_KEY = "org.mpeg.nnr.parameter_sets"
_CODED_SUFFIX = ".nnr"


def is_embedded(proto: onnx.ModelProto) -> bool:
    """Whether the model declares the NNR decode domain (it holds NNR-coded weights)."""
    return any(op.domain == DOMAIN for op in proto.opset_import)


def _positions(container: onnx.GraphProto, name: str) -> tuple[int, int]:
    init = next((i for i, t in enumerate(container.initializer) if t.name == name), -1)
    inp = next((i for i, v in enumerate(container.input) if v.name == name), -1)
    return init, inp


def _template(tensor: onnx.TensorProto) -> bytes:
    stripped = onnx.TensorProto()
    stripped.CopyFrom(tensor)
    clear_payload(stripped)
    return stripped.SerializeToString()


def _coded_tensor(name: str, ndu: bytes) -> onnx.TensorProto:
    tensor = onnx.TensorProto(name=name, data_type=onnx.TensorProto.UINT8, dims=[len(ndu)])
    tensor.raw_data = ndu
    return tensor


def _all_names(proto: onnx.ModelProto) -> set[str]:
    names: set[str] = set()
    for site in weight_sites(proto):
        names.add(site.name)
    for graph in _graphs(proto.graph):
        names.update(v.name for v in graph.input)
        names.update(v.name for v in graph.output)
        for node in graph.node:
            names.update(node.input)
            names.update(node.output)
    return names


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    yield from _graphs(sub)


def embed(proto: onnx.ModelProto, parameter_sets: bytes, ndus: Mapping[str, bytes]) -> onnx.ModelProto:
    """A copy of `proto` whose weights named in `ndus` are replaced by their coded data units.

    Args:
        proto: the plain model (payloads of the coded weights are dropped).
        parameter_sets: the bytes of the NNR start unit and model parameter set.
        ndus: topology element id (as `weight_sites` keys it) -> complete NNR_NDU unit bytes.
    """
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    used = _all_names(out)
    by_container: dict[int, tuple[onnx.GraphProto | onnx.FunctionProto, list[tuple[WeightSite, str]]]] = {}
    for site in weight_sites(out):
        if site.key in ndus:
            coded = _fresh(f"{site.name}{_CODED_SUFFIX}", used)
            by_container.setdefault(id(site.container), (site.container, []))[1].append((site, coded))
    # Children before parents: rewriting a graph copies its nodes, subgraphs included, which
    # would detach the subgraph messages that later rewrites hold. The walk is pre-order.
    for container, plans in reversed(by_container.values()):
        _embed_container(container, plans, ndus)
    out.opset_import.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    entry = out.metadata_props.add()
    entry.key, entry.value = PARAMETER_SETS_KEY, base64.b64encode(parameter_sets).decode("ascii")
    return out


def _embed_container(
    container: onnx.GraphProto | onnx.FunctionProto,
    plans: list[tuple[WeightSite, str]],
    ndus: Mapping[str, bytes],
) -> None:
    """Rewrite one graph (or function): decode nodes of initializers first, Constants in place."""
    init_names: set[str] = set()
    leading: list[onnx.NodeProto] = []
    after_constant: dict[str, onnx.NodeProto] = {}
    coded_inits: list[onnx.TensorProto] = []
    for site, coded in plans:
        # Only what an exact restore needs: the id when it differs from the output name, and
        # the graph-input entry only for initializers that are also listed as graph inputs.
        attributes: dict[str, object] = {"template": _template(site.proto)}
        if site.key != site.name:
            attributes["tensor_id"] = site.key
        if site.kind == INITIALIZER:
            graph = site.container
            assert isinstance(graph, onnx.GraphProto)  # functions have no initializers
            init_index, input_index = _positions(graph, site.name)
            attributes["initializer_index"] = init_index
            if input_index >= 0:
                attributes["input_index"] = input_index
                attributes["input_template"] = graph.input[input_index].SerializeToString()
        node = helper.make_node(OP_TYPE, [coded], [site.name], domain=DOMAIN)
        node.attribute.extend(helper.make_attribute(k, v) for k, v in attributes.items())
        if site.kind == CONSTANT:
            assert site.node is not None  # a Constant site always has its node
            site.proto.CopyFrom(_coded_tensor(coded, ndus[site.key]))
            site.node.output[0] = coded
            after_constant[coded] = node
        else:
            init_names.add(site.name)
            coded_inits.append(_coded_tensor(coded, ndus[site.key]))
            leading.append(node)
    nodes = list(leading)
    for original in container.node:
        nodes.append(original)
        follower = after_constant.get(original.output[0]) if original.output else None
        if follower is not None and original.op_type == "Constant":
            nodes.append(follower)
    _replace(container.node, nodes)
    if isinstance(container, onnx.GraphProto) and init_names:
        _replace(container.initializer, [t for t in container.initializer if t.name not in init_names] + coded_inits)
        _replace(container.input, [v for v in container.input if v.name not in init_names])


def _fresh(name: str, used: set[str]) -> str:
    candidate, number = name, 0
    while candidate in used:
        number += 1
        candidate = f"{name}{number}"
    used.add(candidate)
    return candidate


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


def extract(proto: onnx.ModelProto, source: str) -> Embedded:
    """The parameter sets and NDU bytes of an embedded model, without changing it."""
    entry = next((p for p in proto.metadata_props if p.key == PARAMETER_SETS_KEY), None)
    if entry is None:
        raise FormatError(f"{source}: declares domain {DOMAIN} but has no {PARAMETER_SETS_KEY} metadata")
    try:
        parameter_sets = base64.b64decode(entry.value, validate=True)
    except ValueError as exc:
        raise FormatError(f"{source}: {PARAMETER_SETS_KEY} is not valid base64") from exc
    ndus: dict[str, bytes] = {}
    for container, node in _decode_nodes(proto):
        coded = _coded_input(container, node)
        if coded is None or not node.output:
            raise FormatError(f"{source}: decode node for {list(node.output)} has no coded input")
        ndus[_tensor_id(node)] = coded.raw_data
    return Embedded(parameter_sets, ndus)


def _tensor_id(node: onnx.NodeProto) -> str:
    """The NDU's topology element id: the `tensor_id` attribute, else the node's output name."""
    for attribute in node.attribute:
        if attribute.name == "tensor_id":
            return attribute.s.decode("utf-8")
    return node.output[0]


def _decode_nodes(proto: onnx.ModelProto) -> Iterator[tuple[onnx.GraphProto | onnx.FunctionProto, onnx.NodeProto]]:
    containers: list[onnx.GraphProto | onnx.FunctionProto] = [*_graphs(proto.graph), *proto.functions]
    for container in containers:
        for node in container.node:
            if _is_decode(node):
                yield container, node


def _coded_input(container: onnx.GraphProto | onnx.FunctionProto, node: onnx.NodeProto) -> onnx.TensorProto | None:
    name = node.input[0] if node.input else ""
    if isinstance(container, onnx.GraphProto):
        for tensor in container.initializer:
            if tensor.name == name:
                return tensor
    for other in container.node:
        if other.op_type == "Constant" and other.output and other.output[0] == name:
            for attribute in other.attribute:
                if attribute.name == "value":
                    return attribute.t
    return None


def restore(proto: onnx.ModelProto, arrays: Callable[[str], np.ndarray | None], source: str) -> onnx.ModelProto:
    """The plain model: every decode node undone, each weight filled from `arrays(tensor_id)`.

    `arrays` may return None to leave a weight without payload (for topology bytes).
    """
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    containers: list[onnx.GraphProto | onnx.FunctionProto] = [*_graphs(out.graph), *out.functions]
    for container in reversed(containers):  # children first, as in `embed`
        _restore_container(container, arrays, source)
    kept_opsets = [op for op in out.opset_import if op.domain != DOMAIN]
    del out.opset_import[:]
    out.opset_import.extend(kept_opsets)
    kept_props = [p for p in out.metadata_props if p.key != PARAMETER_SETS_KEY]
    del out.metadata_props[:]
    out.metadata_props.extend(kept_props)
    return out


def _restore_container(
    container: onnx.GraphProto | onnx.FunctionProto, arrays: Callable[[str], np.ndarray | None], source: str
) -> None:
    decodes = [n for n in container.node if _is_decode(n)]
    if not decodes:
        return
    coded_names: set[str] = set()
    initializers: list[tuple[int, onnx.TensorProto]] = []
    inputs: list[tuple[int, onnx.ValueInfoProto]] = []
    for node in decodes:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        try:
            tensor_id = _tensor_id(node)
            tensor = onnx.TensorProto()
            tensor.ParseFromString(attrs["template"])
        except (KeyError, DecodeError, UnicodeDecodeError) as exc:
            raise FormatError(
                f"{source}: decode node for {list(node.output)} has a missing or corrupt attribute"
            ) from exc
        array = arrays(tensor_id)
        if array is not None:
            set_payload(tensor, array, tensor_id)
        coded_name = node.input[0]
        if "initializer_index" in attrs:
            coded_names.add(coded_name)
            initializers.append((attrs["initializer_index"], tensor))
            if "input_index" in attrs:
                value = onnx.ValueInfoProto()
                value.ParseFromString(attrs["input_template"])
                inputs.append((attrs["input_index"], value))
            continue
        constant = next(
            (n for n in container.node if n.op_type == "Constant" and n.output and n.output[0] == coded_name), None
        )
        if constant is None:
            raise FormatError(
                f"{source}: decode node for {list(node.output)} reads {coded_name!r}, which nothing provides"
            )
        constant.output[0] = node.output[0]
        next(a for a in constant.attribute if a.name == "value").t.CopyFrom(tensor)
    _replace(container.node, [n for n in container.node if not _is_decode(n)])
    if isinstance(container, onnx.GraphProto):
        restored = [t for t in container.initializer if t.name not in coded_names]
        for index, tensor in sorted(initializers, key=lambda pair: pair[0]):
            restored.insert(index, tensor)
        _replace(container.initializer, restored)
        graph_inputs = list(container.input)
        for index, value in sorted(inputs, key=lambda pair: pair[0]):
            graph_inputs.insert(index, value)
        _replace(container.input, graph_inputs)
