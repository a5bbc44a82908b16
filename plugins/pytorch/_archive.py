# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""PyTorch zip archives (`.pt2`, TorchScript, `torch.save`), read and rewritten without torch.

NOTE: this module never imports torch and never unpickles anything. It is the part of the
plugin that integration mode 2 will reuse: it lists an archive's records, says which record
holds the whole payload of which state_dict key (`payload_records`), and rewrites the archive with
chosen records emptied (`strip`) or refilled (`fill`). Records are written back in their order,
with their compression, and with data records aligned to 64 bytes as torch's own writer aligns
them (so `torch.load(mmap=True)` still works on rewritten archives).

TorchScript's `data.pkl` is read by `SafeUnpickler`, which knows only the handful of globals a
TorchScript archive uses and builds inert stand-ins for them: it maps attribute paths to
storage records and refuses anything else.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import struct
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from nnrconv.core import FormatError

__all__ = [
    "Record",
    "Slot",
    "SafeUnpickler",
    "archive_kind",
    "payload_records_pt2",
    "payload_records_script",
    "payload_records_state_dict",
    "read_zip",
    "write_zip",
]

_ALIGNMENT = 64


@dataclass(frozen=True, slots=True)
class Record:
    """One member of a zip archive: its name, bytes and zip compression method."""

    name: str
    data: bytes
    compress_type: int = zipfile.ZIP_STORED


@dataclass(frozen=True, slots=True)
class Slot:
    """Where the complete payload of one state_dict key lives: a record holding exactly its bytes."""

    key: str
    record: str
    nbytes: int


def read_zip(data: bytes, source: str) -> list[Record]:
    """Every record of a zip archive, in order.

    Raises:
        FormatError: the bytes are not a readable zip archive.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return [Record(i.filename, archive.read(i), i.compress_type) for i in archive.infolist()]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, NotImplementedError) as exc:
        raise FormatError(f"{source}: not a readable PyTorch zip archive ({exc})") from None


def write_zip(records: Iterable[Record]) -> bytes:
    """A zip archive of `records`, data of stored records aligned to 64 bytes like torch writes them."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", allowZip64=True) as archive:
        for record in records:
            info = zipfile.ZipInfo(record.name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = record.compress_type
            info.create_system = 0
            if record.compress_type == zipfile.ZIP_STORED:
                name_len = len(record.name.encode("utf-8"))
                zip64 = 20 if len(record.data) > zipfile.ZIP64_LIMIT else 0
                start = buffer.tell() + 30 + name_len + 4 + zip64
                pad = -start % _ALIGNMENT
                # Extra field id "FB" with padding, as torch's PyTorchStreamWriter writes it.
                info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
            archive.writestr(info, record.data)
    return buffer.getvalue()


def prefix_of(records: list[Record]) -> str:
    """The archive's top folder (``archive/`` or the saved file's stem)."""
    first = records[0].name if records else ""
    return first.split("/", 1)[0] + "/" if "/" in first else ""


def archive_kind(names: Iterable[str]) -> str:
    """``"pt2"``, ``"script"``, ``"pickle"`` (torch.save) or ``""`` for a zip torch did not write."""
    names = list(names)
    first = names[0] if names else ""
    prefix = first.split("/", 1)[0] + "/" if "/" in first else ""
    names = set(names)
    if f"{prefix}archive_format" in names:
        return "pt2"
    if any(n.startswith(f"{prefix}code/") for n in names) and f"{prefix}data.pkl" in names:
        return "script"
    if f"{prefix}data.pkl" in names:
        return "pickle"
    return ""


def strip(records: list[Record], names: Iterable[str]) -> list[Record]:
    """The records with the data of `names` emptied (names and order kept)."""
    empty = set(names)
    return [replace(r, data=b"") if r.name in empty else r for r in records]


def fill(records: list[Record], payloads: Mapping[str, bytes]) -> list[Record]:
    """The records with the data of the named ones replaced by `payloads`."""
    return [replace(r, data=payloads[r.name]) if r.name in payloads else r for r in records]


# -- .pt2 (torch.export) -------------------------------------------------------------------------

# torch._export.serde.schema.ScalarType -> bytes per element.
_PT2_ITEMSIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 2, 7: 4, 8: 8, 9: 4, 10: 8, 11: 16, 12: 1, 13: 2, 28: 2}
_PT2_PICKLED_PREFIXES = ("custom_obj_", "opaque_obj_")


def _contiguous(sizes: list[int], strides: list[int]) -> bool:
    expected = 1
    for size, stride in zip(reversed(sizes), reversed(strides), strict=True):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


