# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""ModelProto → `Model`: lazy weight tensors, roles, the neutral graph and metadata."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx

from nnrconv.core import DType, FormatError, LazyTensor, MappedTensor, Model, Tensor, TensorRole
from nnrconv_onnx._graph import graph_from_proto, normalize_domain
from nnrconv_onnx._weights import (
    WeightSite,
    element_count,
    is_external,
    payload_array,
    tensor_dtype,
    weight_roles,
    weight_sites,
)

__all__ = ["external_span", "model_from_proto", "tensor_from_proto"]


def external_span(proto: onnx.TensorProto, base_dir: Path | None, key: str, source: str) -> tuple[Path, int, int]:
    """(file, offset, length) of an external tensor, checked against the model's folder.

    Raises:
        FormatError: no base folder (a model read from bytes), no or an escaping `location`,
            a non-integer offset or length, or a span past the end of the file.
    """
    entries = {e.key: e.value for e in proto.external_data}
    location = entries.get("location", "")
    if base_dir is None:
        raise FormatError(f"{source}: tensor {key!r} refers to external data {location!r}, which cannot be read here")
    if not location:
        raise FormatError(f"{source}: tensor {key!r} is marked external but names no location")
    root = base_dir.resolve()
    file = (root / location).resolve()
    if Path(location).is_absolute() or not file.is_relative_to(root):
        raise FormatError(
            f"{source}: tensor {key!r}: external data location {location!r} is outside the model's "
            f"folder {root}; ONNX requires a path relative to the model"
        )
    dtype = tensor_dtype(proto)
    nbytes = dtype.storage_nbytes(element_count(proto)) if dtype is not None else 0
    try:
        offset = int(entries.get("offset", "0"))
        length = int(entries.get("length", str(nbytes)))
    except ValueError as exc:
        raise FormatError(f"{source}: tensor {key!r}: bad external data offset/length: {exc}") from exc
    try:
        size = os.stat(file).st_size
    except OSError as exc:
        raise FormatError(f"{source}: tensor {key!r}: cannot read external data {location!r}: {exc.strerror}") from exc
    if offset < 0 or length != nbytes or offset + length > size:
        raise FormatError(
            f"{source}: tensor {key!r}: external data {location!r} bytes {offset}..{offset + length} "
            f"do not hold {list(proto.dims)} of {dtype.name if dtype else '?'} ({nbytes} bytes) in a "
            f"file of {size} bytes"
        )
    return file, offset, length


def tensor_from_proto(
    proto: onnx.TensorProto,
    key: str,
    *,
    base_dir: Path | None,
    source: str,
    role: TensorRole = TensorRole.OTHER,
) -> Tensor | None:
    """A lazy Tensor over a TensorProto, or None when its element type is unknown to nnrconv.

    External data becomes a MappedTensor; in-proto data is decoded from the proto on each
    access, so loading costs no copy of the weights.

    Raises:
        FormatError: negative dims, or external data that cannot be located (see
            `external_span`). A payload whose length contradicts the dims is reported when
            the data is read.
    """
    dtype = tensor_dtype(proto)
    if dtype is None:
        return None
    dims = tuple(proto.dims)
    if any(d < 0 for d in dims):
        raise FormatError(f"{source}: tensor {key!r} has negative dims {list(dims)}")
    if is_external(proto):
        if dtype is DType.STRING:
            raise FormatError(f"{source}: tensor {key!r}: STRING tensors cannot use external data")
        file, offset, length = external_span(proto, base_dir, key, source)
        return MappedTensor(key, dtype, dims, file, offset, length, role=role)

    def read() -> np.ndarray:
        try:
            return payload_array(proto, dtype, key)
        except ValueError as exc:
            raise FormatError(f"{source}: {exc}") from exc

    return LazyTensor(key, dtype, dims, read, role=role)


def _metadata(proto: onnx.ModelProto) -> dict[str, str]:
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    fields = {
        "producer": proto.producer_name,
        "producer_version": proto.producer_version,
        "domain": proto.domain,
        "doc_string": proto.doc_string,
    }
    for name, value in fields.items():
        if value:
            metadata.setdefault(name, value)
    metadata.setdefault("ir_version", str(proto.ir_version))
    if proto.model_version:
        metadata.setdefault("model_version", str(proto.model_version))
    return metadata


def model_from_proto(proto: onnx.ModelProto, *, base_dir: Path | None, source: str) -> Model:
    """The `Model` of a ModelProto; the proto becomes `Model.native` and is not copied.

    Args:
        proto: the parsed model (external data not loaded).
        base_dir: the folder external data locations are relative to (None: refuse them).
        source: how to name the model in messages (a path, or "<NNR topology>").
    """
    roles = weight_roles(proto)
    tensors: dict[str, Tensor] = {}
    by_site: dict[tuple[str, str, str], Tensor] = {}
    site: WeightSite
    for site in weight_sites(proto):
        role = roles.get(site.name, TensorRole.OTHER)
        tensor = tensor_from_proto(site.proto, site.key, base_dir=base_dir, source=source, role=role)
        if tensor is None:
            continue
        tensors[site.key] = tensor
        by_site.setdefault((site.scope, site.kind, site.name), tensor)

    def other_tensor(t: onnx.TensorProto) -> Tensor | None:
        # Tensors in other attributes (ConstantOfShape's value, …) stay in the topology; they
        # are described here but never carried as NNR data units.
        try:
            return tensor_from_proto(t, t.name, base_dir=base_dir, source=source)
        except FormatError:
            return None

    opsets = {normalize_domain(o.domain): o.version for o in proto.opset_import}
    graph = graph_from_proto(proto, opsets, by_site, other_tensor)
    return Model(
        graph=graph,
        tensors=tensors,
        source_format="onnx",
        native=proto,
        metadata=_metadata(proto),
        opsets=opsets,
    )
