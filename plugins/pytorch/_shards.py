# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Hugging Face checkpoint layouts: sharded safetensors with their index, and the files beside them.

A sharded checkpoint is a folder holding ``model.safetensors.index.json`` (``{"metadata": {...},
"weight_map": {tensor: shard file}}``) and the shards ``model-0000N-of-0000M.safetensors``, each
a safetensors file with its own ``__metadata__``; config and tokenizer files sit next to them.
nnrconv reads such a checkpoint by its index or its folder, as one state dict in shard order,
and records the layout (`Layout`): index name and metadata, per shard its file name, metadata and
keys, and the small text and tokenizer files beside the weights. The layout travels in the
PyTorch topology's JSON manifest (``"layout"``, see `_topology`), so decoding writes the same
shards, names, dtypes and metadata back; files travel there too (UTF-8 text as is, other files
base64), which keeps them inside the NNR_TPL unit of storage format 3, where NNCodec reads and
ignores them. Other files (other weight formats, large or unexpected files) are left out, and
`Layout.left_out` names them.

Every name read back from a bitstream is checked to be a plain file name before anything is
written, so a crafted stream cannot write outside the output folder.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnrconv.core import BitstreamError, FormatError, Tensor
from nnrconv_pytorch import _safetensors

__all__ = [
    "INDEX_SUFFIX",
    "Layout",
    "Shard",
    "find_index",
    "is_checkpoint_folder",
    "layout_from_manifest",
    "left_out_note",
    "read_checkpoint",
    "write_checkpoint",
    "write_safetensors",
]

INDEX_SUFFIX = ".safetensors.index.json"
CARRIED_SUFFIXES = (".json", ".txt", ".model", ".tiktoken", ".jinja", ".md", ".yaml", ".py")
"""Files beside the weights that travel with them: configs, tokenizers, chat templates, cards."""
CARRIED_LIMIT = 64 * 1024 * 1024
"""Total size of the files carried in the topology; larger sets are left to the user."""
SHARD_LIMIT = 5 * 1024**3
"""Bytes per shard when a model without a shard layout is written with an index (HF's default)."""


@dataclass(slots=True)
class Shard:
    """One safetensors file of a checkpoint: its name, `__metadata__` and keys in header order."""

    file: str | None
    metadata: dict[str, str] | None
    keys: list[str]


@dataclass(slots=True)
class Layout:
    """How a checkpoint's tensors are laid out in files, and what travels with them."""

    shards: list[Shard]
    index: str | None = None
    index_metadata: dict[str, Any] | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)
    index_text: str | None = None

    def to_manifest(self) -> dict[str, Any]:
        """The JSON form kept in the PyTorch topology manifest."""
        files = {}
        for name, data in self.files.items():
            try:
                files[name] = {"text": data.decode("utf-8")}
            except UnicodeDecodeError:
                files[name] = {"base64": base64.b64encode(data).decode("ascii")}
        return {
            "index": self.index,
            "index_metadata": self.index_metadata,
            "shards": [{"file": s.file, "metadata": s.metadata, "keys": s.keys} for s in self.shards],
            "files": files,
            "index_text": self.index_text,
        }


def _plain_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise BitstreamError(f"PyTorch topology layout: {what} {name!r} is not a plain file name")
    return name


