# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Reading and writing ONNX files, and the topology bytes carried in an NNR TPL unit."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from nnrconv.core import (
    BitstreamError,
    CodedUnit,
    DType,
    EmbeddedModel,
    FormatError,
    Model,
    Tensor,
    TopologyTensor,
    UnsupportedError,
)
from nnrconv_onnx import _digest
from nnrconv_onnx._model import model_from_proto
from nnrconv_onnx._weights import (
    WeightSite,
    clear_payload,
    element_count,
    has_payload,
    is_external,
    payload_field,
    set_payload,
    tensor_dtype,
    weight_sites,
)

__all__ = ["from_topology", "read_model", "topology_bytes", "topology_tensors", "write_model"]

TOPOLOGY_SOURCE = "<NNR topology>"
# Tensors smaller than this stay inline even when a model is written with external data, as
# onnx's own `convert_model_to_external_data` does: side-file entries for tiny tensors only
# cost seeks.
EXTERNAL_MIN_BYTES = 1024
# Offsets of external tensors are aligned for memory mapping (ONNX recommends 4 KiB).
EXTERNAL_ALIGNMENT = 4096


def read_model(path: Path) -> onnx.ModelProto:
    """Parse an .onnx file without touching its external data.

    Raises:
        FormatError: the file cannot be read, does not parse as a ModelProto, or has no graph.
    """
    return _read_model(path)[0]


def _read_model(path: Path) -> tuple[onnx.ModelProto, bytes]:
    """The parsed model and the file's bytes.

    Raises:
        BitstreamError: a file sealed with a container digest (see `_digest`) does not parse.
        FormatError: the file cannot be read, does not parse as a ModelProto, or has no graph.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise FormatError(f"{path}: cannot read: {exc.strerror}") from exc
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        _digest.refuse_if_sealed(data, path, f"protobuf parse failed: {exc}")
        raise FormatError(f"{path}: not a valid ONNX model (protobuf parse failed: {exc})") from exc
    if proto.ir_version <= 0 or not proto.HasField("graph"):
        _digest.refuse_if_sealed(data, path, "no ir_version or no graph in the ModelProto")
        raise FormatError(f"{path}: not an ONNX model (no ir_version or no graph in the ModelProto)")
    return proto, data


def _native(model: Model) -> onnx.ModelProto:
    if model.source_format != "onnx" or not isinstance(model.native, onnx.ModelProto):
        raise UnsupportedError(
            f"only models read from ONNX can be written as ONNX; this one comes from {model.source_format!r}"
        )
    return model.native


def _rebuild(model: Model, strip: Collection[str]) -> onnx.ModelProto:
    """A copy of the native proto: `strip`ped tensors emptied, all others filled from `model.tensors`.

    Raises:
        FormatError: a tensor does not fit its slot, or a slot with no tensor uses external data.
    """
    proto = onnx.ModelProto()
    proto.CopyFrom(_native(model))
    for site in weight_sites(proto):
        if site.key in strip:
            clear_payload(site.proto)
            continue
        tensor = model.tensors.get(site.key)
        if tensor is None:
            if is_external(site.proto):
                raise FormatError(f"tensor {site.key!r} uses external data but the model holds no data for it")
            continue
        try:
            set_payload(site.proto, tensor.numpy(), site.key, field=payload_field(site.proto))
        except ValueError as exc:
            raise FormatError(str(exc)) from exc
    return proto


def _serialize(proto: onnx.ModelProto, what: str) -> bytes:
    try:
        return proto.SerializeToString()
    except ValueError as exc:  # protobuf refuses messages over 2 GiB
        raise FormatError(f"{what} cannot be serialized: {exc}") from exc


def topology_bytes(model: Model, carried: Collection[str]) -> bytes:
    """The ModelProto with carried payloads removed and every other tensor's data inline."""
    carried = set(carried)
    unknown = carried - set(model.tensors)
    if unknown:
        raise FormatError(f"carried tensors {sorted(unknown)!r} are not tensors of this model")
    return _serialize(_rebuild(model, carried), "the ONNX topology")


