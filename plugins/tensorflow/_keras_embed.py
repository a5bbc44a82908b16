# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""NNR inside Keras files (integration mode 2): `*.nnr.keras` and `*.nnr.h5`.

Both kinds keep their weights in HDF5: the `model.weights.h5` member of the `.keras` zip, or
the legacy `.h5` file itself (under `model_weights/`). The embedded file is the plain one (as
Keras writes it) with, in that HDF5 file:

- each carried variable's dataset replaced by a uint8 vector holding its complete NNR_NDU unit,
  with attributes `nnr_key` (the variable's key, the NDU's tensor name), `nnr_dtype` (numpy
  type name) and `nnr_shape` (the original shape);
- a root dataset `nnr_parameter_sets` (uint8): the NNR start unit and model parameter set.

Every other group, dataset and attribute is copied as it is, and the zip's other members
(`config.json`, `metadata.json`, assets) are unchanged. The container digest of every other
byte of the file (`_digest_span`) is the `.h5`'s attribute `nnr_container_digest` of
`nnr_parameter_sets`, the `.keras` zip's archive comment. Keras itself cannot load such a file
(the variables would get bytes of the wrong shape); restore the plain model first.

NOTE: which dataset holds which variable is Keras's business (layer-relative paths in `.keras`,
weight names in `.h5`); rather than reimplement its layout, a dataset is matched to the
variable whose value it holds, byte for byte with the same type and shape. Variables with equal
values are interchangeable, so any match is right. The HDF5 tree is copied into a new file
rather than edited in place, because HDF5 does not give back the space of deleted datasets.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import h5py
import numpy as np

from nnrconv.core import BitstreamError, CodedUnit, EmbeddedModel, FormatError, Model
from nnrconv_tensorflow import _digest_span, _keras

__all__ = ["PARAMETER_SETS", "extract_embedded", "is_embedded", "save_embedded"]

PARAMETER_SETS = "nnr_parameter_sets"
DIGEST_ATTRIBUTE = "nnr_container_digest"
WEIGHTS_MEMBER = "model.weights.h5"
_KEY, _DTYPE, _SHAPE = "nnr_key", "nnr_dtype", "nnr_shape"

# (HDF5 path, dataset) -> the array to write instead, or None to copy the dataset as it is.
Substitute = Callable[[str, h5py.Dataset], "np.ndarray | tuple[np.ndarray, dict[str, object]] | None"]


def _copy_attrs(source: h5py.AttributeManager, target: h5py.AttributeManager) -> None:
    for name in source:
        target.create(name, source[name], dtype=source.get_id(name).dtype)


def _rewrite(source: h5py.File, target: h5py.File, substitute: Substitute, skip: frozenset[str]) -> None:
    """Copy the HDF5 tree of `source` into `target`, datasets replaced where `substitute` says."""
    _copy_attrs(source.attrs, target.attrs)

    def copy(group: h5py.Group, into: h5py.Group) -> None:
        for name, item in group.items():
            if item.name.lstrip("/") in skip:
                continue
            if isinstance(item, h5py.Group):
                child = into.create_group(name)
                _copy_attrs(item.attrs, child.attrs)
                copy(item, child)
                continue
            replacement = substitute(item.name.lstrip("/"), item)
            if replacement is None:
                group.copy(item, into, name=name)
                continue
            data, attrs = replacement if isinstance(replacement, tuple) else (replacement, {})
            dataset = into.create_dataset(name, data=data)
            _copy_attrs(item.attrs, dataset.attrs)
            for key, value in attrs.items():
                dataset.attrs[key] = value
            for key in (_KEY, _DTYPE, _SHAPE):
                if key not in attrs and key in dataset.attrs:
                    del dataset.attrs[key]

    copy(source, target)


def _fingerprint(array: np.ndarray) -> tuple[str, tuple[int, ...], bytes]:
    contiguous = np.ascontiguousarray(array)
    return contiguous.dtype.str, contiguous.shape, hashlib.sha256(contiguous.tobytes()).digest()


