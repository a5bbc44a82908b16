# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""NNR inside a PyTorch zip archive (integration mode 2): `*.nnr.pt2`, `*.nnr.pt`, `*.nnr.pth`.

The coded file is the model's own zip archive (a ``torch.export`` `.pt2`, a TorchScript archive,
or, for state dicts, the archive ``torch.save`` writes) with two changes:

- the storage record holding a carried tensor's bytes (``<prefix>data/weights/...`` in a `.pt2`,
  ``<prefix>data/<n>`` in TorchScript and ``torch.save`` archives) holds that tensor's complete
  NNR_NDU unit instead; a carried tensor without a record of its own (a second name of a tied
  tensor, a partial view) keeps its record and has its unit in ``<prefix>nnr/units/<i>``;
- the archive's version records (``<prefix>version``, ``<prefix>.data/version``) hold
  ``15938017`` (a file version no torch reads, so every torch loader refuses the coded archive
  instead of reading units as tensor bytes; the manifest keeps the original text);
- three kinds of members are added at the end: ``<prefix>nnr/manifest.json`` (below),
  ``<prefix>nnr/parameter_sets`` (the NNR start unit and model parameter set every unit was
  coded under) and the ``nnr/units/`` members, so the archive is self-contained.

The manifest is JSON::

    {"format": "nnrconv-pytorch-nnr", "version": 1, "kind": "program" | "script" | "state_dict",
     "versions": {version record: its original text},
     "tensors": [{"key": state_dict key, "dtype": nnrconv DType name, "shape": [...],
                  "record": member name, "nbytes": its original byte size}      # or
                 {"key", "dtype", "shape", "unit": member name}, ...]}

listed in data-unit order. Reading (`extract`) fills the records with zeros, restores the
version records, drops the ``nnr/`` members and loads the plain archive through the same checks
as any other file (`torch.load(weights_only=True)`, or the `.pt2`/TorchScript safety checks);
the seam (`nnrconv._embedding`) then replaces the coded tensors with `CodedTensor`s decoded on
first access, so their units move on unchanged. Nothing new is pickled: ``data.pkl`` and the graph members are the plain
archive's own.
"""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nnrconv.core import ArrayTensor, BitstreamError, CodedUnit, EmbeddedModel, FormatError, Model, UnsupportedError
from nnrconv.core._digest_parts import DIGEST_KEY, UNVERIFIED, VERIFIED
from nnrconv_pytorch import _archive, _digest, _torchio
from nnrconv_pytorch._archive import Record, Slot

__all__ = ["FORMAT_ID", "MANIFEST", "PARAMETER_SETS", "extract", "is_embedded", "save"]

FORMAT_ID = "nnrconv-pytorch-nnr"
VERSION = 1
FOLDER = "nnr/"
MANIFEST = FOLDER + "manifest.json"
PARAMETER_SETS = FOLDER + "parameter_sets"
UNITS = FOLDER + "units/"


# The file version written into the archive's version records: no torch reads it (torch 2.13 reads
# up to 10), so torch refuses coded archives instead of reading data units as tensor bytes.
TORCH_VERSION = b"15938017\n"


def _version_members(prefix: str) -> tuple[str, str]:
    """The records whose number torch's zip reader checks (``.data/version`` first, else ``version``)."""
    return (f"{prefix}version", f"{prefix}.data/version")


def is_embedded(names: Iterable[str]) -> bool:
    """Whether a torch zip archive's member names include an nnrconv NNR manifest."""
    names = list(names)
    first = names[0] if names else ""
    prefix = first.split("/", 1)[0] + "/" if "/" in first else ""
    return f"{prefix}{MANIFEST}" in names


# -- writing ---------------------------------------------------------------------------------------