def _pt2_configs(records: list[Record], source: str) -> dict[str, dict[str, Any]]:
    """Each weights/constants config of a .pt2 archive, by record name."""
    configs = {}
    for record in records:
        if record.name.endswith(("_weights_config.json", "_constants_config.json")):
            try:
                configs[record.name] = json.loads(record.data)["config"]
            except (ValueError, KeyError, TypeError) as exc:
                raise FormatError(f"{source}: {record.name} is not a valid payload config ({exc})") from None
    return configs


def pickled_pt2_members(records: list[Record], source: str) -> list[str]:
    """Records of a .pt2 archive that torch.export.load would unpickle with full pickle.

    `torch.export.load` (torch 2.13, `pt2_archive/_package.py`) loads weights and constants marked
    ``use_pickle`` with ``torch.load(weights_only=False)``, custom objects with
    ``torch._C._pickle_load_obj`` and opaque objects with ``pickle.loads``.
    """
    found = []
    for name, config in _pt2_configs(records, source).items():
        for fqn, meta in config.items():
            path = str(meta.get("path_name", ""))
            if meta.get("use_pickle") or path.startswith(_PT2_PICKLED_PREFIXES):
                found.append(f"{fqn!r} ({name.rsplit('/', 1)[-1]})")
    return found


def payload_records_pt2(records: list[Record], source: str) -> dict[str, Slot]:
    """state_dict key -> the weight record that holds exactly its bytes (tied keys: the first one).

    A record is listed only when every key that views it covers it whole and contiguously;
    records of partial views stay where they are.
    """
    prefix = prefix_of(records)
    sizes = {r.name: len(r.data) for r in records}
    by_record: dict[str, list[tuple[str, bool]]] = {}
    for name, config in _pt2_configs(records, source).items():
        if not name.endswith("_weights_config.json"):
            continue
        for fqn, meta in config.items():
            path = f"{prefix}data/weights/{meta.get('path_name', '')}"
            tm = meta.get("tensor_meta") or {}
            try:
                dims = [int(s["as_int"]) for s in tm["sizes"]]
                strides = [int(s["as_int"]) for s in tm["strides"]]
                offset = int(tm["storage_offset"]["as_int"])
                nbytes = math.prod(dims) * _PT2_ITEMSIZE[int(tm["dtype"])]
            except (KeyError, TypeError, ValueError):
                by_record.setdefault(path, []).append((fqn, False))
                continue
            whole = (
                not meta.get("use_pickle")
                and offset == 0
                and _contiguous(dims, strides)
                and nbytes == sizes.get(path, -1)
                and nbytes > 0
            )
            by_record.setdefault(path, []).append((fqn, whole))
    return {
        users[0][0]: Slot(users[0][0], path, sizes[path])
        for path, users in by_record.items()
        if all(whole for _, whole in users)
    }


# -- TorchScript -----------------------------------------------------------------------------------


class _StorageRef:
    __slots__ = ("key", "numel", "type_name")

    def __init__(self, key: str, type_name: str, numel: int) -> None:
        self.key, self.type_name, self.numel = key, type_name, numel


class _TensorRef:
    __slots__ = ("offset", "size", "storage", "stride")

    def __init__(self, storage: Any, offset: int, size: tuple, stride: tuple, *_: Any, **__: Any) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


class _ScriptObject:
    """Inert stand-in for a ``__torch__`` class instance: it only keeps its pickled state."""

    qualified_name = ""

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _StorageType:
    def __init__(self, name: str) -> None:
        self.name = name


def _identity(*args: Any) -> Any:
    return args[0] if len(args) == 1 else args


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _TensorRef,
    ("collections", "OrderedDict"): dict,
    ("torch.jit._pickle", "build_intlist"): _identity,
    ("torch.jit._pickle", "build_tensorlist"): _identity,
    ("torch.jit._pickle", "build_doublelist"): _identity,
    ("torch.jit._pickle", "build_boollist"): _identity,
    ("torch.jit._pickle", "restore_type_tag"): lambda value, _tag: value,
}


class SafeUnpickler(pickle.Unpickler):
    """Reads a TorchScript ``data.pkl`` into inert objects; refuses every global it does not know.

    ``__torch__.*`` classes become `_ScriptObject` subclasses, tensors become references to their
    storage record with offset, size and stride. Nothing from the pickle is ever called.
    """

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self._classes: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        if module == "__torch__" or module.startswith("__torch__."):
            qualified = f"{module}.{name}"
            if qualified not in self._classes:
                self._classes[qualified] = type(name, (_ScriptObject,), {"qualified_name": qualified})
            return self._classes[qualified]
        raise pickle.UnpicklingError(f"global {module}.{name} is not part of a TorchScript archive")

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage":
            _, storage_type, key, _location, numel = pid
            type_name = storage_type.name if isinstance(storage_type, _StorageType) else str(storage_type)
            return _StorageRef(str(key), type_name, int(numel))
        raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")


