# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`OnnxFormat`: the `FormatPlugin` for ONNX `ModelProto` files.

NOTE: this module is imported when plugins are discovered, so it must not import ``onnx``.
Every method imports the submodule it needs (`_io`, `_weights`, `_graph`), and those import
``onnx`` at their top.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from nnrconv.core import (
    EmbeddedModel,
    FormatPlugin,
    InputSpec,
    Model,
    Tensor,
    TopologyTensor,
    UnsupportedError,
    WeightInput,
    read_varint,
)

__all__ = ["EXTERNAL_DATA_THRESHOLD", "OnnxFormat"]

# A serialized protobuf message cannot exceed 2 GiB; models whose weights would push the file
# past this size keep their weights in a side file (`<file name>.data`). Tests lower it.
EXTERNAL_DATA_THRESHOLD = 2**31 - 1

# ModelProto field number -> protobuf wire type, for sniffing by content (onnx.proto3).
_MODEL_FIELDS: dict[int, int] = {
    1: 0,  # ir_version
    2: 2,  # producer_name
    3: 2,  # producer_version
    4: 2,  # domain
    5: 0,  # model_version
    6: 2,  # doc_string
    7: 2,  # graph
    8: 2,  # opset_import
    14: 2,  # metadata_props
    20: 2,  # training_info
    25: 2,  # functions
    26: 2,  # configuration
}
_STRING_FIELDS = frozenset({2, 3, 4})
_MAX_IR_VERSION = 64


def looks_like_model_proto(head: bytes) -> bool:
    """Whether `head` plausibly starts a serialized ONNX ModelProto.

    Every exporter writes `ir_version` (field 1, a small varint) first. The fields after it
    must be ModelProto fields with their wire types, and short string fields (producer name,
    version, domain) must be printable, which tells ONNX apart from other protobufs that also
    start with a small varint in field 1 (a TensorFlow SavedModel, for one).
    """
    if len(head) < 2 or head[0] != 0x08:
        return False
    parsed = read_varint(head, 1)
    if parsed is None or not 1 <= parsed[0] <= _MAX_IR_VERSION:
        return False
    pos, fields = parsed[1], 0
    while pos < len(head):
        tag = read_varint(head, pos)
        if tag is None:
            break
        field, wire = tag[0] >> 3, tag[0] & 7
        if _MODEL_FIELDS.get(field) != wire:
            return False
        fields += 1
        pos = tag[1]
        value = read_varint(head, pos)
        if value is None:
            break
        if wire == 0:
            pos = value[1]
            continue
        length, start = value
        if field in _STRING_FIELDS:
            text = head[start : start + length]
            if length > 4096 or not text.decode("utf-8", "replace").isprintable():
                return False
        pos = start + length
    return fields > 0 or len(head) <= parsed[1]


