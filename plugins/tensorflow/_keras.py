# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Keras full models: `.keras` (Keras 3 zip) and legacy `.h5`, read, written and carried in NNR.

NOTE: models are read with `keras.saving.load_model(..., compile=False, safe_mode=True)` and
rebuilt from their config with `deserialize_keras_object(..., safe_mode=True)`, so a `Lambda`
layer holding Python bytecode (or any other unsafe deserialization) is refused, never run.
Tensors are the model's variables (`model.weights`, trainable and not), keyed by the variable
path at load time (`conv2d/kernel`, `gru/gru_cell/recurrent_kernel`). A rebuilt model may name
its variables differently (a `Sequential` drops its own prefix), so variables are matched by
their order in `model.weights`, which the config fixes, and checked by shape and dtype.

Topology bytes (an NNRTF container, `_container`):

    :kind      b"keras"
    :file      b"keras" or b"h5": the file kind the model was read from (the default to write)
    :config    the model's `serialize_keras_object` JSON (layers, their config, build config)
    :weights   JSON {"version": 1, "variables": [{"key", "dtype" (numpy name), "shape", "carried"}]}
    :value/<key>  the `.npy` bytes (no pickle) of a variable not carried by an NNR data unit

The optimizer state is not read (`compile=False`): a converted model is for inference.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from nnrconv.core import (
    ArrayTensor,
    BitstreamError,
    DType,
    FormatError,
    Graph,
    InputSpec,
    Model,
    Node,
    Tensor,
    TensorRole,
    UnsupportedError,
)
from nnrconv_tensorflow import _container
from nnrconv_tensorflow._model import FORMAT

__all__ = [
    "FILE_KINDS",
    "KERAS",
    "KerasNative",
    "from_container",
    "input_specs",
    "read",
    "run",
    "to_container",
    "write",
]

KERAS = "keras"
# File kind -> the suffixes keras.saving writes it under.
FILE_KINDS = {"keras": (".keras",), "h5": (".h5", ".hdf5")}

# Variable name -> role, for the layer classes Keras ships; batch-norm roles only on BatchNormalization.
_ROLES = {
    "kernel": TensorRole.WEIGHT,
    "recurrent_kernel": TensorRole.WEIGHT,
    "depthwise_kernel": TensorRole.WEIGHT,
    "pointwise_kernel": TensorRole.WEIGHT,
    "embeddings": TensorRole.WEIGHT,
    "bias": TensorRole.BIAS,
}
_BN_ROLES = {
    "gamma": TensorRole.BN_GAMMA,
    "beta": TensorRole.BN_BETA,
    "moving_mean": TensorRole.BN_MEAN,
    "moving_variance": TensorRole.BN_VAR,
}


def _roles(model: Any) -> dict[int, TensorRole]:
    """id(variable) -> role, from the layer owning each variable (its class and the variable's name)."""
    roles: dict[int, TensorRole] = {}
    try:
        layers = list(model._flatten_layers(include_self=False))  # every layer, nested cells included
    except AttributeError:  # a Keras without the (private) walk: roles stay OTHER
        return roles
    for layer in layers:
        table = {**_ROLES, **_BN_ROLES} if isinstance(layer, keras.layers.BatchNormalization) else _ROLES
        for variable in [*layer._trainable_variables, *layer._non_trainable_variables]:
            role = table.get(variable.name)
            if role is not None:
                roles.setdefault(id(variable), role)
    return roles


@dataclass(slots=True)
class KerasNative:
    """A Keras model object, the keys of its variables in `model.weights` order, its file kind,
    and the asset files of its `.keras` zip (layer state kept outside variables)."""

    model: Any
    keys: list[str]
    file_kind: str
    kind: str = KERAS
    assets: tuple[str, ...] = ()
    loaded: dict[str, Tensor] = field(default_factory=dict)