def _parse_topology(topology: bytes) -> onnx.ModelProto:
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(topology)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise BitstreamError(f"the NNR topology unit does not hold a valid ONNX ModelProto: {exc}") from exc
    if not proto.HasField("graph"):
        raise BitstreamError("the NNR topology unit holds an ONNX ModelProto without a graph")
    return proto


def topology_tensors(topology: bytes) -> list[TopologyTensor]:
    """The stripped slots `from_topology` fills from data units: key, type, dims, decoded size."""
    result = []
    for site in weight_sites(_parse_topology(topology)):
        dtype = tensor_dtype(site.proto)
        count = element_count(site.proto)
        if has_payload(site.proto) or dtype is None or count == 0:
            continue
        dims = tuple(int(d) for d in site.proto.dims)
        result.append(TopologyTensor(site.key, dtype, dims, dtype.storage_nbytes(count)))
    return result


def from_topology(topology: bytes, tensors: Mapping[str, Tensor]) -> Model:
    """Rebuild the model: parse, walk as `weight_sites` does, fill each stripped slot.

    Raises:
        BitstreamError: the topology does not parse, a stripped tensor has no decoded data, a
            decoded tensor matches no slot, or values do not fit their slot exactly.
    """
    proto = _parse_topology(topology)
    used: set[str] = set()
    for site in weight_sites(proto):
        if has_payload(site.proto) or tensor_dtype(site.proto) is None:
            continue
        tensor = tensors.get(site.key)
        if tensor is None:
            if element_count(site.proto) == 0:
                continue
            raise BitstreamError("the topology's tensor has no payload and no NNR data unit", tensor=site.key)
        used.add(site.key)
        try:
            set_payload(site.proto, tensor.numpy(), site.key)
        except ValueError as exc:
            raise BitstreamError(str(exc), tensor=site.key) from exc
    extra = sorted(set(tensors) - used)
    if extra:
        raise BitstreamError(
            f"{len(extra)} decoded tensor(s) match no stripped tensor of the ONNX topology: {extra[:5]!r}"
        )
    return model_from_proto(proto, base_dir=None, source=TOPOLOGY_SOURCE)


def write_model(model: Model, path: Path, *, threshold: int) -> None:
    """Write `model` to `path`; past `threshold` bytes, big tensors go to ``<file name>.data``.

    Only `path` and its sibling data file are written, as the core's staging requires.

    Raises:
        UnsupportedError: the model did not come from ONNX.
        FormatError: a tensor does not fit its slot, or the file cannot be written.
    """
    fields = {site.key: payload_field(site.proto) for site in weight_sites(_native(model))}
    proto = _rebuild(model, strip=set(model.tensors))
    total = proto.ByteSize() + sum(t.nbytes for t in model.tensors.values())
    sites = [s for s in weight_sites(proto) if s.key in model.tensors]
    try:
        if total <= threshold:
            for site in sites:  # in the field the file had it (float_data stays float_data)
                set_payload(site.proto, model.tensors[site.key].numpy(), site.key, field=fields[site.key])
        else:
            _write_external(sites, model.tensors, path.with_name(path.name + ".data"))
        data = _serialize(proto, f"{path}: the ONNX model")
        with open(path, "wb") as f:
            f.write(data)
    except ValueError as exc:
        raise FormatError(f"{path}: {exc}") from exc
    except OSError as exc:
        raise FormatError(f"{path}: cannot write: {exc.strerror}") from exc


