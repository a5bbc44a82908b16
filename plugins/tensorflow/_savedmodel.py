# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""SavedModel folders: `saved_model.pb` + the `variables/` checkpoint (a TensorBundle).

Tensor keys (NNR topology element ids) are the checkpoint keys, e.g.
`model/_layers/1/_kernel/.ATTRIBUTES/VARIABLE_VALUE`. Values are read with TensorFlow's
checkpoint reader (`tf.train.load_checkpoint`), which needs no `tf.saved_model.load` and so also
reads SavedModels whose functions the installed TensorFlow cannot restore. The checkpoint is
written back with the `SaveV2` op under the same keys, dtypes and shapes; every other file of
the folder (saved_model.pb, fingerprint.pb, assets/...) is copied byte for byte.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from tensorflow.core.protobuf import saved_model_pb2

from nnrconv.core import ArrayTensor, BitstreamError, DType, FormatError, LazyTensor, Model, Tensor
from nnrconv_tensorflow import _container, _roles
from nnrconv_tensorflow._model import FORMAT, SAVEDMODEL, CheckpointEntry, TFNative, neutral_graph, set_roles
from nnrconv_tensorflow._tensors import TF_TO_DTYPE, array_to_proto, coerce, proto_to_array

__all__ = ["from_container", "read", "to_container", "write"]

PROTO_NAME = "saved_model.pb"
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
_CHECKPOINT_SUFFIXES = (".index", ".data-")
SERVE_TAG = "serve"


def _parse(data: bytes, what: str) -> saved_model_pb2.SavedModel:
    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise FormatError(f"{what}: not a TensorFlow SavedModel (protobuf parse failed: {exc})") from exc
    if not proto.meta_graphs:
        raise FormatError(f"{what}: not a TensorFlow SavedModel (no meta graph)")
    return proto


def meta_graph(proto: saved_model_pb2.SavedModel):  # type: ignore[no-untyped-def]
    """The MetaGraphDef tagged "serve", else the first one."""
    for graph in proto.meta_graphs:
        if SERVE_TAG in graph.meta_info_def.tags:
            return graph
    return proto.meta_graphs[0]


def _is_checkpoint_file(relative: str, prefix: str) -> bool:
    return relative.startswith(prefix) and relative[len(prefix) :].startswith(_CHECKPOINT_SUFFIXES)


def read(folder: Path) -> Model:
    """Read a SavedModel folder; checkpoint values stay on disk until a tensor is asked for.

    Raises:
        FormatError: no saved_model.pb, it does not parse, or the checkpoint cannot be read.
    """
    import tensorflow as tf

    proto_path = folder / PROTO_NAME
    try:
        files = {
            p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and not _is_checkpoint_file(p.relative_to(folder).as_posix(), "variables/variables")
        }
    except OSError as exc:
        raise FormatError(f"{folder}: cannot read: {exc.strerror}") from exc
    if PROTO_NAME not in files:
        raise FormatError(f"{folder}: not a SavedModel folder (no {PROTO_NAME})")
    proto = _parse(files[PROTO_NAME], str(proto_path))
    native = TFNative(SAVEDMODEL, saved_model=proto, files=files)
    tensors: dict[str, Tensor] = {}
    prefix = folder / native.prefix
    if prefix.with_name(prefix.name + ".index").is_file():
        try:
            reader = tf.train.load_checkpoint(str(prefix))
            dtypes = reader.get_variable_to_dtype_map()
            shapes = reader.get_variable_to_shape_map()
        except (tf.errors.OpError, ValueError) as exc:
            raise FormatError(f"{folder}: cannot read the variables checkpoint: {exc}") from exc
        for key in sorted(dtypes):
            entry = CheckpointEntry(key, int(dtypes[key].as_datatype_enum), tuple(int(d) for d in shapes[key]))
            native.entries.append(entry)
            dtype = TF_TO_DTYPE.get(entry.tf_dtype)
            if dtype is None or key == OBJECT_GRAPH_KEY:
                native.values[key] = reader.get_tensor(key)
                continue
            tensors[key] = LazyTensor(key, dtype, entry.shape, _reader_thunk(reader, key, dtype))
    model = _model(native, tensors, str(folder))
    native.loaded = dict(tensors)
    return model


def _reader_thunk(reader, key: str, dtype):  # type: ignore[no-untyped-def]
    def load() -> np.ndarray:
        value = np.asarray(reader.get_tensor(key))
        if dtype is DType.STRING:
            return value.astype(object)
        return np.ascontiguousarray(value).view(dtype.storage_dtype)

    return load