def file_kind_of(path: Path) -> str | None:
    """ "keras" or "h5" from the output name (`.nnr.keras` counts as `.keras`), else None."""
    name = path.name.lower()
    return next((kind for kind, suffixes in FILE_KINDS.items() if name.endswith(suffixes)), None)


@contextlib.contextmanager
def _keras_errors(source: str) -> Iterator[None]:
    """Turn what Keras raises on unsafe, unknown or broken models into one-line nnrconv errors."""
    try:
        yield
    except (ValueError, TypeError, KeyError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "safe_mode" in str(exc) or "Lambda" in str(exc) or "arbitrary code" in str(exc):
            raise UnsupportedError(
                f"{source}: the model needs unsafe deserialization (a Lambda layer with Python code); "
                f"nnrconv never runs code from a model file: {message}"
            ) from exc
        if "Could not locate" in str(exc) or "Unknown layer" in str(exc):
            raise UnsupportedError(
                f"{source}: the model uses a custom Keras class nnrconv cannot build: {message}"
            ) from exc
        raise FormatError(f"{source}: not a Keras model Keras can read: {message}") from exc
    except OSError as exc:
        raise FormatError(f"{source}: cannot read the Keras model: {exc}") from exc


def _keys(variables: list[Any]) -> list[str]:
    """Variable paths, made unique (`#2`, `#3` ...) where a model repeats one."""
    keys: list[str] = []
    taken: set[str] = set()
    for variable in variables:
        key, n = variable.path, 1
        while key in taken:
            n += 1
            key = f"{variable.path}#{n}"
        taken.add(key)
        keys.append(key)
    return keys


def _model(native: KerasNative, source: str) -> Model:
    tensors: dict[str, Tensor] = {}
    roles = _roles(native.model)
    for key, variable in zip(native.keys, native.model.weights, strict=True):
        array = np.asarray(variable.numpy())
        try:
            dtype = DType.from_numpy(array.dtype)
        except TypeError as exc:
            raise UnsupportedError(
                f"{source}: variable {key!r} has type {array.dtype}, which nnrconv cannot hold"
            ) from exc
        role = roles.get(id(variable), TensorRole.OTHER)
        tensors[key] = ArrayTensor(key, array, dtype=dtype, role=role)
    graph = Graph(name=native.model.name)
    for layer in native.model.layers:
        graph.nodes.append(Node(type(layer).__name__, [], [layer.name], name=layer.name, domain="keras"))
    graph.initializers.update(tensors)
    native.loaded = dict(tensors)
    metadata = {"tensorflow.kind": KERAS, "keras.file": native.file_kind, "keras.version": keras.__version__}
    return Model(graph, tensors, source_format=FORMAT, native=native, metadata=metadata)


def read(path: Path, file_kind: str) -> Model:
    """Load a `.keras` or legacy `.h5` full model, safely (no code from the file runs).

    Raises:
        UnsupportedError: a Lambda layer with code, a custom class, or a variable type nnrconv lacks.
        FormatError: the file is not a Keras full model (a weights-only `.h5`, a broken zip).
    """
    suffix = FILE_KINDS[file_kind][0]
    with _keras_errors(str(path)), _quiet_absl(), tempfile.TemporaryDirectory(prefix="nnrconv-keras-") as tmp:
        named = path
        if not path.name.lower().endswith(FILE_KINDS[file_kind]):
            # Keras picks the reader by suffix alone; give the file the one its content asks for.
            named = Path(tmp) / f"model{suffix}"
            named.symlink_to(path.resolve())
        model = keras.saving.load_model(named, compile=False, safe_mode=True)
    if not isinstance(model, keras.Model):
        raise FormatError(f"{path}: holds a {type(model).__name__}, not a Keras model")
    return _model(KerasNative(model, _keys(model.weights), file_kind, assets=_assets(path, file_kind)), str(path))


def _assets(path: Path, file_kind: str) -> tuple[str, ...]:
    if file_kind != "keras":
        return ()
    with zipfile.ZipFile(path) as archive:
        return tuple(i.filename for i in archive.infolist() if i.filename.startswith("assets/") and not i.is_dir())


@contextlib.contextmanager
def _quiet_absl() -> Iterator[None]:
    """Keras logs through absl (for example that `.h5` is a legacy format); nnrconv prints one line."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _assign(native: KerasNative, tensors: Mapping[str, Tensor], source: str) -> None:
    """Put the tensors' values into the model's variables, checking shape and type."""
    for key, variable in zip(native.keys, native.model.weights, strict=True):
        tensor = tensors.get(key)
        if tensor is None:
            raise FormatError(f"{source}: the model has no tensor for variable {key!r}")
        array = np.asarray(tensor.numpy())
        shape = tuple(int(d) for d in variable.shape)
        if array.size != int(np.prod(shape, dtype=np.int64)):
            raise FormatError(f"{source}: tensor {key!r} has {array.size} values; the variable has shape {list(shape)}")
        variable.assign(array.astype(np.dtype(variable.dtype), copy=False).reshape(shape))


def write(model: Model, path: Path, file_kind: str | None = None) -> None:
    """Save as `.keras` or legacy `.h5` (by `file_kind`, else the kind the model was read from).

    Keras insists on the suffix, so a name without one is written under a suffixed temporary
    name beside it and renamed.

    Raises:
        FormatError: a tensor does not fit its variable, or the file cannot be written.
    """
    native: KerasNative = model.native
    kind = file_kind or native.file_kind
    _assign(native, model.tensors, str(path))
    suffix = FILE_KINDS[kind][0]
    target = path if path.name.lower().endswith(suffix) else path.with_name(path.name + suffix)
    try:
        with _quiet_absl():
            native.model.save(target)
        if target != path:
            os.replace(target, path)
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: cannot write the Keras model: {exc}") from exc


# -- NNR topology ------------------------------------------------------------------------------
def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def to_container(model: Model, carried: set[str]) -> bytes:
    """The NNRTF container of a Keras model: its config, variable manifest and uncarried values."""
    native: KerasNative = model.native
    if native.assets:
        raise UnsupportedError(
            f"the Keras model keeps layer state in asset files ({native.assets[0]!r}, ...), which nnrconv "
            "does not carry in NNR yet; embed it instead (*.nnr.keras keeps the assets)"
        )
    config = json.dumps(keras.saving.serialize_keras_object(native.model), separators=(",", ":"))
    entries: dict[str, bytes] = {
        ":kind": KERAS.encode(),
        ":file": native.file_kind.encode(),
        ":config": config.encode(),
    }
    variables = []
    for key in native.keys:
        tensor = model.tensors[key]
        variables.append(
            {
                "key": key,
                "dtype": tensor.dtype.storage_dtype.name,
                "shape": list(tensor.shape),
                "carried": key in carried,
            }
        )
        if key not in carried:
            entries[f":value/{key}"] = _npy(tensor.numpy())
    manifest = {"version": 1, "variables": variables}
    return _container.pack({**entries, ":weights": json.dumps(manifest, separators=(",", ":")).encode()})


def from_container(entries: Mapping[str, bytes], tensors: Mapping[str, Tensor]) -> Model:
    """Rebuild the Keras model from its config (safe mode) and fill its variables.

    Raises:
        BitstreamError: a malformed manifest or config, a variable without values, a decoded
            tensor matching no variable, or values that do not fit.
        UnsupportedError: the config needs unsafe deserialization or an unknown class.
    """
    try:
        manifest = json.loads(entries[":weights"])
        variables = [
            (str(v["key"]), np.dtype(v["dtype"]), tuple(int(d) for d in v["shape"]), bool(v["carried"]))
            for v in manifest["variables"]
        ]
        config = json.loads(entries[":config"])
        file_kind = entries.get(":file", b"keras").decode()
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise BitstreamError(f"the Keras topology has no valid config or variable manifest: {exc}") from exc
    if file_kind not in FILE_KINDS:
        raise BitstreamError(f"the Keras topology names an unknown file kind {file_kind[:16]!r}")
    with _keras_errors("the NNR topology's Keras config"), _quiet_absl():
        rebuilt = keras.saving.deserialize_keras_object(config, safe_mode=True)
    if not isinstance(rebuilt, keras.Model) or len(rebuilt.weights) != len(variables):
        count = len(getattr(rebuilt, "weights", []))
        raise BitstreamError(
            f"the Keras config builds a model with {count} variables; the manifest lists {len(variables)}"
        )
    values: dict[str, Tensor] = {}
    for (key, dtype, shape, carried), variable in zip(variables, rebuilt.weights, strict=True):
        if tuple(int(d) for d in variable.shape) != shape:
            raise BitstreamError(
                f"the rebuilt variable has shape {list(variable.shape)}, not {list(shape)}", tensor=key
            )
        if carried:
            tensor = tensors.get(key)
            if tensor is None:
                raise BitstreamError("the Keras variable has no NNR data unit", tensor=key)
            array = np.asarray(tensor.numpy())
        else:
            raw = entries.get(f":value/{key}")
            if raw is None:
                raise BitstreamError(
                    "the Keras variable has neither a data unit nor a value in the topology", tensor=key
                )
            try:
                array = np.load(io.BytesIO(raw), allow_pickle=False)
            except ValueError as exc:
                raise BitstreamError(f"the Keras variable's value is not a valid .npy: {exc}", tensor=key) from exc
        if array.size != int(np.prod(shape, dtype=np.int64)):
            raise BitstreamError(f"decoded values do not fit shape {list(shape)}", tensor=key)
        values[key] = ArrayTensor(key, array.astype(dtype, copy=False).reshape(shape))
    extra = sorted(set(tensors) - {key for key, _, _, carried in variables if carried})
    if extra:
        raise BitstreamError(f"{len(extra)} decoded tensor(s) match no Keras variable: {extra[:5]!r}")
    native = KerasNative(rebuilt, [key for key, *_ in variables], file_kind)
    _assign(native, values, "<NNR topology>")
    return _model(native, "<NNR topology>")


# -- runner ------------------------------------------------------------------------------------
def input_specs(model: Model) -> list[InputSpec]:
    """The functional inputs of the Keras model; free dimensions (the batch) set to 1."""
    native: KerasNative = model.native
    try:
        inputs = list(native.model.inputs)
    except (AttributeError, ValueError) as exc:
        raise UnsupportedError(
            "the Keras model has no defined inputs; the runner needs a built functional model"
        ) from exc
    specs = []
    for index, tensor in enumerate(inputs):
        dtype = DType.from_numpy(np.dtype(tensor.dtype))
        shape = tuple(int(d) if d is not None else 1 for d in tensor.shape)
        specs.append(InputSpec(tensor.name or f"input_{index}", dtype, shape))
    return specs


def run(model: Model, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of the Keras model in inference mode, by output name (`output_<i>` when unnamed).

    Raises:
        UnsupportedError: Keras cannot run the model on these inputs.
    """
    native: KerasNative = model.native
    _assign(native, model.tensors, "the model")
    names = [spec.name for spec in input_specs(model)]
    try:
        feed = [np.asarray(inputs[name]) for name in names]
        outputs = native.model(feed if len(feed) > 1 else feed[0], training=False)
    except (KeyError, ValueError, TypeError) as exc:
        raise UnsupportedError(
            f"Keras cannot run the model: {str(exc).splitlines()[0] if str(exc) else exc!r}"
        ) from exc
    flat = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    labels = list(getattr(native.model, "output_names", None) or [])
    if len(labels) != len(flat) or len(set(labels)) != len(labels):
        labels = [f"output_{i}" for i in range(len(flat))]
    return {label: np.asarray(keras.ops.convert_to_numpy(value)) for label, value in zip(labels, flat, strict=True)}
