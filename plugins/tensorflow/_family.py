# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The TensorFlow family beyond graphs and SavedModels: Keras files and TFLite flatbuffers.

NOTE: NNR has one topology code for TensorFlow (4), so one format owns it and every kind of
TensorFlow model travels under it; the NNRTF container's `:kind` entry tells them apart
(`graphdef`, `savedmodel`, `keras`, `tflite`; see the plugin README). This module recognises the
new kinds by content and sends each call to the module of its kind. It imports no framework:
`sniff` runs at detection, before anything says TensorFlow is needed; the other functions import
`_keras` (Keras, TensorFlow) or `_tflite` when called, after the format has quieted TensorFlow.
"""

from __future__ import annotations

import fnmatch
import mmap
import zipfile
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

from nnrconv.core import EmbeddedModel, FormatError, Model, Tensor, UnsupportedError

__all__ = [
    "KERAS",
    "KINDS",
    "TFLITE",
    "file_kind",
    "from_container",
    "kind_of",
    "module_for",
    "native_name",
    "refuse_other_kind",
    "sniff",
]

KERAS = "keras"
TFLITE = "tflite"
KINDS = (KERAS, TFLITE)
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_KERAS_MEMBERS = {"config.json", "metadata.json"}


def _is_keras_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return set(archive.namelist()) >= _KERAS_MEMBERS
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError):
        return False


def file_kind(path: Path, head: bytes) -> str | None:
    """ "keras" (Keras 3 zip), "h5" (HDF5, a legacy Keras file), "tflite", or None, by content."""
    if not path.is_file():
        return None
    if head[4:8] == b"TFL3":
        return TFLITE
    if head.startswith(HDF5_MAGIC):
        return "h5"
    if head.startswith(b"PK\x03\x04") and _is_keras_zip(path):
        return KERAS
    return None


def sniff(path: Path, head: bytes) -> bool:
    return file_kind(path, head) is not None


def kind_of(model: Model) -> str | None:
    """KERAS or TFLITE for a model of those kinds, else None (a GraphDef or SavedModel)."""
    kind = getattr(model.native, "kind", None)
    return kind if kind in KINDS else None


def module_for(kind: str) -> ModuleType:
    if kind == KERAS:
        from nnrconv_tensorflow import _keras

        return _keras
    from nnrconv_tensorflow import _tflite

    return _tflite


def load(path: Path, head: bytes) -> EmbeddedModel | None:
    """The model of a Keras or TFLite file (NNR-coded variables still coded), or None for the other kinds."""
    kind = file_kind(path, head)
    if kind is None:
        return None
    if kind == TFLITE:
        from nnrconv_tensorflow import _tflite

        return EmbeddedModel(_tflite.parse(_mapped(path), str(path)))
    from nnrconv_tensorflow import _keras, _keras_embed

    if _keras_embed.is_embedded(path, kind):
        return _keras_embed.extract_embedded(path, kind)
    return EmbeddedModel(_keras.read(path, kind))


def _mapped(path: Path) -> mmap.mmap:
    """The file memory-mapped read-only: tensors are views of it, so a large model is not copied.

    Raises:
        FormatError: the file cannot be read.
    """
    try:
        with open(path, "rb") as f:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: cannot read: {exc}") from exc


def native_name(model: Model) -> str | None:
    kind = kind_of(model)
    if kind == TFLITE:
        return "model.tflite"
    if kind == KERAS:
        return "model.h5" if model.metadata.get("keras.file") == "h5" else "model.keras"
    return None


def save(model: Model, path: Path) -> None:
    """Write a Keras model as `.keras` or `.h5` (by name, else as read), a TFLite model as is.

    Raises:
        UnsupportedError: the name asks for another kind of TensorFlow model.
    """
    kind = kind_of(model)
    if kind == TFLITE:
        if _names_other_kind(path, TFLITE):
            raise UnsupportedError(f"{path}: this is a TFLite model; give a name such as model.tflite")
        from nnrconv_tensorflow import _tflite

        path.write_bytes(_tflite.serialize(model))
        return
    if _names_other_kind(path, KERAS):
        raise UnsupportedError(f"{path}: this is a Keras model; give a name such as model.keras or model.h5")
    from nnrconv_tensorflow import _keras

    _keras.write(model, path, _keras.file_kind_of(path))


# The output names of each kind of the family; a name of another kind is refused, not ignored.
_KIND_NAMES = {
    "graph": ("*.pb",),
    "savedmodel": ("*savedmodel*", "*saved_model*"),
    KERAS: ("*.keras", "*.h5", "*.hdf5"),
    TFLITE: ("*.tflite",),
}


def _names_other_kind(path: Path, kind: str) -> bool:
    name = path.name.lower()
    return any(fnmatch.fnmatchcase(name, p) for k, ps in _KIND_NAMES.items() if k != kind for p in ps)


def save_embedded(model: Model, path: Path, parameter_sets: bytes, ndus: Mapping[str, bytes]) -> None:
    """Write a Keras model as `*.nnr.keras` / `*.nnr.h5` (see `_keras_embed`).

    Raises:
        UnsupportedError: a TFLite model (its buffers are read in place by type; no layout holds
            units), or a Keras model aimed at another kind's embedded name.
    """
    name = path.name.lower()
    if kind_of(model) != KERAS or not name.endswith((".keras", ".h5", ".hdf5")):
        what = {KERAS: "Keras", TFLITE: "TFLite"}.get(kind_of(model) or "", model.metadata.get("tensorflow.kind", ""))
        raise UnsupportedError(
            f"{path}: a {what} model cannot hold NNR units under this name; "
            "Keras models embed as *.nnr.keras or *.nnr.h5, TFLite models travel as .nnr"
        )
    from nnrconv_tensorflow import _keras_embed

    _keras_embed.save_embedded(model, path, parameter_sets, ndus)


def refuse_other_kind(model: Model, path: Path) -> None:
    """A GraphDef or SavedModel aimed at a Keras or TFLite name: converting kinds is not done.

    Raises:
        UnsupportedError: the name asks for a Keras or TFLite file.
    """
    if kind_of(model) is None and path.name.lower().endswith((".keras", ".h5", ".hdf5", ".tflite")):
        kind = model.metadata.get("tensorflow.kind", "graph")
        raise UnsupportedError(f"{path}: this is a TensorFlow {kind}; nnrconv does not convert it to Keras or TFLite")


def from_container(kind: bytes, entries: Mapping[str, bytes], tensors: Mapping[str, Tensor]) -> Model | None:
    """Rebuild a Keras or TFLite model from its NNRTF container, or None for the other kinds."""
    if kind == KERAS.encode():
        return module_for(KERAS).from_container(entries, tensors)
    if kind == TFLITE.encode():
        return module_for(TFLITE).from_container(entries, tensors)
    return None