def _model(native: TFNative, tensors: dict[str, Tensor], source: str) -> Model:
    graph = meta_graph(native.saved_model)
    metadata = {"tensorflow.kind": SAVEDMODEL, "tensorflow.version": graph.meta_info_def.tensorflow_version}
    try:
        refs = _variable_refs(native, graph)
    except Exception:  # roles are a best effort: a SavedModel we cannot map keeps OTHER roles
        refs = {}
    flow = _roles.Dataflow(graph.graph_def.node, graph.graph_def.library.function)
    set_roles(tensors, _roles.infer(flow, refs), metadata)
    neutral = neutral_graph(Path(source).name, graph.graph_def.node, {})
    neutral.initializers.update(tensors)
    return Model(neutral, tensors, source_format=FORMAT, native=native, metadata=metadata)


def _variable_refs(native: TFNative, graph) -> dict[str, list[tuple[str, str]]]:  # type: ignore[no-untyped-def]
    """Checkpoint key -> (function, argument) pairs through which functions capture the variable.

    SavedObjectGraph node ids and the checkpoint's object graph node ids are the same numbering
    (TensorFlow saves both from one list of trackables).
    """
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    raw = native.values.get(OBJECT_GRAPH_KEY)
    if raw is None:
        return {}
    # Not through numpy: its fixed-width bytes type drops trailing NULs of the serialized proto.
    data = raw if isinstance(raw, bytes) else np.asarray(raw, dtype=object).item()
    trackable = trackable_object_graph_pb2.TrackableObjectGraph.FromString(data)
    key_of: dict[int, str] = {}
    for node_id, node in enumerate(trackable.nodes):
        for attribute in node.attributes:
            if attribute.name == "VARIABLE_VALUE":
                key_of[node_id] = attribute.checkpoint_key
    functions = {f.signature.name: f for f in graph.graph_def.library.function}
    refs: dict[str, list[tuple[str, str]]] = {}
    for name, concrete in graph.object_graph_def.concrete_functions.items():
        function = functions.get(name)
        bound = list(concrete.bound_inputs)
        if function is None or not bound:
            continue
        args = [a.name for a in function.signature.input_arg]
        for node_id, arg in zip(bound, args[len(args) - len(bound) :], strict=True):
            if node_id in key_of:
                refs.setdefault(key_of[node_id], []).append((name, arg))
    return refs


# -- topology container ------------------------------------------------------------------------
def to_container(model: Model, carried: Collection[str]) -> bytes:
    """The container of a SavedModel: its files, the checkpoint manifest, non-carried values."""
    native: TFNative = model.native
    entries: dict[str, bytes] = {":kind": SAVEDMODEL.encode()}
    manifest = {
        "version": 1,
        "prefix": native.prefix,
        "entries": [
            {"key": e.key, "dtype": e.tf_dtype, "shape": list(e.shape), "carried": e.key in carried}
            for e in native.entries
        ],
    }
    entries[":manifest"] = json.dumps(manifest, separators=(",", ":")).encode()
    for entry in native.entries:
        if entry.key in carried:
            continue
        entries[f":value/{entry.key}"] = _value_proto(native, model, entry).SerializeToString(deterministic=True)
    entries.update(native.files)
    return _container.pack(entries)


def _value_proto(native: TFNative, model: Model, entry: CheckpointEntry):  # type: ignore[no-untyped-def]
    from tensorflow.core.framework import types_pb2
    from tensorflow.python.framework import tensor_util

    if entry.key in native.values:
        value = native.values[entry.key]
        if entry.tf_dtype == types_pb2.DT_STRING:  # object array: numpy's bytes type drops trailing NULs
            return array_to_proto(np.asarray(value, dtype=object), entry.tf_dtype, entry.shape)
        return tensor_util.make_tensor_proto(value)
    tensor = model.tensors.get(entry.key)
    if tensor is None:
        raise FormatError(f"checkpoint entry {entry.key!r} has no tensor in the model")
    return array_to_proto(tensor.numpy(), entry.tf_dtype, entry.shape)


