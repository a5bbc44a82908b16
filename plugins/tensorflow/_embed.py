# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""NNR inside a frozen GraphDef (integration mode 2, `*.nnr.pb`).

Layout (a valid, parseable GraphDef; see the plugin README):

- every carried `Const` node keeps its name, inputs and other attributes, but its `value` is a
  DT_UINT8 tensor of shape [n] whose `tensor_content` is the complete NNR_NDU unit (size field
  included), its `dtype` attribute is DT_UINT8, and two attributes record what it was:
  `_nnr_dtype` (type: the original DataType) and `_nnr_shape` (shape: the original shape);
- one extra `Const` node `nnr/parameter_sets` (DT_UINT8 [n], attribute `_nnr_parameter_sets`
  = true) in the main graph holds the NNR start unit and model parameter set the units need.

Attributes whose names start with `_` are internal attributes, which TensorFlow's GraphDef
validation allows on any op. Restoring puts the original dtype back, fills the value with the
decoded tensor (as `tensor_content`) and removes the extra attributes and node.

NNR inside a SavedModel folder (`*.nnr_savedmodel`): the folder's files as they were, the
`variables/` checkpoint with each carried entry stored under its key as a uint8 vector holding
its NDU (other entries as they were), plus `nnr/parameter_sets` (the parameter set bytes) and
`nnr/coded.json`, `{"version": 1, "tensors": {key: {"dtype": <TF DataType code>, "shape": [...]}}}`
recording each coded entry's original type and shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from tensorflow.core.framework import graph_pb2, tensor_pb2, types_pb2

from nnrconv.core import BitstreamError, CodedTensor, FormatError, Model
from nnrconv_tensorflow import _graphdef
from nnrconv_tensorflow._model import TFNative
from nnrconv_tensorflow._tensors import TF_TO_DTYPE, array_to_proto, coerce, shape_proto

__all__ = [
    "MANIFEST_FILE",
    "PARAMETER_SETS_FILE",
    "PARAMETER_SETS_NODE",
    "embed",
    "is_embedded",
    "is_embedded_folder",
    "load_embedded",
    "load_embedded_folder",
    "write_embedded",
    "write_embedded_folder",
]

PARAMETER_SETS_NODE = "nnr/parameter_sets"
PARAMETER_SETS_ATTR = "_nnr_parameter_sets"
DTYPE_ATTR = "_nnr_dtype"
SHAPE_ATTR = "_nnr_shape"


def _bytes_proto(data: bytes) -> tensor_pb2.TensorProto:
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_UINT8, tensor_shape=shape_proto((len(data),)), tensor_content=data)


def _nodes(graph_def: graph_pb2.GraphDef) -> dict[str, object]:
    """Const sites' key -> NodeDef (main graph and function library), keyed as `const_sites` keys them."""
    found = {}
    scopes = [("", graph_def.node)] + [(f.signature.name, f.node_def) for f in graph_def.library.function]
    by_scope = {scope: {n.name: n for n in nodes} for scope, nodes in scopes}
    for key, scope, name, _ in _graphdef.const_sites(graph_def):
        found[key] = by_scope[scope][name]
    return found


def embed(graph_def: graph_pb2.GraphDef, parameter_sets: bytes, ndus: Mapping[str, bytes]) -> None:
    """Replace the values of the constants named in `ndus` by their units; add the parameter sets node.

    Raises:
        FormatError: a unit names no constant, or the graph already has a `nnr/parameter_sets` node.
    """
    if any(n.name == PARAMETER_SETS_NODE for n in graph_def.node):
        raise FormatError(f"the graph already has a node named {PARAMETER_SETS_NODE!r}; it cannot hold NNR units")
    nodes = _nodes(graph_def)
    unknown = sorted(set(ndus) - set(nodes))
    if unknown:
        raise FormatError(f"coded tensors {unknown[:5]!r} are not constants of the graph")
    for key, ndu in ndus.items():
        node = nodes[key]
        value = node.attr["value"].tensor  # type: ignore[attr-defined]
        node.attr[DTYPE_ATTR].type = value.dtype  # type: ignore[attr-defined]
        node.attr[SHAPE_ATTR].shape.CopyFrom(value.tensor_shape)  # type: ignore[attr-defined]
        node.attr["value"].tensor.CopyFrom(_bytes_proto(bytes(ndu)))  # type: ignore[attr-defined]
        node.attr["dtype"].type = types_pb2.DT_UINT8  # type: ignore[attr-defined]
    node = graph_def.node.add(name=PARAMETER_SETS_NODE, op="Const")
    node.attr["dtype"].type = types_pb2.DT_UINT8
    node.attr["value"].tensor.CopyFrom(_bytes_proto(bytes(parameter_sets)))
    node.attr[PARAMETER_SETS_ATTR].b = True