def _embed_h5(
    source: h5py.File, target: h5py.File, model: Model, parameter_sets: bytes, ndus: Mapping[str, bytes]
) -> None:
    waiting: dict[tuple[str, tuple[int, ...], bytes], list[str]] = {}
    for key in ndus:
        waiting.setdefault(_fingerprint(np.asarray(model.tensors[key].numpy())), []).append(key)

    def substitute(path: str, dataset: h5py.Dataset) -> tuple[np.ndarray, dict[str, object]] | None:
        if dataset.dtype.kind not in "fiub" or dataset.size == 0:
            return None
        keys = waiting.get(_fingerprint(dataset[()]))
        if not keys:
            return None
        key = keys.pop(0)
        attrs = {_KEY: key, _DTYPE: dataset.dtype.name, _SHAPE: np.asarray(dataset.shape, dtype=np.int64)}
        return np.frombuffer(bytes(ndus[key]), dtype=np.uint8), attrs

    _rewrite(source, target, substitute, frozenset())
    left = sorted(k for keys in waiting.values() for k in keys)
    if left:
        raise FormatError(f"coded tensors {left[:5]!r} match no weight dataset of the Keras file")
    target.create_dataset(PARAMETER_SETS, data=np.frombuffer(bytes(parameter_sets), dtype=np.uint8))


def save_embedded(model: Model, path: Path, parameter_sets: bytes, ndus: Mapping[str, bytes]) -> None:
    """Write the Keras file (`.keras` or `.h5` by name) with the variables in `ndus` as NNR units.

    Raises:
        FormatError: a unit names no variable, or the file cannot be written.
    """
    unknown = sorted(set(ndus) - set(model.tensors))
    if unknown:
        raise FormatError(f"coded tensors {unknown[:5]!r} are not variables of the Keras model")
    kind = _keras.file_kind_of(path) or model.native.file_kind
    with tempfile.TemporaryDirectory(prefix="nnrconv-keras-") as tmp:
        plain = Path(tmp) / f"plain{_keras.FILE_KINDS[kind][0]}"
        _keras.write(model, plain, kind)
        try:
            if kind == "h5":
                with h5py.File(plain, "r") as source, h5py.File(path, "w") as target:
                    _embed_h5(source, target, model, parameter_sets, ndus)
                _reserve_h5(path)
            else:
                _embed_zip(plain, path, model, parameter_sets, ndus)
        except OSError as exc:
            raise FormatError(f"{path}: cannot write the Keras file: {exc}") from exc
    _digest_span.seal(path)


def _reserve_h5(path: Path) -> None:
    """Give the `.nnr.h5` its digest's place: a fixed-length string attribute holding a placeholder."""
    with h5py.File(path, "r+") as target:
        text = _digest_span.placeholder(_digest_span.chunk_count(path.stat().st_size))
        target[PARAMETER_SETS].attrs[DIGEST_ATTRIBUTE] = np.bytes_(text)


def _embed_zip(plain: Path, path: Path, model: Model, parameter_sets: bytes, ndus: Mapping[str, bytes]) -> None:
    """The `.keras` zip with its weights member embedded; the archive comment holds the digest's place."""
    size = 0
    with zipfile.ZipFile(plain) as archive, zipfile.ZipFile(path, "w") as out:
        for info in archive.infolist():
            data = archive.read(info)
            if info.filename == WEIGHTS_MEMBER:
                buffer = io.BytesIO()
                with h5py.File(io.BytesIO(data), "r") as source, h5py.File(buffer, "w") as target:
                    _embed_h5(source, target, model, parameter_sets, ndus)
                data = buffer.getvalue()
            out.writestr(info, data)
            size += len(data) + 2 * len(info.filename) + 76
        out.comment = _digest_span.placeholder(_digest_span.chunk_count(size))