def _plain_records(model: Model, skip: Mapping[str, bytes], source: str) -> tuple[str, list[Record], dict[str, Slot]]:
    """The kind, the plain archive's records and the record of each key that has one of its own."""
    native = model.native if isinstance(model.native, _torchio.Native) else _torchio.Native("state_dict")
    if model.source_format != _torchio.FORMAT:
        native = _torchio.Native("state_dict")
    if native.kind in ("program", "script"):
        return native.kind, _torchio._filled_records(model, native, skip=skip), native.slots
    if Path(source).suffix.lower() == ".pt2":
        raise UnsupportedError(
            f"{Path(source).name}: a state dict has no graph to write as a torch.export program; use .nnr.pt"
        )
    if Path(source).suffix.lower() in _torchio.SCRIPT_SUFFIXES:
        raise UnsupportedError(
            f"{Path(source).name}: a state dict has no graph to write as a TorchScript module; use .nnr.pt"
        )
    state = OrderedDict((key, _torchio.to_torch(tensor)) for key, tensor in model.tensors.items())
    buffer = io.BytesIO()
    torch.save(state, buffer)
    records = _archive.read_zip(buffer.getvalue(), source)
    nbytes = {key: tensor.nbytes for key, tensor in model.tensors.items()}
    return "state_dict", records, _archive.payload_records_state_dict(records, nbytes, source)


def save(model: Model, path: Path, parameter_sets: bytes, ndus: Mapping[str, bytes]) -> None:
    """Write `model`'s archive with the tensors in `ndus` replaced by their NNR data units.

    Raises:
        UnsupportedError: a state dict asked to become a `.pt2` program.
        FormatError: a unit names a tensor the model does not have.
    """
    source = str(path)
    unknown = [key for key in ndus if key not in model.tensors]
    if unknown:
        raise FormatError(f"{source}: coded tensor {unknown[0]!r} is not a tensor of the model")
    kind, records, slots = _plain_records(model, ndus, source)
    prefix = _archive.prefix_of(records)
    payloads: dict[str, bytes] = {}
    units: list[Record] = []
    entries: list[dict[str, Any]] = []
    for index, (key, ndu) in enumerate(ndus.items()):
        tensor = model.tensors[key]
        entry: dict[str, Any] = {"key": key, "dtype": tensor.dtype.name, "shape": list(tensor.shape)}
        slot = slots.get(key)
        if slot is not None and slot.record not in payloads:
            entry.update(record=slot.record, nbytes=slot.nbytes)
            payloads[slot.record] = bytes(ndu)
        else:
            member = f"{prefix}{UNITS}{index}"
            entry["unit"] = member
            units.append(Record(member, bytes(ndu)))
        entries.append(entry)
    # torch would read a coded record as raw tensor bytes: torch.jit.load silently builds tensors
    # of garbage. A file version no torch reads makes every torch loader refuse the archive.
    versions = {r.name: r.data.decode("latin-1") for r in records if r.name in _version_members(prefix)}
    payloads.update(dict.fromkeys(versions, TORCH_VERSION))
    manifest = {"format": FORMAT_ID, "version": VERSION, "kind": kind, "versions": versions, "tensors": entries}
    text = json.dumps(manifest, separators=(",", ":")).encode("utf-8")
    extra = [*units, Record(prefix + MANIFEST, text), Record(prefix + PARAMETER_SETS, bytes(parameter_sets))]
    try:
        path.write_bytes(_digest.seal(_archive.write_zip([*_archive.fill(records, payloads), *extra])))
    except OSError as exc:
        raise FormatError(f"{source}: cannot write: {exc.strerror}") from exc


# -- reading ---------------------------------------------------------------------------------------


