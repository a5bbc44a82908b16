# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Integration mode 1: an NNEF model as NNR topology bytes plus one NDU per float32 variable."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np

from nnrconv.core import ArrayTensor, BitstreamError, DType, FormatError, Model, Tensor, TensorRole, TopologyTensor
from nnrconv_nnef._dat import HEADER_SIZE, DatError, DatHeader, decode_payload
from nnrconv_nnef._graph import GraphError, VariableDecl, parse_graph
from nnrconv_nnef._io import DatRecord, NnefDocument, dat_bytes, header_for, model_from_document, native
from nnrconv_nnef._topology import NnefTopology, pack_topology, unpack_topology

__all__ = ["decoded_tensor", "from_topology", "topology_bytes", "topology_tensors"]


def topology_bytes(model: Model, carried: Collection[str]) -> bytes:
    """Graph text, plus graph.quant, non-default headers and the `.dat` files of tensors not carried.

    Raises:
        UnsupportedError: the model did not come from NNEF.
        FormatError: a carried name is not a variable, or a tensor does not fit.
    """
    document = native(model)
    carried = set(carried)
    unknown = sorted(carried - set(model.tensors))
    if unknown:
        raise FormatError(f"carried tensors {unknown[:5]!r} are not variables of this NNEF model")
    topology = NnefTopology(document.graph_text, document.quant_text)
    for label, record in document.records.items():
        if label not in carried:
            topology.files[label] = dat_bytes(record, model.tensors)
            continue
        # A float32 variable with the default header needs nothing but its NDU; any other
        # carried variable (the coder may carry integers and float16) names its type in a header.
        header = header_for(record, model.tensors[label])
        if header != DatHeader.for_tensor(DType.FLOAT, record.decl.shape):
            topology.headers[label] = header.pack()
    try:
        return pack_topology(topology)
    except ValueError as exc:
        raise FormatError(str(exc)) from None


def topology_tensors(data: bytes) -> list[TopologyTensor]:
    """The variables whose data an NDU carries: label, type (its header's, float32 by default), shape.

    Raises:
        BitstreamError: the topology or its graph is malformed, or a carried header is unreadable.
    """
    topology = unpack_topology(data)
    try:
        parsed = parse_graph(topology.graph_text, topology.quant_text)
    except GraphError as exc:
        raise BitstreamError(f"the NNR topology unit holds no valid NNEF graph: {exc}") from None
    result = []
    for label, decl in parsed.variables.items():
        if label in topology.files:
            continue
        head = topology.headers.get(label)
        try:
            dtype = DType.FLOAT if head is None else DatHeader.unpack(head).dtype
        except DatError as exc:
            raise BitstreamError(f"NNEF topology: {exc}", tensor=label) from None
        if dtype is None:
            raise BitstreamError("NNEF topology: the carried header has no interpretable type", tensor=label)
        count = int(np.prod(decl.shape, dtype=object))
        result.append(TopologyTensor(label, dtype, tuple(decl.shape), dtype.storage_nbytes(count)))
    return result


def from_topology(data: bytes, tensors: Mapping[str, Tensor]) -> Model:
    """Rebuild the model from `topology_bytes` output and the decoded NDU tensors (by label).

    Raises:
        BitstreamError: the topology is malformed or its graph does not parse, a variable has
            neither an NDU nor data in the topology, a decoded tensor matches no variable, or
            sizes and headers disagree.
    """
    topology = unpack_topology(data)
    try:
        parsed = parse_graph(topology.graph_text, topology.quant_text)
    except GraphError as exc:
        raise BitstreamError(f"the NNR topology unit holds no valid NNEF graph: {exc}") from None
    stray = sorted((set(topology.headers) | set(topology.files)) - set(parsed.variables))
    if stray:
        raise BitstreamError(f"NNEF topology: records for labels the graph does not declare: {stray[:5]!r}")
    document = NnefDocument(topology.graph_text, topology.quant_text, parsed)
    result: dict[str, Tensor] = {}
    for label, decl in parsed.variables.items():
        role = parsed.roles.get(label, TensorRole.OTHER)
        try:
            if label in topology.files:
                record, tensor = _from_file(decl, topology.files[label], role)
            elif label in tensors:
                record, tensor = _from_ndu(decl, topology.headers.get(label), tensors[label], role)
            else:
                raise BitstreamError("the variable has neither an NNR data unit nor data in the topology")
        except DatError as exc:
            raise BitstreamError(f"NNEF topology: {exc}", tensor=label) from None
        except BitstreamError as exc:
            raise exc.located(tensor=label) from None
        document.records[label] = record
        if tensor is not None:
            result[label] = tensor
    extra = sorted(set(tensors) - set(parsed.variables))
    if extra:
        raise BitstreamError(f"{len(extra)} decoded tensor(s) match no variable of the NNEF graph: {extra[:5]!r}")
    return model_from_document(document, result)


def _from_file(decl: VariableDecl, content: bytes, role: TensorRole) -> tuple[DatRecord, Tensor | None]:
    header = DatHeader.unpack(content)
    header.check(len(content))
    if header.shape != decl.shape:
        raise DatError(f"the carried file's shape {list(header.shape)} differs from the declared {list(decl.shape)}")
    payload = content[HEADER_SIZE:]
    if header.dtype is None:
        return DatRecord(decl, header, opaque=lambda: payload), None
    array = decode_payload(header, payload)
    return DatRecord(decl, header), ArrayTensor(decl.label, array, dtype=header.dtype, role=role)


def _from_ndu(decl: VariableDecl, head: bytes | None, tensor: Tensor, role: TensorRole) -> tuple[DatRecord, Tensor]:
    """A carried variable: the header from the topology (float32 by default), the data from its NDU.

    The decoded values are cast to the header's element type: after lossless coding that cast is
    exact; after lossy coding of float16/float64 it rounds, as the coding already did.
    """
    if head is None:
        header = DatHeader.for_tensor(DType.FLOAT, decl.shape)
    elif len(head) != HEADER_SIZE:
        raise DatError(f"the carried header is {len(head)} bytes, not {HEADER_SIZE}")
    else:
        header = DatHeader.unpack(head)
    return DatRecord(decl, header), decoded_tensor(decl, header, tensor, role)


def decoded_tensor(decl: VariableDecl, header: DatHeader, tensor: Tensor, role: TensorRole) -> ArrayTensor:
    """The decoded NDU data of a variable as a tensor of its header's type and declared shape.

    Raises:
        DatError: the header is not interpretable or does not describe the declared shape.
        BitstreamError: the decoded data does not fit the shape or the type.
    """
    dtype = header.dtype
    if dtype is None or header.shape != decl.shape:
        raise DatError("the carried header does not describe an interpretable tensor of the declared shape")
    header.check()
    array = np.asarray(tensor.numpy())
    if array.size != int(np.prod(decl.shape, dtype=np.int64)):
        raise BitstreamError(f"decoded data of {array.size} elements does not fit shape {list(decl.shape)}")
    target = dtype.storage_dtype
    if array.dtype != target:
        if dtype.is_integer and array.dtype.kind in "iu":
            cast = array.astype(target)
            if not np.array_equal(cast, array):
                raise BitstreamError(f"decoded integers do not fit the variable's {dtype.name}")
            array = cast
        elif dtype.is_floating_point and array.dtype.kind == "f":
            array = array.astype(target)
        else:
            raise BitstreamError(f"decoded {array.dtype} data cannot stand for the variable's {dtype.name}")
    return ArrayTensor(decl.label, array.reshape(decl.shape), dtype=dtype, role=role)