def read_script_pickle(records: list[Record], member: str, source: str) -> Any:
    """The inert object tree of a TorchScript pickle member (``data.pkl`` or ``constants.pkl``).

    Raises:
        FormatError: the member is missing, corrupt, or references a global TorchScript never
            writes (which a crafted archive could use to run code).
    """
    prefix = prefix_of(records)
    record = next((r for r in records if r.name == f"{prefix}{member}"), None)
    if record is None:
        raise FormatError(f"{source}: TorchScript archive has no {member}")
    try:
        return SafeUnpickler(record.data).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError, IndexError) as exc:
        raise FormatError(
            f"{source}: {member} is not a plain TorchScript pickle ({exc}); nnrconv never runs arbitrary pickled code"
        ) from None


def _attribute(obj: Any, name: str) -> Any:
    state = obj.state if isinstance(obj, _ScriptObject) else obj
    return state.get(name) if isinstance(state, dict) else None


def payload_records_script(
    records: list[Record], keys: Iterable[str], nbytes: Mapping[str, int], source: str
) -> dict[str, Slot]:
    """state_dict key -> the storage record holding exactly its bytes (tied keys: the first one).

    `keys` are the module's state_dict keys (attribute paths); `nbytes` their payload sizes.
    """
    prefix = prefix_of(records)
    sizes = {r.name: len(r.data) for r in records}
    root = read_script_pickle(records, "data.pkl", source)
    by_record: dict[str, list[tuple[str, bool]]] = {}
    key_refs: dict[str, set[int]] = {}
    for key in keys:
        obj = root
        for part in key.split("."):
            obj = _attribute(obj, part)
        if not isinstance(obj, _TensorRef) or not isinstance(obj.storage, _StorageRef):
            continue
        path = f"{prefix}data/{obj.storage.key}"
        whole = (
            obj.offset == 0
            and _contiguous(list(obj.size), list(obj.stride))
            and math.prod(obj.size) == obj.storage.numel
            and nbytes.get(key) == sizes.get(path, -1)
            and nbytes.get(key, 0) > 0
        )
        by_record.setdefault(path, []).append((key, whole))
        key_refs.setdefault(path, set()).add(id(obj))
    # A storage also viewed outside the state_dict (a plain tensor attribute) must stay.
    viewed: dict[str, set[int]] = {}
    for ref in _tensor_refs(root):
        viewed.setdefault(f"{prefix}data/{ref.storage.key}", set()).add(id(ref))
    return {
        users[0][0]: Slot(users[0][0], path, sizes[path])
        for path, users in by_record.items()
        if all(whole for _, whole in users) and viewed.get(path, set()) <= key_refs.get(path, set())
    }


def payload_records_state_dict(records: list[Record], nbytes: Mapping[str, int], source: str) -> dict[str, Slot]:
    """state_dict key -> the storage record holding exactly its bytes, for a ``torch.save`` archive.

    The archive's ``data.pkl`` is read with `SafeUnpickler` (it holds only an ``OrderedDict`` of
    tensors); `nbytes` are the payload sizes of the keys. Keys sharing a storage are left out.
    """
    prefix = prefix_of(records)
    sizes = {r.name: len(r.data) for r in records}
    root = read_script_pickle(records, "data.pkl", source)
    if not isinstance(root, dict):
        return {}
    users: dict[str, list[str]] = {}
    slots = {}
    for key, ref in root.items():
        if not isinstance(ref, _TensorRef) or not isinstance(ref.storage, _StorageRef):
            continue
        path = f"{prefix}data/{ref.storage.key}"
        users.setdefault(path, []).append(str(key))
        if (
            ref.offset == 0
            and _contiguous(list(ref.size), list(ref.stride))
            and math.prod(ref.size) == ref.storage.numel
            and nbytes.get(str(key)) == sizes.get(path, -1)
            and nbytes.get(str(key), 0) > 0
        ):
            slots[str(key)] = Slot(str(key), path, sizes[path])
    return {key: slot for key, slot in slots.items() if len(users[slot.record]) == 1}


def _tensor_refs(root: Any) -> list[_TensorRef]:
    """Every tensor reference in an inert object tree (iteratively: trees can be deep)."""
    found, stack, seen = [], [root], set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, _TensorRef):
            if isinstance(obj.storage, _StorageRef):
                found.append(obj)
        elif isinstance(obj, _ScriptObject):
            stack.append(getattr(obj, "state", None))
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple)):
            stack.extend(obj)
    return found