def layout_from_manifest(entry: object) -> Layout:
    """Parse (and check) the manifest's ``"layout"``.

    Raises:
        BitstreamError: a malformed layout, or a file name that is not a plain name.
    """
    if not isinstance(entry, dict) or not isinstance(entry.get("shards"), list):
        raise BitstreamError("PyTorch topology layout has no list of shards")
    shards = []
    for item in entry["shards"]:
        if not isinstance(item, dict) or not isinstance(item.get("keys"), list):
            raise BitstreamError("PyTorch topology layout: a shard without keys")
        file = item.get("file")
        metadata = item.get("metadata")
        if metadata is not None and not (
            isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
        ):
            raise BitstreamError("PyTorch topology layout: shard metadata is not a string map")
        shards.append(Shard(None if file is None else _plain_name(file, "shard"), metadata, list(item["keys"])))
    files: dict[str, bytes] = {}
    for name, content in (entry.get("files") or {}).items():
        name = _plain_name(name, "file")
        try:
            files[name] = (
                content["text"].encode("utf-8")
                if "text" in content
                else base64.b64decode(content["base64"], validate=True)
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise BitstreamError(f"PyTorch topology layout: file {name!r} is malformed") from None
    index = entry.get("index")
    metadata = entry.get("index_metadata")
    text = entry.get("index_text")
    return Layout(
        shards,
        None if index is None else _plain_name(index, "index"),
        metadata if isinstance(metadata, dict) else None,
        files,
        index_text=text if isinstance(text, str) else None,
    )


# -- reading -----------------------------------------------------------------------------------


def find_index(folder: Path) -> Path | None:
    """The folder's ``*.safetensors.index.json`` (``model.`` first), if there is one."""
    found = sorted(folder.glob("*" + INDEX_SUFFIX), key=lambda p: (p.name != "model" + INDEX_SUFFIX, p.name))
    return found[0] if found else None


def is_checkpoint_folder(path: Path) -> bool:
    """A folder with a safetensors index or safetensors files (a Hugging Face checkpoint)."""
    return path.is_dir() and (find_index(path) is not None or any(path.glob("*.safetensors")))


def _read_index(path: Path) -> tuple[dict[str, str], dict[str, Any] | None]:
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path}: not a readable safetensors index ({exc})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise FormatError(f"{path}: a safetensors index needs a weight_map of tensor -> shard file")
    for file in set(weight_map.values()):
        if "/" in file or "\\" in file or file in (".", ".."):
            raise FormatError(f"{path}: shard {file!r} is not a file beside the index")
    metadata = index.get("metadata")
    return weight_map, metadata if isinstance(metadata, dict) else None


def read_checkpoint(path: Path) -> tuple[dict[str, Tensor], Layout]:
    """The tensors (memory-mapped, in shard order) and layout of a checkpoint index or folder.

    Raises:
        FormatError: the index or a shard is unreadable, a shard is missing, a tensor sits in
            two shards, or the index and the shards disagree.
    """
    folder = path if path.is_dir() else path.parent
    index_path = find_index(path) if path.is_dir() else path
    if index_path is not None:
        weight_map, index_metadata = _read_index(index_path)
        files = list(dict.fromkeys(weight_map.values()))
        files.sort()  # model-00001-of-0000N first, as transformers writes and reads them
    else:
        weight_map, index_metadata = {}, None
        files = sorted(p.name for p in folder.glob("*.safetensors"))
    tensors: dict[str, Tensor] = {}
    shards = []
    for file in files:
        shard_path = folder / file
        if not shard_path.is_file():
            raise FormatError(f"{index_path}: shard {file} is missing")
        part = _safetensors.read(shard_path)
        for key in part:
            if key in tensors:
                raise FormatError(f"{shard_path}: tensor {key!r} is also in another shard")
            if weight_map and weight_map.get(key) != file:
                raise FormatError(f"{shard_path}: tensor {key!r} is not mapped to this shard by {index_path.name}")
        tensors.update(part)
        shards.append(Shard(file, _safetensors.read_metadata(shard_path), list(part)))
    missing = [k for k in weight_map if k not in tensors]
    if missing:
        raise FormatError(f"{index_path}: tensor {missing[0]!r} is in no shard")
    taken = {index_path.name if index_path else "", *files}
    layout = Layout(shards, index_path.name if index_path else None, index_metadata)
    if index_path is not None:
        layout.index_text = index_path.read_text(encoding="utf-8")
    _collect_files(folder, taken, layout)
    note = left_out_note(layout)
    if note is not None:
        logging.getLogger("nnrconv").warning("%s: %s", folder, note)
    return tensors, layout


