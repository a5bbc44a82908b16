# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The container digest of a `.nnr.onnx`: integrity of its graph, attributes and uncoded tensors.

Carriage: one `metadata_props` entry (ModelProto field 14, a `StringStringEntryProto`) with key
`org.mpeg.nnr.container_digest` and as value the text of `nnrconv.core.seal_digest`, appended
as the last bytes of the file. Protobuf merges a repeated field wherever it occurs, so any ONNX
reader (onnx.load, onnxruntime) sees one more metadata entry and nothing else.

Regions (what the digest covers, by raw bytes as they are in the file): every top-level field of
the ModelProto except the digest entry itself, the graph split into its fields (each node, each
initializer, input, output, ... named `graph.node[12]`), then each external data file the model
references. The digest therefore does not depend on where the entry sits, and a tool that
rereads and rewrites the model unchanged (protobuf reserializes the same bytes) keeps it valid.
Reading, the entry is removed from the model, so nothing written from it carries a stale one.

A single damaged bit cannot hide the digest: the entry is recognised by its key or by its value
(`nnrconv-container/1 …`), either one damaged is reported, and a file that holds the value's
bytes anywhere but in a well-formed entry is refused as damaged.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from nnrconv.core import BitstreamError, Region, check_digest, seal_digest
from nnrconv.core._digest import MAGIC
from nnrconv.core._protowalk import Field, fields

__all__ = ["KEY", "check", "refuse_if_sealed", "seal", "strip"]

KEY = "org.mpeg.nnr.container_digest"
_MAGIC_BYTES = MAGIC.encode("ascii") + b" sha256:"
_KEY_BYTES = KEY.encode("ascii")
_METADATA_FIELD = 14
_GRAPH_FIELD = 7
_MODEL_FIELDS = {
    1: "ir_version",
    2: "producer_name",
    3: "producer_version",
    4: "domain",
    5: "model_version",
    6: "doc_string",
    7: "graph",
    8: "opset_import",
    14: "metadata_props",
    20: "training_info",
    25: "functions",
    26: "configuration",
}
_GRAPH_FIELDS = {
    1: "node",
    2: "name",
    5: "initializer",
    10: "doc_string",
    11: "input",
    12: "output",
    13: "value_info",
    14: "quantization_annotation",
    15: "sparse_initializer",
    16: "metadata_props",
}

def _entry(data: memoryview, field: Field) -> tuple[str, str] | None:
    """Key and value of a metadata entry, or None when its bytes are not one."""
    key = value = b""
    try:
        for number, _, payload, end in fields(data, field[2], field[3]):
            if number == 1:
                key = bytes(data[payload:end])
            elif number == 2:
                value = bytes(data[payload:end])
        return key.decode("utf-8"), value.decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


def _node_label(data: memoryview, start: int, end: int) -> str:
    """` (op Conv -> 'y')`: a node's op type and first output, to name it in errors."""
    op = output = ""
    try:
        for number, _, payload, stop in fields(data, start, end):
            if number == 2 and not output:
                output = bytes(data[payload:stop]).decode("utf-8", "replace")
            elif number == 4:
                op = bytes(data[payload:stop]).decode("utf-8", "replace")
    except ValueError:
        return ""
    return f" ({op} -> {output!r})" if op or output else ""