def _manifest(
    members: Mapping[str, Record], prefix: str, source: str
) -> tuple[str, list[dict[str, Any]], dict[str, str]]:
    try:
        manifest = json.loads(members[prefix + MANIFEST].data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{source}: {prefix}{MANIFEST} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_ID:
        raise FormatError(f"{source}: {prefix}{MANIFEST} is not an nnrconv NNR manifest")
    if manifest.get("version") != VERSION:
        raise UnsupportedError(
            f"{source}: NNR manifest version {manifest.get('version')!r} is not supported "
            f"(this nnrconv reads {VERSION})"
        )
    kind, entries, versions = manifest.get("kind"), manifest.get("tensors"), manifest.get("versions", {})
    if kind not in ("program", "script", "state_dict") or not isinstance(entries, list):
        raise FormatError(f"{source}: {prefix}{MANIFEST} names no known kind or no tensor list")
    if not isinstance(versions, dict) or not all(
        k in _version_members(prefix) and isinstance(v, str) and len(v) < 64 for k, v in versions.items()
    ):
        raise FormatError(f"{source}: {prefix}{MANIFEST} has malformed archive versions")
    for entry in entries:
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("key"), str)
            and isinstance(entry.get("dtype"), str)
            and isinstance(entry.get("shape"), list)
            and all(isinstance(d, int) and d >= 0 for d in entry["shape"])
            and (("record" in entry and isinstance(entry.get("nbytes"), int)) or "unit" in entry)
        )
        member = entry.get("record", entry.get("unit")) if isinstance(entry, dict) else None
        if not ok or member not in members or member.startswith(prefix + MANIFEST):
            raise FormatError(f"{source}: {prefix}{MANIFEST} has a malformed or dangling entry {entry!r:.120}")
    return kind, entries, versions


def extract(data: bytes, source: str) -> EmbeddedModel:
    """The model of a coded archive with its tensors still coded, for the seam.

    The coded records are filled with zeros of their original size so the plain archive loads
    through the usual checks; the seam replaces those tensors with their decoded units.

    Raises:
        FormatError: a missing or malformed manifest or parameter sets.
        BitstreamError: a coded tensor has no place in the model.
    """
    status = VERIFIED if _digest.check(data, source) else UNVERIFIED  # before anything else
    records = _archive.read_zip(data, source)
    prefix = _archive.prefix_of(records)
    members = {r.name: r for r in records}
    if prefix + PARAMETER_SETS not in members:
        raise FormatError(f"{source}: NNR-coded archive without {prefix}{PARAMETER_SETS}")
    kind, entries, versions = _manifest(members, prefix, source)
    parameter_sets = members[prefix + PARAMETER_SETS].data
    payloads = {name: text.encode("latin-1") for name, text in versions.items()}
    for entry in entries:
        if "record" in entry:
            payloads[entry["record"]] = bytes(entry["nbytes"])
    plain = [r for r in _archive.fill(records, payloads) if not r.name.startswith(prefix + FOLDER)]
    archive = _archive.write_zip(plain)
    if kind == "state_dict":
        model = _torchio._load_state_dict_file(io.BytesIO(archive), source, mmap=False)
    else:
        model = _torchio.load_archive(archive, source)
    units: dict[str, CodedUnit] = {}
    for entry in entries:
        key = entry["key"]
        tensor = model.tensors.get(key)
        if tensor is None:
            raise BitstreamError(f"{source}: the coded tensor has no place in the model", tensor=key)
        ndu = bytes(members[entry.get("record", entry.get("unit"))].data)
        units[key] = CodedUnit(ndu, tensor.dtype, tensor.shape, tensor.role, _fitter(entry))
    model.metadata[DIGEST_KEY] = status
    return EmbeddedModel(model, parameter_sets, units)


def _fitter(entry: Mapping[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """The decoded values in their record's type and size (`_torchio._fit`)."""

    def fit(array: np.ndarray) -> np.ndarray:
        fitted = _torchio._fit(ArrayTensor(entry["key"], array), entry["dtype"], entry["shape"])
        if "record" in entry and fitted.nbytes != entry["nbytes"]:
            raise BitstreamError(
                f"decoded tensor has {fitted.nbytes} bytes; its record {entry['record']} needs {entry['nbytes']}",
                tensor=entry["key"],
            )
        return fitted

    return fit