def _collect_files(folder: Path, taken: set[str], layout: Layout) -> None:
    total = 0
    for entry in sorted(folder.iterdir()):
        if entry.name in taken or entry.name.startswith(".") or not entry.is_file():
            continue
        size = entry.stat().st_size
        if entry.suffix.lower() in CARRIED_SUFFIXES and total + size <= CARRIED_LIMIT:
            layout.files[entry.name] = entry.read_bytes()
            total += size
        else:
            layout.left_out.append(entry.name)


# -- writing -----------------------------------------------------------------------------------


def write_safetensors(path: Path, tensors: Iterable[Tensor], metadata: Mapping[str, str] | None = None) -> int:
    """Write a safetensors file tensor by tensor (the header first, from dtypes and shapes), so
    that only one tensor's data is in memory at a time. Returns the data section's size.

    Raises:
        FormatError: a tensor's element type has no safetensors code.
    """
    tensors = list(tensors)
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for tensor in tensors:
        code = _safetensors.code_of(tensor)
        size = tensor.dtype.storage_nbytes(math.prod(tensor.shape))
        header[tensor.name] = {"dtype": code, "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for tensor in tensors:
            f.write(tensor.tobytes())
            release = getattr(tensor, "release", None)
            if release is not None:
                release()
    return offset


def _default_shards(tensors: Mapping[str, Tensor], stem: str) -> list[Shard]:
    groups: list[list[str]] = [[]]
    size = 0
    for key, tensor in tensors.items():
        if groups[-1] and size + tensor.nbytes > SHARD_LIMIT:
            groups.append([])
            size = 0
        groups[-1].append(key)
        size += tensor.nbytes
    count = len(groups)
    return [
        Shard(f"{stem}-{i + 1:05d}-of-{count:05d}.safetensors", {"format": "pt"}, keys) for i, keys in enumerate(groups)
    ]


def write_checkpoint(index_path: Path, tensors: Mapping[str, Tensor], layout: Layout | None) -> None:
    """Write an index, its shards and the carried files into the index's folder.

    With a layout, the same shards (names, keys in order, metadata) as were read; without one,
    shards of at most 5 GB named after the index (``model-00001-of-00002.safetensors``).
    """
    folder = index_path.parent
    stem = index_path.name[: -len(INDEX_SUFFIX)] if index_path.name.endswith(INDEX_SUFFIX) else "model"
    if layout is not None and layout.index is not None and all(s.file for s in layout.shards):
        shards = layout.shards
        placed = {k for s in shards for k in s.keys}
        extra = [k for k in tensors if k not in placed]
        if extra:
            shards = [*shards, Shard(f"{stem}-extra.safetensors", {"format": "pt"}, extra)]
    else:
        shards = _default_shards(tensors, stem)
    weight_map: dict[str, str] = {}
    total = 0
    for shard in shards:
        assert shard.file is not None
        present = [tensors[k] for k in shard.keys if k in tensors]
        total += write_safetensors(folder / shard.file, present, shard.metadata)
        weight_map.update({t.name: shard.file for t in present})
    metadata = dict(layout.index_metadata or {}) if layout is not None else {}
    metadata["total_size"] = total
    index = {"metadata": metadata, "weight_map": weight_map}
    original = layout.index_text if layout is not None else None
    if original is not None and _same_json(original, index):
        index_path.write_text(original, encoding="utf-8")  # as it was, byte for byte
    else:
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for name, data in (layout.files if layout is not None else {}).items():
        if name != index_path.name and name not in weight_map.values():
            (folder / name).write_bytes(data)


def _same_json(text: str, value: object) -> bool:
    try:
        return json.loads(text) == value
    except json.JSONDecodeError:
        return False


def left_out_note(layout: Layout | None) -> str | None:
    """One line naming the files beside the weights that do not travel, or None."""
    if layout is None or not layout.left_out:
        return None
    names = ", ".join(layout.left_out[:5]) + (" …" if len(layout.left_out) > 5 else "")
    return f"not carried (copy them yourself): {names}"