def _regions(raw: bytes, source: str, *, sealing: bool = False) -> tuple[list[Region], str | None]:
    """The regions of a serialized ModelProto, and the digest text it carries (None: none).

    Raises:
        BitstreamError: the bytes do not frame as a message while they carry a digest, or the
            digest entry is damaged.
    """
    sealed = _MAGIC_BYTES in raw
    if not sealed and not sealing and _KEY_BYTES not in raw:
        return [], None  # no digest (a flip can hide the key or the value, never both): nothing to scan
    data = memoryview(raw)
    try:
        top = list(fields(data, 0, len(data)))
    except ValueError as exc:
        if sealed:
            raise BitstreamError(f"{source}: the ONNX model is damaged (framing breaks at byte offset {exc})") from None
        return [], None
    regions: list[Region] = []
    texts: list[str] = []
    counts: dict[str, int] = {}

    def add(name: str, start: int, end: int, payload: int = 0) -> None:
        index = counts.get(name, 0)
        counts[name] = index + 1
        label = f"{name}[{index}]" + (_node_label(data, payload, end) if name == "graph.node" else "")
        regions.append(Region(label, data[start:end], start))

    for field in top:
        number, start, payload, end = field
        if number == _METADATA_FIELD:
            entry = _entry(data, field)
            if entry is not None and (entry[0] == KEY or entry[1].startswith(MAGIC)):
                if entry[0] != KEY:
                    raise BitstreamError(f"{source}: the container digest entry is damaged (byte offset {start})")
                texts.append(entry[1])
                continue
        name = _MODEL_FIELDS.get(number, f"field {number}")
        if number != _GRAPH_FIELD:
            add(name, start, end)
            continue
        regions.append(Region("graph (framing)", data[start:payload], start, framing=True))
        try:
            for sub, sub_start, sub_payload, sub_end in fields(data, payload, end):
                add(f"graph.{_GRAPH_FIELDS.get(sub, f'field {sub}')}", sub_start, sub_end, sub_payload)
        except ValueError as exc:
            if sealed:
                raise BitstreamError(f"{source}: the ONNX graph is damaged (byte offset {exc})") from None
            return [], None
    if len(texts) > 1:
        raise BitstreamError(f"{source}: the model carries {len(texts)} container digests; one was expected")
    if not texts and sealed:
        raise BitstreamError(f"{source}: the container digest entry is damaged (its value is not in a metadata entry)")
    return regions, texts[0] if texts else None


def _external_files(proto: onnx.ModelProto) -> list[str]:
    """The external data files the model's tensors reference (attributes included), in first-use order."""
    from onnx.external_data_helper import _get_all_tensors

    seen: dict[str, None] = {}
    for tensor in _get_all_tensors(proto):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    seen.setdefault(entry.value, None)
    return list(seen)


def _with_external(regions: list[Region], proto: onnx.ModelProto, base: Path) -> list[Region]:
    result = list(regions)
    for location in _external_files(proto):
        path = base / location
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise BitstreamError(f"{path}: cannot read the external data the container digest covers: {exc}") from None
        result.append(Region(f"external data {location}", content, 0))
    return result


def _max_bytes(size: int) -> int:
    """Room for the digest text: within 0.5 % of the file + 1 KB with the entry's framing."""
    return int(size * 0.004) + 900


def seal(path: Path) -> None:
    """Append the container digest entry to the ONNX file at `path` (external data included)."""
    data = path.read_bytes()
    proto = onnx.ModelProto()
    proto.ParseFromString(data)
    regions, _ = _regions(data, str(path), sealing=True)
    text = seal_digest(_with_external(regions, proto, path.parent), _max_bytes(len(data)))
    tail = onnx.ModelProto()
    tail.metadata_props.add(key=KEY, value=text)
    with open(path, "ab") as f:
        f.write(tail.SerializeToString())


def check(data: bytes, proto: onnx.ModelProto, path: Path) -> bool:
    """Verify the container digest of the file `data` (parsed as `proto`); True when verified,
    False when the file carries none (written before container digests, or not by nnrconv).

    Raises:
        BitstreamError: the file or its external data differ from the digest (the first
            differing part named), or the digest is damaged.
    """
    source = str(path)
    regions, text = _regions(data, source)
    if text is None:
        return False
    check_digest(text, _with_external(regions, proto, path.parent), source)
    return True


def refuse_if_sealed(data: bytes, path: Path, reason: str) -> None:
    """A file that does not parse is damaged (exit 4), not of another format, when it is sealed.

    Raises:
        BitstreamError: `data` holds a container digest.
    """
    if _MAGIC_BYTES in data:
        raise BitstreamError(f"{path}: the ONNX model is damaged ({reason}); it carries a container digest")


def strip(proto: onnx.ModelProto) -> None:
    """Remove the digest entry, so that nothing written from the model carries a stale one."""
    kept = [entry for entry in proto.metadata_props if entry.key != KEY]
    if len(kept) != len(proto.metadata_props):
        del proto.metadata_props[:]
        proto.metadata_props.extend(kept)