def _write_external(sites: list[WeightSite], tensors: Mapping[str, Tensor], data_path: Path) -> None:
    """Append each big tensor to `data_path` (aligned) and point its proto there; small ones stay inline."""
    with open(data_path, "wb") as f:
        for site in sites:
            tensor = tensors[site.key]
            dtype = tensor_dtype(site.proto)
            if dtype is DType.STRING or tensor.nbytes < EXTERNAL_MIN_BYTES:
                set_payload(site.proto, tensor.numpy(), site.key)
                continue
            # Reuse the exact-cast and size checks, then move the bytes out of the proto.
            set_payload(site.proto, tensor.numpy(), site.key)
            raw = site.proto.raw_data
            offset = f.tell() + -f.tell() % EXTERNAL_ALIGNMENT
            f.write(bytes(offset - f.tell()))
            f.write(raw)
            clear_payload(site.proto)
            site.proto.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", data_path.name), ("offset", str(offset)), ("length", str(len(raw)))):
                entry = site.proto.external_data.add()
                entry.key, entry.value = key, value
        f.flush()
        os.fsync(f.fileno())


def write_embedded(
    model: Model, path: Path, parameter_sets: bytes, ndus: Mapping[str, bytes], *, threshold: int
) -> None:
    """Write `model` as ONNX with the tensors in `ndus` NNR-coded inside (see `_embed`).

    Past `threshold` bytes, the coded tensors go to ``<file name>.data`` as external data.
    """
    from onnx.external_data_helper import convert_model_to_external_data

    from nnrconv_onnx._embed import embed

    fields = {site.key: payload_field(site.proto) for site in weight_sites(_native(model)) if site.key in ndus}
    proto = embed(_rebuild(model, strip=set(ndus)), parameter_sets, ndus, fields)
    try:
        if proto.ByteSize() > threshold:
            convert_model_to_external_data(  # the units are attribute tensors of the decode nodes
                proto,
                all_tensors_to_one_file=True,
                location=f"{path.name}.data",
                size_threshold=EXTERNAL_MIN_BYTES,
                convert_attribute=True,
            )
            onnx.save_model(proto, str(path))
        else:
            path.write_bytes(_serialize(proto, f"{path}: the ONNX model"))
        _digest.seal(path)
    except OSError as exc:
        raise FormatError(f"{path}: cannot write: {exc.strerror}") from exc


def extract_embedded(path: Path) -> EmbeddedModel:
    """The model at `path`, its NNR-coded weights (a `.nnr.onnx`) left coded for the seam.

    A plain ONNX file comes back with no units. The coded weights' slots hold no payload in the
    model's proto; `_rebuild` fills them from `Model.tensors` when the model is written or run.

    Raises:
        FormatError: unreadable file or external data, or a damaged decode node.
        BitstreamError: a unit names a weight the model does not have.
    """
    from onnx.external_data_helper import load_external_data_for_model

    from nnrconv_onnx._embed import extract, has_external_data, is_embedded, restore

    proto, data = _read_model(path)
    verified = _digest.check(data, proto, path)
    del data
    _digest.strip(proto)
    if not is_embedded(proto):
        return EmbeddedModel(model_from_proto(proto, base_dir=path.parent, source=str(path)))
    if has_external_data(proto):
        try:
            load_external_data_for_model(proto, str(path.parent))
        except (OSError, ValueError) as exc:
            raise FormatError(f"{path}: cannot read the external data of its coded tensors: {exc}") from exc
    embedded = extract(proto, str(path))
    try:
        plain = restore(proto, lambda _: None, str(path))
    except ValueError as exc:
        raise BitstreamError(f"{path}: {exc}") from exc
    model = model_from_proto(plain, base_dir=path.parent, source=str(path))
    model.metadata[_digest.KEY] = "verified" if verified else "unverified (no container digest)"
    units: dict[str, CodedUnit] = {}
    for key, ndu in embedded.ndus.items():
        tensor = model.tensors.get(key)
        if tensor is None:
            raise BitstreamError(f"{path}: the coded tensor has no place in the model", tensor=key)
        units[key] = CodedUnit(bytes(ndu), tensor.dtype, tensor.shape, tensor.role)
    return EmbeddedModel(model, embedded.parameter_sets, units)