def is_embedded(graph_def: graph_pb2.GraphDef) -> bool:
    """Whether the GraphDef carries NNR units (has the `nnr/parameter_sets` node)."""
    return any(n.name == PARAMETER_SETS_NODE and PARAMETER_SETS_ATTR in n.attr for n in graph_def.node)


def write_embedded(model: Model, path: Path, parameter_sets: bytes, ndus: Mapping[str, bytes]) -> None:
    """Write the frozen graph with the constants in `ndus` NNR-coded inside.

    Raises:
        FormatError: a tensor does not fit, the GraphDef exceeds 2 GiB, or the file cannot be written.
    """
    graph_def = _graphdef.rebuild(model, strip=set(ndus))
    embed(graph_def, parameter_sets, ndus)
    _graphdef.write_graph_def(graph_def, path)


def _value_bytes(value: tensor_pb2.TensorProto) -> bytes:
    if value.tensor_content or not value.int_val:
        return bytes(value.tensor_content)
    return bytes(int(v) & 0xFF for v in value.int_val)  # a writer that used the typed list


def load_embedded(graph_def: graph_pb2.GraphDef, path: Path) -> Model:
    """The plain model of a `.nnr.pb`: units decoded, each tensor kept as a `CodedTensor`.

    Raises:
        BitstreamError: a corrupt unit or parameter sets (naming the tensor), or a coded
            constant without its original type or shape.
    """
    from nnrconv import nnc

    source = str(path)
    index = next(i for i, n in enumerate(graph_def.node) if n.name == PARAMETER_SETS_NODE)
    parameter_sets = _value_bytes(graph_def.node[index].attr["value"].tensor)
    del graph_def.node[index]
    coded = {key: node for key, node in _nodes(graph_def).items() if DTYPE_ATTR in node.attr}  # type: ignore[attr-defined]
    ndus: dict[str, bytes] = {}
    for key, node in coded.items():
        if SHAPE_ATTR not in node.attr:  # type: ignore[attr-defined]
            raise BitstreamError(f"{source}: the coded constant has no {SHAPE_ATTR} attribute", tensor=key)
        ndus[key] = _value_bytes(node.attr["value"].tensor)  # type: ignore[attr-defined]
    try:
        arrays = nnc.decode_parts(parameter_sets, ndus)
    except BitstreamError as exc:
        exc.args = (f"{source}: {exc}",)
        raise
    for key, node in coded.items():
        attr = node.attr  # type: ignore[attr-defined]
        tf_dtype, shape = attr[DTYPE_ATTR].type, tuple(int(d.size) for d in attr[SHAPE_ATTR].shape.dim)
        array = arrays.get(key)
        if array is None:
            raise BitstreamError(f"{source}: the coded constant did not decode", tensor=key)
        if np.asarray(array).size != int(np.prod(shape, dtype=np.int64)):
            raise BitstreamError(f"{source}: decoded values do not fit shape {list(shape)}", tensor=key)
        try:
            value = array_to_proto(np.asarray(array), tf_dtype, shape)
        except ValueError as exc:
            raise BitstreamError(f"{source}: {exc}", tensor=key) from exc
        attr["value"].tensor.CopyFrom(value)
        attr["dtype"].type = tf_dtype
        del attr[DTYPE_ATTR]
        del attr[SHAPE_ATTR]
    model = _graphdef.model_from_graph_def(graph_def, source)
    native: TFNative = model.native
    for key, ndu in ndus.items():
        tensor = model.tensors[key]
        wrapped = CodedTensor(key, tensor.dtype, tensor.shape, ndu, parameter_sets, tensor.numpy, role=tensor.role)
        model.tensors[key] = wrapped
        native.loaded[key] = wrapped
        if key in model.graph.initializers:
            model.graph.initializers[key] = wrapped
    return model