def _weights_h5(path: Path, kind: str) -> bytes | None:
    if kind == "h5":
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.read(WEIGHTS_MEMBER) if WEIGHTS_MEMBER in archive.namelist() else None
    except (zipfile.BadZipFile, OSError, KeyError, NotImplementedError):
        return None


def is_embedded(path: Path, kind: str) -> bool:
    """Whether a Keras file holds NNR units (a root `nnr_parameter_sets` dataset in its HDF5)."""
    try:
        data = _weights_h5(path, kind)
        if kind != "h5" and data is None:
            return False
        with h5py.File(io.BytesIO(data) if data is not None else path, "r") as weights:
            return PARAMETER_SETS in weights
    except OSError:
        return False


def _restore_h5(
    source: h5py.File, target: h5py.File, source_name: str
) -> tuple[bytes, dict[str, tuple[bytes, tuple[int, ...]]]]:
    """Copy the plain HDF5 into `target`, each coded dataset as zeros of its type and shape
    (the seam decodes it later); return the parameter sets and (unit, shape) by key."""
    parameter_sets = bytes(np.asarray(source[PARAMETER_SETS][()], dtype=np.uint8).tobytes())
    coded: dict[str, tuple[str, np.dtype, tuple[int, ...]]] = {}
    units: dict[str, tuple[bytes, tuple[int, ...]]] = {}

    def collect(path: str, item: object) -> None:
        if isinstance(item, h5py.Dataset) and _KEY in item.attrs:
            try:
                key = str(item.attrs[_KEY])
                dtype = np.dtype(str(item.attrs[_DTYPE]))
                shape = tuple(int(d) for d in np.asarray(item.attrs[_SHAPE]).reshape(-1))
            except (KeyError, TypeError, ValueError) as exc:
                raise BitstreamError(f"{source_name}: the coded dataset {path!r} lacks its type or shape") from exc
            coded[path] = (key, dtype, shape)
            units[key] = (np.asarray(item[()], dtype=np.uint8).tobytes(), shape)

    source.visititems(collect)

    def substitute(path: str, dataset: h5py.Dataset) -> np.ndarray | None:
        if path not in coded:
            return None
        _, dtype, shape = coded[path]
        return np.zeros(shape, dtype)

    _rewrite(source, target, substitute, frozenset({PARAMETER_SETS}))
    return parameter_sets, units


def extract_embedded(path: Path, kind: str) -> EmbeddedModel:
    """The model of a `.nnr.keras` / `.nnr.h5` with its carried variables still coded, for the seam.

    Raises:
        BitstreamError: a coded dataset without type or shape, or naming no variable.
        FormatError: the restored file is not a Keras model.
    """
    source_name = str(path)
    with tempfile.TemporaryDirectory(prefix="nnrconv-keras-") as tmp:
        plain = Path(tmp) / f"plain{_keras.FILE_KINDS[kind][0]}"
        if kind == "h5":
            with h5py.File(path, "r") as source, h5py.File(plain, "w") as target:
                parameter_sets, units = _restore_h5(source, target, source_name)
        else:
            with zipfile.ZipFile(path) as archive, zipfile.ZipFile(plain, "w") as out:
                for info in archive.infolist():
                    data = archive.read(info)
                    if info.filename == WEIGHTS_MEMBER:
                        buffer = io.BytesIO()
                        with h5py.File(io.BytesIO(data), "r") as source, h5py.File(buffer, "w") as target:
                            parameter_sets, units = _restore_h5(source, target, source_name)
                        data = buffer.getvalue()
                    out.writestr(info, data)
        model = _keras.read(plain, kind)
    unknown = sorted(set(units) - set(model.tensors))
    if unknown:
        raise BitstreamError(f"{source_name}: coded datasets name variables the model lacks: {unknown[:5]!r}")
    coded = {}
    for key, (ndu, shape) in units.items():
        tensor = model.tensors[key]
        coded[key] = CodedUnit(ndu, tensor.dtype, shape, tensor.role)
    return EmbeddedModel(model, parameter_sets, coded)
