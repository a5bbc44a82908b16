# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`TensorFlowFormat`: the `FormatPlugin` for frozen GraphDefs and SavedModel folders.

NOTE: this module is imported when plugins are discovered, so it must not import TensorFlow
(which takes seconds). Sniffing reads protobuf bytes by hand; every other method imports the
submodule it needs, and those import TensorFlow at their top.
"""

from __future__ import annotations

import re
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
from nnrconv_tensorflow import _family

__all__ = ["TensorFlowFormat", "looks_like_graph_def"]

SAVED_MODEL_FILE = "saved_model.pb"
_NODE_NAME = re.compile(rb"[A-Za-z0-9._][A-Za-z0-9_.\-/>]*")
_OP_NAME = re.compile(rb"[A-Za-z_][A-Za-z0-9_>]*")




def _string_field(head: bytes, pos: int, tag: int, pattern: re.Pattern[bytes]) -> tuple[bool, int] | None:
    """Check a length-delimited field `tag` at `pos` whose (visible) text fits `pattern`.

    Returns (complete, next position), or None when the bytes rule the field out.
    """
    if pos >= len(head) or head[pos] != tag:
        return None
    parsed = read_varint(head, pos + 1)
    if parsed is None:
        return (False, len(head)) if len(head) - pos < 12 else None
    length, start = parsed
    text = head[start : start + length]
    if not 0 < length <= 4096 or (text and not pattern.fullmatch(text)):
        return None
    return start + length <= len(head), start + length


def looks_like_graph_def(head: bytes) -> bool:
    """Whether `head` starts a serialized GraphDef: a NodeDef with a valid node name and op.

    A GraphDef serializes `node` (field 1) first and each NodeDef starts with `name` (field 1)
    then `op` (field 2), so the file begins 0x0A <len> 0x0A <len> name 0x12 <len> op. ONNX
    models begin with 0x08 and SavedModels with 0x08 0x01 0x12, so neither matches.
    """
    if len(head) < 4 or head[0] != 0x0A:
        return False
    node = read_varint(head, 1)
    if node is None or node[0] < 4:
        return False
    name = _string_field(head, node[1], 0x0A, _NODE_NAME)
    if name is None:
        return False
    complete, pos = name
    if not complete:
        return True
    op = _string_field(head, pos, 0x12, _OP_NAME)
    return op is not None or pos >= len(head)


def _quiet() -> None:
    """Import TensorFlow with its C++ start-up notices kept off stderr (nnrconv errors are one line).

    Called before every import of a module that imports TensorFlow (see `_quiet.py`)."""
    from nnrconv_tensorflow._quiet import import_tensorflow

    import_tensorflow()


def _saved_model_folder(path: Path) -> Path | None:
    if path.is_dir() and (path / SAVED_MODEL_FILE).is_file():
        return path
    if path.is_file() and path.name == SAVED_MODEL_FILE:
        return path.parent
    return None


_SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(8)


class TensorFlowFormat(FormatPlugin):
    """The TensorFlow family, NNR topology storage format 4: frozen graphs (`.pb`), SavedModel
    folders, Keras files (`.keras`, legacy `.h5`) and TFLite flatbuffers (`.tflite`)."""

    name: ClassVar[str] = "tensorflow"
    description: ClassVar[str] = "TensorFlow: frozen GraphDef (.pb), SavedModel folder, Keras (.keras, .h5), TFLite"
    patterns: ClassVar[tuple[str, ...]] = (
        "*.pb", "*savedmodel*", "*saved_model*", "*.keras", "*.h5", "*.hdf5", "*.tflite",
    )
    topology_code: ClassVar[int | None] = 4
    requires: ClassVar[tuple[str, ...]] = ("tensorflow",)
    install: ClassVar[str] = "pip install 'nnrconv[tensorflow]'"
    directory: ClassVar[bool] = True
    embedded_patterns: ClassVar[tuple[str, ...]] = (
        "*.nnr.pb", "*.nnr_savedmodel", "*.nnr_saved_model", "*.nnr.keras", "*.nnr.h5", "*.nnr.hdf5",
    )

    def sniff(self, path: Path, head: bytes) -> bool:
        """A folder holding saved_model.pb, a saved_model.pb file, or a file starting a GraphDef."""
        if path.is_dir():
            return _saved_model_folder(path) is not None
        if path.name == SAVED_MODEL_FILE and head.startswith(b"\x08\x01\x12"):
            return True
        return looks_like_graph_def(head) or _family.sniff(path, head)

    def is_own_output(self, path: Path) -> bool:
        """A SavedModel folder of the standard layout and nothing else (saved_model.pb(txt),
        fingerprint.pb, keras_metadata.pb, the `variables/` checkpoint, `assets/`, `assets.extra/`)."""
        allowed = (
            *_SAVED_MODEL_FILES,
            "fingerprint.pb",
            "keras_metadata.pb",
            "variables/variables.index",
            "variables/variables.data-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9]",
            "assets/*",
            "assets.extra/*",
        )
        return any(self.folder_holds_only(path, (graph,), allowed) for graph in _SAVED_MODEL_FILES)

    def load(self, path: Path) -> Model:
        """Read a SavedModel folder (or its saved_model.pb) or a frozen graph; tensors stay lazy.

        Files with NNR units inside (`*.nnr.pb`, `*.nnr_savedmodel`, `*.nnr.keras`) are read by
        `nnrconv.load` through `extract_embedded`.

        Raises:
            FormatError: unreadable, not a GraphDef / SavedModel, or a checkpoint that cannot be read.
        """
        parts = self.extract_embedded(path)
        if parts.units:
            raise UnsupportedError(f"{path}: holds NNR-coded tensors; read it with nnrconv.load, which decodes them")
        return parts.model

    def extract_embedded(self, path: Path) -> EmbeddedModel:
        """The model at `path` with NNR units inside still coded (none for a plain model); see `_embed`.

        The container digest (`_digest`) is verified first; `Model.metadata[_digest.KEY]` then
        says "verified" or "unverified (no container digest)" for an embedded container.

        Raises:
            FormatError: as `load`.
            BitstreamError: the container differs from its digest (naming the part and byte
                offset), or its NNR parts are malformed (the message names the tensor).
        """
        from nnrconv_tensorflow import _digest

        folder = _saved_model_folder(path)
        if path.is_dir() and folder is None:
            from nnrconv.core import FormatError

            raise FormatError(f"{path}: a folder without {SAVED_MODEL_FILE} is not a TensorFlow SavedModel")
        verified = _digest.verify(path, folder)  # before anything parses the container
        parts = self._extract(path, folder)
        if parts.units or verified:
            parts.model.metadata[_digest.KEY] = _digest.VERIFIED if verified else _digest.UNVERIFIED
        return parts

    def _extract(self, path: Path, folder: Path | None) -> EmbeddedModel:
        if folder is not None:
            _quiet()
            from nnrconv_tensorflow import _embed, _savedmodel

            if _embed.is_embedded_folder(folder):
                return _embed.extract_embedded_folder(folder)
            return EmbeddedModel(_savedmodel.read(folder))
        _quiet()
        family = _family.load(path, _head(path))
        if family is not None:
            return family
        from nnrconv_tensorflow import _digest_graph, _embed, _graphdef

        graph_def = _graphdef.read_graph_def(path)
        _digest_graph.strip(graph_def)
        if _embed.is_embedded(graph_def):
            return _embed.extract_embedded(graph_def, path)
        return EmbeddedModel(_graphdef.model_from_graph_def(graph_def, str(path)))

    def container_digest_status(self, path: Path) -> str:
        """"verified" or "unverified (no container digest)" for the container at `path` (see `_digest`).

        Raises:
            BitstreamError: the container differs from its digest, or the digest is damaged.
            FormatError: the container cannot be read.
        """
        from nnrconv_tensorflow import _digest

        return _digest.status(path, _saved_model_folder(path))

    def native_name(self, model: Model) -> str:
        """A SavedModel is a folder (`model_savedmodel`); a frozen graph a file (`model.pb`); Keras
        and TFLite models are `model.keras` (or `.h5`, as read) and `model.tflite`."""
        family = _family.native_name(model)
        if family is not None:
            return family
        return "model_savedmodel" if model.metadata.get("tensorflow.kind") == "savedmodel" else "model.pb"

    def save(self, model: Model, path: Path) -> None:
        """Write a frozen graph file, or a SavedModel folder, as the model was read.

        Raises:
            UnsupportedError: the model is not a TensorFlow model, or a SavedModel aimed at a `.pb` file.
            FormatError: a tensor does not fit its slot, or the output cannot be written.
        """
        native = self._native(model)
        if _family.kind_of(model) is not None:
            _quiet()
            _family.save(model, path)
            return
        _family.refuse_other_kind(model, path)
        if native.kind == "savedmodel":
            if path.suffix.lower() == ".pb":
                raise UnsupportedError(
                    f"{path}: this is a SavedModel, which is a folder; give a folder name such as "
                    f"{path.with_suffix('').name}_savedmodel"
                )
            _quiet()
            from nnrconv_tensorflow import _savedmodel

            _savedmodel.write(model, path)
            return
        _quiet()
        from nnrconv_tensorflow import _graphdef

        _graphdef.write(model, path)

    def save_embedded(self, model: Model, path: Path, parameter_sets: bytes, ndus: Mapping[str, bytes]) -> None:
        """Write a frozen graph (`*.nnr.pb`), a SavedModel folder (`*.nnr_savedmodel`) or a Keras
        file (`*.nnr.keras`, `*.nnr.h5`) holding NNR units.

        The layouts are described in `nnrconv_tensorflow._embed` and `._keras_embed`; `load`
        reads them back. TFLite models have no embedded form.

        Raises:
            UnsupportedError: the model is not a TensorFlow model, or its kind does not fit the
                name (a SavedModel aimed at `*.nnr.pb`, a frozen graph at a folder name).
            FormatError: a unit names no constant or checkpoint entry, or the output cannot be written.
        """
        native = self._native(model)
        if _family.kind_of(model) is not None or path.name.lower().endswith((".keras", ".h5", ".hdf5")):
            _quiet()
            _family.save_embedded(model, path, parameter_sets, ndus)
            return
        frozen = path.name.lower().endswith(".pb")
        if native.kind == "savedmodel" and frozen:
            raise UnsupportedError(
                f"{path}: this is a SavedModel, which is a folder; give a folder name such as "
                f"{path.name[: -len('.nnr.pb')]}.nnr_savedmodel"
            )
        if native.kind != "savedmodel" and not frozen:
            raise UnsupportedError(f"{path}: this is a frozen graph; give a file name such as model.nnr.pb")
        _quiet()
        from nnrconv_tensorflow import _embed

        if frozen:
            _embed.write_embedded(model, path, parameter_sets, ndus)
        else:
            _embed.write_embedded_folder(model, path, parameter_sets, ndus)

    @staticmethod
    def _native(model: Model):  # type: ignore[no-untyped-def]
        from nnrconv_tensorflow._model import TFNative

        family = _family.kind_of(model) is not None
        if model.source_format != "tensorflow" or not (family or isinstance(model.native, TFNative)):
            raise UnsupportedError(
                f"only models read from TensorFlow can be written as TensorFlow; this one comes from "
                f"{model.source_format!r}"
            )
        return model.native

    def topology_bytes(self, model: Model, carried: Collection[str]) -> bytes:
        """The NNRTF container (see `_container`) with carried values removed.

        Raises:
            UnsupportedError: the model is not a TensorFlow model.
            FormatError: a carried name is not a tensor of the model, or a tensor does not fit.
        """
        native = self._native(model)
        unknown = set(carried) - set(model.tensors)
        if unknown:
            from nnrconv.core import FormatError

            raise FormatError(f"carried tensors {sorted(unknown)[:5]!r} are not tensors of this model")
        _quiet()
        from nnrconv_tensorflow import _topology

        return _topology.topology_bytes(model, native, set(carried))

    def topology_tensors(self, topology: bytes) -> list[TopologyTensor] | None:
        """The emptied constants (frozen graph) or carried variables (SavedModel) the topology declares."""
        _quiet()
        from nnrconv_tensorflow import _topology

        return _topology.expected_tensors(topology)

    def from_topology(self, topology: bytes, tensors: Mapping[str, Tensor]) -> Model:
        """Rebuild the frozen graph or SavedModel from the container and the decoded tensors.

        Raises:
            BitstreamError: the topology is not an NNRTF container (or a bare GraphDef), or the
                tensors do not match its emptied slots.
        """
        _quiet()
        from nnrconv_tensorflow import _topology

        return _topology.from_topology(topology, tensors)

    def input_specs(self, model: Model) -> list[InputSpec]:
        """SavedModel `serving_default` inputs, or a frozen graph's Placeholders; free dims -> 1."""
        self._native(model)
        _quiet()
        kind = _family.kind_of(model)
        if kind is not None:
            return _family.module_for(kind).input_specs(model)
        from nnrconv_tensorflow import _runtime

        return _runtime.input_specs(model)

    def run(self, model: Model, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs of a one-thread TensorFlow session for `inputs`.

        Raises:
            UnsupportedError: TensorFlow cannot load or run the model.
        """
        self._native(model)
        _quiet()
        kind = _family.kind_of(model)
        if kind is not None:
            return _family.module_for(kind).run(model, inputs)
        from nnrconv_tensorflow import _runtime

        return _runtime.run(model, inputs)

    def weight_inputs(self, model: Model) -> list[WeightInput]:
        """Conv2D (NHWC, one group) and MatMul weights of a frozen graph, a SavedModel's serving
        signature or a Keras model, with the input each multiplies (see `_layers`); none for TFLite."""
        if _family.kind_of(model) not in (None, _family.KERAS) or model.source_format != "tensorflow":
            return []
        _quiet()
        from nnrconv_tensorflow import _layers

        return _layers.weight_inputs(model)

    def activations(
        self, model: Model, inputs: Mapping[str, np.ndarray], names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """The tensors `names` (layer inputs from `weight_inputs`) of one session run, NHWC."""
        self._native(model)
        _quiet()
        from nnrconv_tensorflow import _layers

        return _layers.activations(model, inputs, names)

    def session(self, model: Model) -> object:
        """A TensorFlow `ConcreteFunction`: the frozen graph wrapped in memory, or the SavedModel's
        serving signature (see `_session` for the transient folder a SavedModel needs).

        Raises:
            UnsupportedError: TensorFlow cannot import or load the model.
        """
        from nnrconv_tensorflow import _session

        return _session.concrete_function(model)