class OnnxFormat(FormatPlugin):
    """ONNX models (`.onnx`), with external data, carried in NNR as topology storage format 2."""

    name: ClassVar[str] = "onnx"
    description: ClassVar[str] = "ONNX ModelProto (.onnx), with external data"
    patterns: ClassVar[tuple[str, ...]] = ("*.onnx",)
    topology_code: ClassVar[int | None] = 2
    requires: ClassVar[tuple[str, ...]] = ("onnx",)
    install: ClassVar[str] = "pip install 'nnrconv[onnx]'"
    embedded_patterns: ClassVar[tuple[str, ...]] = ("*.nnr.onnx",)

    def sniff(self, path: Path, head: bytes) -> bool:
        """An ONNX model by content, or any file named `*.onnx` (so a corrupt one is reported as ONNX)."""
        return looks_like_model_proto(head) or self.matches_name(path)

    def load(self, path: Path) -> Model:
        """Read `path` without loading external data; every weight becomes a lazy tensor.

        Raises:
            FormatError: the file is unreadable, not an ONNX model, or references external
                data outside its folder or beyond the end of a data file.
        """
        parts = self.extract_embedded(path)
        if parts.units:
            raise UnsupportedError(f"{path}: holds NNR-coded weights; read it with nnrconv.load, which decodes them")
        return parts.model

    def extract_embedded(self, path: Path) -> EmbeddedModel:
        """The model at `path` with the units of a `.nnr.onnx` still coded (none for plain ONNX).

        The layout is described in `nnrconv_onnx._embed` (and `_embed_v1`, still read).
        """
        from nnrconv_onnx import _io

        return _io.extract_embedded(path)

    def container_digest_status(self, path: Path) -> str:
        """The status of the `.nnr.onnx` container digest (see `nnrconv_onnx._digest`)."""
        from nnrconv.core._digest_parts import status_of
        from nnrconv_onnx import _digest, _io

        def check() -> bool:
            proto, data = _io._read_model(path)
            return _digest.check(data, proto, path)

        return status_of(check)

    def save(self, model: Model, path: Path) -> None:
        """Write `model` with its tensors as raw data, or as external data past the size threshold.

        Raises:
            UnsupportedError: the model did not come from ONNX.
            FormatError: a tensor does not fit the element type or shape of its slot.
        """
        from nnrconv_onnx import _io

        _io.write_model(model, path, threshold=EXTERNAL_DATA_THRESHOLD)

    def save_embedded(self, model: Model, path: Path, parameter_sets: bytes, ndus: Mapping[str, bytes]) -> None:
        """Write ONNX whose weights are NNR data units decoded by `org.mpeg.nnr` NnrDecode nodes.

        The layout is described in `nnrconv_onnx._embed`; `load` reads such files back.
        """
        from nnrconv_onnx import _io

        _io.write_embedded(model, path, parameter_sets, ndus, threshold=EXTERNAL_DATA_THRESHOLD)

    def topology_bytes(self, model: Model, carried: Collection[str]) -> bytes:
        """The serialized ModelProto without the payloads of `carried` tensors.

        Raises:
            UnsupportedError: the model did not come from ONNX.
            FormatError: a tensor does not fit its slot, or the topology exceeds 2 GiB.
        """
        from nnrconv_onnx import _io

        return _io.topology_bytes(model, carried)

    def from_topology(self, topology: bytes, tensors: Mapping[str, Tensor]) -> Model:
        """Parse a topology written by `topology_bytes` and put the decoded tensors back.

        Raises:
            BitstreamError: the topology is not a ModelProto, a stripped tensor has no decoded
                data, a decoded tensor has no slot, or its values do not fit the slot's type.
        """
        from nnrconv_onnx import _io

        return _io.from_topology(topology, tensors)

    def topology_tensors(self, topology: bytes) -> list[TopologyTensor]:
        """The stripped tensors of the topology's ModelProto, with their declared types and dims."""
        from nnrconv_onnx import _io

        return _io.topology_tensors(topology)

    def split(self, path: Path, at: Sequence[str], head: Path, tail: Path) -> None:
        """Head and tail of the model cut at the tensors `at` (`onnx.utils.Extractor`).

        Raises:
            UnsupportedError: a cut tensor is unknown or untyped, or other tensors cross the cut.
        """
        from nnrconv_onnx import _split

        _split.split_model(path, at, head, tail)

    def input_specs(self, model: Model) -> list[InputSpec]:
        """Graph inputs that no initializer feeds: declared dims (named ones as str), index ranges."""
        from nnrconv_onnx import _specs

        return _specs.input_specs(model)

    def run(self, model: Model, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs of onnxruntime (CPU, one thread) for `inputs`.

        Raises:
            FrameworkMissingError: onnxruntime is not installed.
            UnsupportedError: onnxruntime cannot load or run the model.
        """
        from nnrconv_onnx import _runtime

        return _runtime.run(model, inputs)

    def weight_inputs(self, model: Model) -> list[WeightInput]:
        """Conv (one group) and MatMul weights with the activation each multiplies."""
        from nnrconv_onnx import _layers

        return _layers.weight_inputs(model)

    def activations(
        self, model: Model, inputs: Mapping[str, np.ndarray], names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """The intermediate tensors `names` of one onnxruntime run (added as graph outputs)."""
        from nnrconv_onnx import _runtime

        outputs = _runtime.run(model, inputs, extra=names)
        return {n: outputs[n] for n in names}

    def session(self, model: Model) -> object:
        """An `onnxruntime.InferenceSession` built from the model's bytes in memory (CPU).

        Raises:
            FrameworkMissingError: onnxruntime is not installed.
        """
        from nnrconv_onnx import _session

        return _session.inference_session(model)