def from_container(entries: dict[str, bytes], tensors: Mapping[str, Tensor]) -> Model:
    """Rebuild a SavedModel Model from its container entries and the decoded tensors.

    Raises:
        BitstreamError: a missing or malformed manifest or saved_model.pb, a carried entry
            without decoded tensor, an extra tensor, or values that do not fit.
    """
    from tensorflow.core.framework import tensor_pb2

    try:
        manifest = json.loads(entries[":manifest"])
        listed = [
            (CheckpointEntry(str(e["key"]), int(e["dtype"]), tuple(int(d) for d in e["shape"])), bool(e["carried"]))
            for e in manifest["entries"]
        ]
        prefix = str(manifest["prefix"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BitstreamError(f"the TensorFlow topology has no valid checkpoint manifest: {exc}") from exc
    if not _container.valid_member_name(prefix) or PROTO_NAME not in entries:
        raise BitstreamError(f"the TensorFlow topology has a bad checkpoint prefix {prefix!r} or no {PROTO_NAME}")
    try:
        proto = _parse(entries[PROTO_NAME], "the NNR topology's saved_model.pb")
    except FormatError as exc:
        raise BitstreamError(str(exc)) from exc
    files = {k: v for k, v in entries.items() if not k.startswith(":")}
    native = TFNative(SAVEDMODEL, saved_model=proto, files=files, prefix=prefix)
    restored: dict[str, Tensor] = {}
    for entry, carried in listed:
        native.entries.append(entry)
        dtype = TF_TO_DTYPE.get(entry.tf_dtype)
        if carried:
            tensor = tensors.get(entry.key)
            if tensor is None:
                raise BitstreamError("the checkpoint entry has no NNR data unit", tensor=entry.key)
            array = tensor.numpy()
            if dtype is None or array.size != int(np.prod(entry.shape, dtype=np.int64)):
                raise BitstreamError(f"decoded values do not fit shape {list(entry.shape)}", tensor=entry.key)
            try:
                restored[entry.key] = _array_tensor(entry.key, coerce(array, dtype).reshape(entry.shape), dtype)
            except ValueError as exc:
                raise BitstreamError(str(exc), tensor=entry.key) from exc
            continue
        raw = entries.get(f":value/{entry.key}")
        if raw is None:
            raise BitstreamError(
                "the checkpoint entry has neither a value in the topology nor a data unit", tensor=entry.key
            )
        value = tensor_pb2.TensorProto.FromString(raw)
        if dtype is None or entry.key == OBJECT_GRAPH_KEY:
            from tensorflow.python.framework import tensor_util

            native.values[entry.key] = tensor_util.MakeNdarray(value)
        else:
            restored[entry.key] = _array_tensor(entry.key, proto_to_array(value, dtype), dtype)
    extra = sorted(set(tensors) - {e.key for e, carried in listed if carried})
    if extra:
        raise BitstreamError(f"{len(extra)} decoded tensor(s) match no checkpoint entry: {extra[:5]!r}")
    model = _model(native, restored, "savedmodel")
    native.loaded = {}
    return model


def _array_tensor(key: str, array: np.ndarray, dtype: DType) -> Tensor:
    return ArrayTensor(key, array, dtype=dtype)


# -- writing -----------------------------------------------------------------------------------
def write(
    model: Model, folder: Path, coded: Mapping[str, bytes] | None = None, extra: Mapping[str, bytes] | None = None
) -> None:
    """Write the SavedModel folder: its files, then the checkpoint with SaveV2 (only under `folder`).

    Args:
        model: the SavedModel model.
        folder: the folder to create.
        coded: checkpoint key -> bytes stored instead of the entry's value, as a uint8 vector
            (NNR data units of integration mode 2).
        extra: more files to write, by relative path.

    Raises:
        FormatError: a tensor does not fit its checkpoint entry, or the folder cannot be written.
    """
    import tensorflow as tf

    native: TFNative = model.native
    try:
        folder.mkdir()
        for relative, data in {**native.files, **(extra or {})}.items():
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        (folder / native.prefix).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FormatError(f"{folder}: cannot write: {exc.strerror}") from exc
    if not native.entries:
        return
    names, values = checkpoint_values(model, str(folder), coded)
    try:
        with tf.device("/cpu:0"):
            tf.raw_ops.SaveV2(
                prefix=os.fspath(folder / native.prefix), tensor_names=names,
                shape_and_slices=[""] * len(names), tensors=values,
            )
    except tf.errors.OpError as exc:
        raise FormatError(f"{folder}: cannot write the variables checkpoint: {exc.message}") from exc


def checkpoint_values(
    model: Model, where: str, coded: Mapping[str, bytes] | None = None
) -> tuple[list[str], list[Any]]:
    """The checkpoint's entry names and their values as TensorFlow constants, for SaveV2.

    Raises:
        FormatError: a tensor does not fit its checkpoint entry (the message starts with `where`).
    """
    import tensorflow as tf
    from tensorflow.python.framework import tensor_util

    native: TFNative = model.native
    coded = coded or {}
    names, values = [], []
    for entry in native.entries:
        if entry.key in coded:
            value = tf.constant(np.frombuffer(bytes(coded[entry.key]), dtype=np.uint8))
        elif entry.key in native.values:
            value = tf.constant(native.values[entry.key], dtype=tf.dtypes.as_dtype(entry.tf_dtype))
        else:
            tensor = model.tensors.get(entry.key)
            if tensor is None:
                raise FormatError(f"{where}: checkpoint entry {entry.key!r} has no tensor in the model")
            try:
                proto = array_to_proto(tensor.numpy(), entry.tf_dtype, entry.shape)
            except ValueError as exc:
                raise FormatError(f"{where}: tensor {entry.key!r}: {exc}") from exc
            value = tf.constant(tensor_util.MakeNdarray(proto), dtype=tf.dtypes.as_dtype(entry.tf_dtype))
        names.append(entry.key)
        values.append(value)
    return names, values
