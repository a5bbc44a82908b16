# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The container digest of a `*.nnr.pb`: integrity of the frozen graph around the NNR units.

Carriage: one more `Const` node, `nnr/container_digest` (DT_STRING scalar whose value is the text
of `nnrconv.core.seal_digest`), written as the file's first bytes: a GraphDef's `node` is a
repeated field (number 1), so the prepended bytes are one more node for any reader, and
TensorFlow imports a graph holding it (an unused constant). First rather than last, so a file
cut short still holds its digest and is refused (its parts no longer match) instead of loading
as an older file without one. Reading, nnrconv removes the node, so no restored graph carries a
stale digest.

Regions (raw bytes as they are in the file): every top-level field of the GraphDef but the
digest node, each node on its own (named by node name and op), the function library split into
its functions, and `versions`. The NNR units inside coded constants are covered too (their node
is one region); the integrity record in `nnr/parameter_sets` checks them once more.

A single damaged bit cannot hide the digest: the node is recognised by its name or by its value
(`nnrconv-container/1 …`), and its bytes must be exactly those nnrconv writes for its text, so a
flip in its framing, type or shape is reported as well.
"""

from __future__ import annotations

import mmap
from pathlib import Path

from nnrconv.core import BitstreamError, FormatError, Region, seal_digest
from nnrconv.core._digest import MAGIC
from nnrconv.core._protowalk import Field, fields, first_bytes, length_field, varint_field
from nnrconv_tensorflow import _digest_span

__all__ = ["NODE_NAME", "check", "digest_field", "is_sealed", "seal", "strip"]

NODE_NAME = "nnr/container_digest"
_NAME_BYTES = NODE_NAME.encode("ascii")
_MAGIC_BYTES = MAGIC.encode("ascii") + b" sha256:"
_NODE, _LIBRARY = 1, 2
_GRAPH_FIELDS = {1: "node", 2: "library", 3: "version", 4: "versions", 5: "debug_info"}
_LIBRARY_FIELDS = {1: "function", 2: "gradient", 3: "registered_gradients"}
_DT_STRING = 7


def digest_field(text: str) -> bytes:
    """The top-level `node` field nnrconv puts first: `Const` `nnr/container_digest` holding `text`."""
    tensor = varint_field(1, _DT_STRING) + length_field(2, b"") + length_field(8, text.encode("ascii"))
    dtype_entry = length_field(1, b"dtype") + length_field(2, varint_field(6, _DT_STRING))
    value_entry = length_field(1, b"value") + length_field(2, length_field(8, tensor))
    node = length_field(1, _NAME_BYTES) + length_field(2, b"Const")
    node += length_field(5, dtype_entry) + length_field(5, value_entry)
    return length_field(_NODE, node)


def is_sealed(data: bytes | mmap.mmap) -> bool:
    """Whether the bytes hold a digest node (one damaged bit hides its name or its value, not both)."""
    return data.find(_MAGIC_BYTES) >= 0 or data.find(_NAME_BYTES) >= 0


def _digest_text(data: memoryview, field: Field) -> str | None:
    """The text of a digest node, when its bytes are exactly the node nnrconv writes for it."""
    node = memoryview(bytes(data[field[2] : field[3]]))
    try:
        for number, _, payload, end in fields(node, 0, len(node)):
            if number == 5 and first_bytes(node, payload, end, 1) == b"value":
                attr = memoryview(first_bytes(node, payload, end, 2) or b"")
                tensor = memoryview(first_bytes(attr, 0, len(attr), 8) or b"")
                text = (first_bytes(tensor, 0, len(tensor), 8) or b"").decode("ascii")
                return text if digest_field(text) == bytes(data[field[1] : field[3]]) else None
    except (ValueError, UnicodeDecodeError):
        return None
    return None


def _node_label(data: memoryview, field: Field) -> str:
    name = first_bytes(data, field[2], field[3], 1)
    op = first_bytes(data, field[2], field[3], 2)
    if name is None:
        return ""
    return f" {name.decode('utf-8', 'replace')!r}" + (f" ({op.decode('utf-8', 'replace')})" if op else "")


def _function_label(data: memoryview, field: Field) -> str:
    signature = first_bytes(data, field[2], field[3], 1)
    if signature is None:
        return ""
    name = first_bytes(memoryview(signature), 0, len(signature), 1)
    return "" if name is None else f" {name.decode('utf-8', 'replace')!r}"


def _regions(raw: bytes, source: str, *, sealing: bool = False) -> tuple[list[Region], str | None]:
    """The regions of a serialized GraphDef and the digest text it carries (None: no digest).

    Raises:
        BitstreamError: a sealed file whose bytes do not frame as a GraphDef, or whose digest
            node is damaged or not unique.
    """
    sealed = is_sealed(raw)
    if not sealed and not sealing:
        return [], None
    data = memoryview(raw)
    try:
        top = list(fields(data, 0, len(data)))
    except ValueError as exc:
        if sealed:
            raise BitstreamError(f"{source}: the GraphDef is damaged (framing breaks at byte offset {exc})") from None
        return [], None
    regions: list[Region] = []
    texts: list[str] = []
    counts: dict[str, int] = {}

    def add(name: str, field: Field, label: str = "") -> None:
        index = counts.get(name, 0)
        counts[name] = index + 1
        regions.append(Region(f"{name}[{index}]{label}", data[field[1] : field[3]], field[1]))

    for field in top:
        number, start, payload, end = field
        if number == _NODE:
            if first_bytes(data, payload, end, 1) == _NAME_BYTES or raw.find(_MAGIC_BYTES, payload, end) >= 0:
                text = _digest_text(data, field)
                if text is None:
                    raise BitstreamError(f"{source}: the container digest node is damaged (byte offset {start})")
                texts.append(text)
                continue
            add("node", field, _node_label(data, field))
        elif number == _LIBRARY:
            regions.append(Region("library (framing)", data[start:payload], start, framing=True))
            try:
                for sub in fields(data, payload, end):
                    label = _function_label(data, sub) if sub[0] == 1 else ""
                    add(f"library.{_LIBRARY_FIELDS.get(sub[0], f'field {sub[0]}')}", sub, label)
            except ValueError as exc:
                if sealed:
                    raise BitstreamError(f"{source}: the function library is damaged (byte offset {exc})") from None
                return [], None
        else:
            add(_GRAPH_FIELDS.get(number, f"field {number}"), field)
    if len(texts) > 1:
        raise BitstreamError(f"{source}: the graph carries {len(texts)} container digests; one was expected")
    if not texts and sealed and not sealing:
        raise BitstreamError(f"{source}: the container digest node is damaged (its name or value is not in a node)")
    return regions, texts[0] if texts else None


def _max_bytes(size: int) -> int:
    """Room for the digest text: within 0.5 % of the file + 1 KB with the node around it."""
    return int(size * 0.004) + 900


def seal(path: Path) -> None:
    """Put the digest node in front of the frozen graph at `path`.

    Raises:
        FormatError: the graph already holds a digest-like node, or the file cannot be written.
    """
    try:
        data = path.read_bytes()
        if is_sealed(data):
            raise FormatError(f"{path}: the graph already holds a {NODE_NAME!r} node or digest text")
        regions, _ = _regions(data, str(path), sealing=True)
        path.write_bytes(digest_field(seal_digest(regions, _max_bytes(len(data)))) + data)
    except OSError as exc:
        raise FormatError(f"{path}: cannot write: {exc.strerror}") from exc


def check(data: bytes, path: Path) -> bool:
    """Verify the digest of the frozen graph `data`; True when verified, False when it has none.

    Raises:
        BitstreamError: a part differs from the digest (the first one named, with its byte
            offset), or the digest or the file's framing is damaged.
    """
    regions, text = _regions(data, str(path))
    if text is None:
        return False
    _digest_span.check_text(text, regions, str(path))
    return True


def strip(graph_def) -> None:  # type: ignore[no-untyped-def]
    """Remove the digest node from a parsed GraphDef, so nothing written from it carries it."""
    for index in reversed(range(len(graph_def.node))):
        if graph_def.node[index].name == NODE_NAME:
            del graph_def.node[index]
