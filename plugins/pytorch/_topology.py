# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The byte layout of a PyTorch topology inside an NNR_TPL unit (topology_storage_format 3).

Three cases, told apart by the first bytes:

- **empty** `topology_data`: a bare state_dict whose tensors all travel as NDUs, named by their
  state_dict keys. This is exactly what NNCodec writes for NNR_TPL_PYT, and what nnrconv writes
  too whenever it can, so either decoder reads the other's streams.
- **`TEXT_MAGIC`** (the line ``nnrconv-pytorch state_dict 1\\n``) followed by compact UTF-8
  JSON, ``{"keys": [every key, in order], "shapes": {key: shape}, "dtypes": {key: type name}}``:
  a state dict whose tensors all travel as NDUs but need their original element type or shape
  back (int64 ``num_batches_tracked`` that NNR carries as int32 ``[1]``, 0-d tensors). The bytes
  hold no NUL and are valid UTF-8, and are never deflated, so NNCodec 2.1.3 (which reads
  `topology_data` as a NUL-terminated string) reads them, and ignores them as it ignores all
  NNR_TPL_PYT topology data.
- **`MAGIC`** (16 bytes, ``b"NNRCONV-PYTORCH\\0"``), a 4-byte little-endian length N, N bytes of
  UTF-8 JSON (the manifest), then the body:

  ========== ================================== ===============================================
  kind       body                               manifest
  ========== ================================== ===============================================
  program    the `.pt2` zip archive, with the   ``{"version": 1, "kind": "program",
             records of carried weights empty   "stripped": [{"key", "record", "nbytes"}]}``
  script     the TorchScript zip archive, same  same, ``"kind": "script"``
  state_dict a safetensors blob of the tensors  ``{"version": 1, "kind": "state_dict",
             no NDU carries (bool, bf16, ...)   "keys": [every key, in order],
                                                "shapes": {carried key: shape},
                                                "dtypes": {carried key: type}}``
  ========== ================================== ===============================================

Nothing in the layout is pickled: the manifest is JSON, the body a zip archive or safetensors.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

from nnrconv.core import BitstreamError, DType, TopologyTensor

__all__ = ["MAGIC", "TEXT_MAGIC", "Topology", "expected_tensors", "is_text", "pack", "pack_text", "unpack"]

MAGIC = b"NNRCONV-PYTORCH\x00"
TEXT_MAGIC = b"nnrconv-pytorch state_dict 1\n"
VERSION = 1
KINDS = ("program", "script", "state_dict")


@dataclass(slots=True)
class Topology:
    """A parsed PyTorch topology: the manifest and the body bytes."""

    kind: str
    body: bytes = b""
    manifest: dict[str, Any] = field(default_factory=dict)


def pack(kind: str, manifest: dict[str, Any], body: bytes) -> bytes:
    """MAGIC + length + manifest JSON + body."""
    text = json.dumps({"version": VERSION, "kind": kind, **manifest}, separators=(",", ":")).encode("utf-8")
    return MAGIC + struct.pack("<I", len(text)) + text + body


def pack_text(manifest: dict[str, Any]) -> bytes:
    """TEXT_MAGIC + compact JSON of a state dict manifest: UTF-8 without NUL bytes.

    JSON escapes every control character (NUL included) inside strings, so no key can bring one in.
    """
    text = json.dumps(manifest, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return TEXT_MAGIC + text


def is_text(data: bytes) -> bool:
    """Whether topology bytes are the text form, which must stay readable (never deflated)."""
    return data.startswith(TEXT_MAGIC)


def _manifest_json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BitstreamError(f"PyTorch topology manifest is not valid JSON ({exc})") from None


def unpack(data: bytes) -> Topology:
    """Parse topology bytes; empty bytes are a bare state_dict (NNCodec's NNR_TPL_PYT).

    Raises:
        BitstreamError: the bytes are neither empty nor an nnrconv PyTorch topology, or the
            manifest is malformed or of a later version.
    """
    if not data:
        return Topology("state_dict", b"", {"kind": "state_dict"})
    if data.startswith(TEXT_MAGIC):
        manifest = _manifest_json(data[len(TEXT_MAGIC) :])
        if not (
            isinstance(manifest, dict)
            and isinstance(manifest.get("keys", []), list)
            and all(isinstance(manifest.get(f, {}), dict) for f in ("shapes", "dtypes"))
        ):
            raise BitstreamError("PyTorch state_dict topology is not a manifest (keys, shapes, dtypes)")
        return Topology("state_dict", b"", {**manifest, "kind": "state_dict"})
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise BitstreamError(
            "NNR_TPL_PYT topology_data is neither empty (a bare state_dict) nor an nnrconv PyTorch topology"
        )
    (length,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    if start + length > len(data):
        raise BitstreamError(f"PyTorch topology manifest of {length} bytes overruns the topology")
    manifest = _manifest_json(data[start : start + length])
    if not isinstance(manifest, dict) or manifest.get("kind") not in KINDS:
        raise BitstreamError("PyTorch topology manifest names no known kind")
    if manifest.get("version") != VERSION:
        raise BitstreamError(
            f"PyTorch topology version {manifest.get('version')!r} is not supported (this nnrconv reads {VERSION})"
        )
    return Topology(manifest["kind"], data[start + length :], manifest)


def expected_tensors(data: bytes) -> list[TopologyTensor] | None:
    """The tensors NDUs must bring, as the manifest declares them (an archive's stripped records
    give type and byte size, a state dict's carried keys type and shape); None for the empty
    topology of a bare state dict, whose keys only the NDUs name.

    Raises:
        BitstreamError: the topology or its manifest is malformed.
    """
    if not data:
        return None
    parsed = unpack(data)
    try:
        if parsed.kind == "state_dict":
            shapes, dtypes = parsed.manifest.get("shapes", {}), parsed.manifest.get("dtypes", {})
            result = []
            for key in parsed.manifest.get("keys", []):
                if key in shapes:
                    dtype, shape = DType.from_name(dtypes.get(key, "float32")), tuple(int(d) for d in shapes[key])
                    result.append(TopologyTensor(key, dtype, shape, dtype.storage_nbytes(math.prod(shape))))
            return result
        return [
            TopologyTensor(e["key"], DType.from_name(e.get("dtype", "float32")), None, int(e["nbytes"]))
            for e in parsed.manifest.get("stripped", [])
        ]
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise BitstreamError(f"the PyTorch topology's manifest is malformed: {exc}") from None