# -- SavedModel folders ------------------------------------------------------------------------
NNR_FOLDER = "nnr"
PARAMETER_SETS_FILE = f"{NNR_FOLDER}/parameter_sets"
MANIFEST_FILE = f"{NNR_FOLDER}/coded.json"


def is_embedded_folder(folder: Path) -> bool:
    """Whether a SavedModel folder carries NNR units (has `nnr/coded.json`)."""
    return (folder / MANIFEST_FILE).is_file()


def write_embedded_folder(model: Model, folder: Path, parameter_sets: bytes, ndus: Mapping[str, bytes]) -> None:
    """Write the SavedModel folder with the checkpoint entries in `ndus` stored as their units.

    Raises:
        FormatError: a unit names no checkpoint entry, the model already has an `nnr/` folder,
            or the folder cannot be written.
    """
    import json

    from nnrconv_tensorflow import _savedmodel

    native: TFNative = model.native
    if any(name == NNR_FOLDER or name.startswith(NNR_FOLDER + "/") for name in native.files):
        raise FormatError(f"{folder}: the SavedModel already has an {NNR_FOLDER}/ folder; it cannot hold NNR units")
    entries = {e.key: e for e in native.entries}
    unknown = sorted(set(ndus) - set(entries))
    if unknown:
        raise FormatError(f"coded tensors {unknown[:5]!r} are not checkpoint entries of the SavedModel")
    manifest = {
        "version": 1,
        "tensors": {k: {"dtype": entries[k].tf_dtype, "shape": list(entries[k].shape)} for k in sorted(ndus)},
    }
    extra = {
        PARAMETER_SETS_FILE: bytes(parameter_sets),
        MANIFEST_FILE: json.dumps(manifest, separators=(",", ":")).encode(),
    }
    _savedmodel.write(model, folder, coded=ndus, extra=extra)


def load_embedded_folder(folder: Path) -> Model:
    """The plain model of an embedded SavedModel folder: units decoded, kept as `CodedTensor`s.

    Raises:
        BitstreamError: a bad manifest, a coded entry missing from the checkpoint, or a corrupt
            unit (naming the tensor).
    """
    import json

    from nnrconv import nnc
    from nnrconv_tensorflow import _savedmodel

    source = str(folder)
    model = _savedmodel.read(folder)
    native: TFNative = model.native
    try:
        manifest = json.loads(native.files.pop(MANIFEST_FILE))
        parameter_sets = native.files.pop(PARAMETER_SETS_FILE)
        listed = {str(k): (int(v["dtype"]), tuple(int(d) for d in v["shape"])) for k, v in manifest["tensors"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BitstreamError(
            f"{source}: {MANIFEST_FILE} or {PARAMETER_SETS_FILE} is missing or malformed: {exc}"
        ) from exc
    entries = {e.key: e for e in native.entries}
    ndus: dict[str, bytes] = {}
    for key in listed:
        tensor = model.tensors.get(key)
        if key not in entries or tensor is None or tensor.dtype.name != "UINT8":
            raise BitstreamError(f"{source}: the coded entry is not a uint8 vector of the checkpoint", tensor=key)
        ndus[key] = tensor.numpy().tobytes()
    try:
        arrays = nnc.decode_parts(parameter_sets, ndus)
    except BitstreamError as exc:
        exc.args = (f"{source}: {exc}",)
        raise
    for key, (tf_dtype, shape) in listed.items():
        dtype = TF_TO_DTYPE.get(tf_dtype)
        array = arrays.get(key)
        if dtype is None or array is None or np.asarray(array).size != int(np.prod(shape, dtype=np.int64)):
            raise BitstreamError(f"{source}: decoded values do not fit {tf_dtype=} shape {list(shape)}", tensor=key)
        try:
            value = coerce(np.asarray(array), dtype).reshape(shape)
        except ValueError as exc:
            raise BitstreamError(f"{source}: {exc}", tensor=key) from exc
        entries[key].tf_dtype, entries[key].shape = tf_dtype, shape
        old = model.tensors[key]
        wrapped = CodedTensor(key, dtype, shape, ndus[key], parameter_sets, lambda v=value: v, role=old.role)
        model.tensors[key] = wrapped
        native.loaded[key] = wrapped
        if key in model.graph.initializers:
            model.graph.initializers[key] = wrapped
    return model
