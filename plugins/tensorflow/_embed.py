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

Both carry a container digest of everything around the units (see `_digest`): the frozen graph
a `nnr/container_digest` Const node in front, the folder a file `nnr/container_digest`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from tensorflow.core.framework import graph_pb2, tensor_pb2, types_pb2

from nnrconv.core import BitstreamError, CodedUnit, DType, EmbeddedModel, FormatError, Model
from nnrconv_tensorflow import _digest_folder, _digest_graph, _graphdef
from nnrconv_tensorflow._model import TFNative
from nnrconv_tensorflow._tensors import TF_TO_DTYPE, coerce, shape_proto

__all__ = [
    "MANIFEST_FILE",
    "PARAMETER_SETS_FILE",
    "PARAMETER_SETS_NODE",
    "embed",
    "is_embedded",
    "is_embedded_folder",
    "extract_embedded",
    "extract_embedded_folder",
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
    _digest_graph.seal(path)


def _value_bytes(value: tensor_pb2.TensorProto) -> bytes:
    if value.tensor_content or not value.int_val:
        return bytes(value.tensor_content)
    return bytes(int(v) & 0xFF for v in value.int_val)  # a writer that used the typed list


def extract_embedded(graph_def: graph_pb2.GraphDef, path: Path) -> EmbeddedModel:
    """The model of a `.nnr.pb` with its coded constants left coded (emptied of values) for the seam.

    Raises:
        BitstreamError: a coded constant without its original type or shape (naming the tensor).
    """
    source = str(path)
    index = next(i for i, n in enumerate(graph_def.node) if n.name == PARAMETER_SETS_NODE)
    parameter_sets = _value_bytes(graph_def.node[index].attr["value"].tensor)
    del graph_def.node[index]
    coded = {key: node for key, node in _nodes(graph_def).items() if DTYPE_ATTR in node.attr}  # type: ignore[attr-defined]
    found: dict[str, tuple[bytes, int]] = {}
    for key, node in coded.items():
        attr = node.attr  # type: ignore[attr-defined]
        if SHAPE_ATTR not in attr:
            raise BitstreamError(f"{source}: the coded constant has no {SHAPE_ATTR} attribute", tensor=key)
        ndu = _value_bytes(attr["value"].tensor)
        tf_dtype, shape = attr[DTYPE_ATTR].type, tuple(int(d.size) for d in attr[SHAPE_ATTR].shape.dim)
        attr["value"].tensor.CopyFrom(tensor_pb2.TensorProto(dtype=tf_dtype, tensor_shape=shape_proto(shape)))
        attr["dtype"].type = tf_dtype
        del attr[DTYPE_ATTR]
        del attr[SHAPE_ATTR]
        found[key] = (ndu, tf_dtype)
    model = _graphdef.model_from_graph_def(graph_def, source)
    units: dict[str, CodedUnit] = {}
    for key, (ndu, tf_dtype) in found.items():
        tensor = model.tensors.get(key)
        if tensor is None or TF_TO_DTYPE.get(tf_dtype) is None:
            raise BitstreamError(f"{source}: the coded constant has no tensor of a known type", tensor=key)
        units[key] = CodedUnit(ndu, tensor.dtype, tensor.shape, tensor.role, _coercer(tensor.dtype))
    return EmbeddedModel(model, parameter_sets, units)


def _coercer(dtype: DType) -> Callable[[np.ndarray], np.ndarray]:
    """The decoded values in `dtype`'s storage, converted as TensorFlow slots are (`coerce`)."""
    return lambda array: coerce(np.asarray(array), dtype)


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
    _digest_folder.seal(folder)


def extract_embedded_folder(folder: Path) -> EmbeddedModel:
    """The model of an embedded SavedModel folder with its coded entries left coded, for the seam.

    Raises:
        BitstreamError: a bad manifest, or a coded entry missing from the checkpoint (naming it).
    """
    import json

    from nnrconv_tensorflow import _savedmodel

    source = str(folder)
    model = _savedmodel.read(folder)
    native: TFNative = model.native
    try:
        native.files.pop(_digest_folder.FILE, None)  # checked before reading; never written again
        manifest = json.loads(native.files.pop(MANIFEST_FILE))
        parameter_sets = native.files.pop(PARAMETER_SETS_FILE)
        listed = {str(k): (int(v["dtype"]), tuple(int(d) for d in v["shape"])) for k, v in manifest["tensors"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BitstreamError(
            f"{source}: {MANIFEST_FILE} or {PARAMETER_SETS_FILE} is missing or malformed: {exc}"
        ) from exc
    entries = {e.key: e for e in native.entries}
    units: dict[str, CodedUnit] = {}
    for key, (tf_dtype, shape) in listed.items():
        tensor = model.tensors.get(key)
        dtype = TF_TO_DTYPE.get(tf_dtype)
        if key not in entries or tensor is None or tensor.dtype.name != "UINT8" or dtype is None:
            raise BitstreamError(f"{source}: the coded entry is not a uint8 vector of the checkpoint", tensor=key)
        ndu = tensor.numpy().tobytes()
        entries[key].tf_dtype, entries[key].shape = tf_dtype, shape
        units[key] = CodedUnit(ndu, dtype, shape, tensor.role, _coercer(dtype))
    return EmbeddedModel(model, parameter_sets, units)
