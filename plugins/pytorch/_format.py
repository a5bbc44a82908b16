# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`PyTorchFormat`: the `FormatPlugin` for torch.export programs, TorchScript, state dicts, safetensors.

NOTE: this module is imported when plugins are discovered, so it must not import torch. Sniffing
reads only magic bytes and zip member names; every method that needs torch imports `_torchio`
or `_runtime`, which import torch at their top.
"""

from __future__ import annotations

import zipfile
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
)
from nnrconv_pytorch._archive import archive_kind
from nnrconv_pytorch._safetensors import looks_like_safetensors

__all__ = ["SCRIPT_PATTERNS", "PyTorchFormat"]

SCRIPT_PATTERNS = ("*.jit", "*.torchscript")  # as _torchio.SCRIPT_SUFFIXES

_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


class PyTorchFormat(FormatPlugin):
    """PyTorch models carried in NNR as topology storage format 3 (NNR_TPL_PYT).

    One format reads every PyTorch container; which one a file is comes from its content:
    ``torch.export`` archives (`.pt2`), TorchScript archives, ``torch.save`` state dicts and
    checkpoints (`.pt`, `.pth`), and safetensors. Archives keep their kind when written back;
    state dicts are written as safetensors when the target ends in `.safetensors`, else with
    ``torch.save``.
    """

    name: ClassVar[str] = "pytorch"
    description: ClassVar[str] = "PyTorch: torch.export .pt2, TorchScript, state_dict .pt/.pth, safetensors"
    # `.jit` and `.torchscript` are the names TorchScript exports commonly get (TorchServe,
    # Ultralytics); they are written as TorchScript archives only.
    patterns: ClassVar[tuple[str, ...]] = (
        "*.pt2", "*.pt", "*.pth", "*.safetensors", "*.safetensors.index.json", *SCRIPT_PATTERNS,
    )
    topology_code: ClassVar[int | None] = 3
    requires: ClassVar[tuple[str, ...]] = ("torch",)
    install: ClassVar[str] = "pip install 'nnrconv[pytorch]'"
    saves_any_model: ClassVar[bool] = True
    carries_narrow_floats: ClassVar[bool] = True
    embedded_patterns: ClassVar[tuple[str, ...]] = (
        "*.nnr.pt2", "*.nnr.pt", "*.nnr.pth", "*.nnr.jit", "*.nnr.torchscript",
    )

    def sniff(self, path: Path, head: bytes) -> bool:
        """A torch zip archive, a legacy torch.save pickle or safetensors, a Hugging Face checkpoint
        (its `*.safetensors.index.json` or its folder); or a file named like one."""
        if path.is_dir():
            from nnrconv_pytorch._shards import is_checkpoint_folder

            return is_checkpoint_folder(path)
        if head.startswith(b"PK\x03\x04") and path.is_file():
            try:
                with zipfile.ZipFile(path) as archive:
                    if archive_kind(archive.namelist()):
                        return True
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, NotImplementedError, EOFError):
                pass  # a damaged archive: named by the loader, not by sniffing
        if head.startswith(_LEGACY_MAGIC):
            return True
        if looks_like_safetensors(head) and path.suffix.lower() in (".safetensors", ".st", ""):
            return True
        return self.matches_name(path)

    def load(self, path: Path) -> Model:
        """Read a PyTorch file; nothing is unpickled beyond tensors and plain containers.

        Raises:
            FormatError: the file is corrupt, or loading it would need full unpickling (a pickled
                Python object, a ``.pt2`` with pickled payloads).
            UnsupportedError: a valid file nnrconv cannot convert (no state dict inside, a legacy
                ``.pt2`` layout, quantized or sparse tensors).
        """
        from nnrconv_pytorch import _torchio

        return _torchio.load(path)

    def extract_embedded(self, path: Path) -> EmbeddedModel | None:
        """The model of a coded archive (``*.nnr.pt``, ``*.nnr.pt2``) with its units still coded;
        None for any other file (see `_embedded` for the layout)."""
        import zipfile

        from nnrconv_pytorch import _archive, _digest, _embedded

        if path.is_file() and _digest.has_digest(path):  # verified before the archive is parsed
            return _embedded.extract(path.read_bytes(), str(path))
        if not path.is_file() or not zipfile.is_zipfile(path):
            return None
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError):
            return None  # `load` reports it
        if not (_archive.archive_kind(names) and _embedded.is_embedded(names)):
            return None
        return _embedded.extract(path.read_bytes(), str(path))

    def container_digest_status(self, path: Path) -> str:
        """The status of a coded archive's digest (its zip comment; see `nnrconv_pytorch._digest`)."""
        from nnrconv.core._digest_parts import UNVERIFIED, status_of
        from nnrconv_pytorch import _digest

        if not path.is_file() or not _digest.has_digest(path):
            return UNVERIFIED
        return status_of(lambda: _digest.check(path.read_bytes(), str(path)))

    def split(self, path: Path, at: Sequence[str], head: Path, tail: Path) -> None:
        """Head and tail of a ``torch.export`` program (``.pt2``) cut at the FX nodes named `at`,
        each re-exported with static shapes.

        Raises:
            UnsupportedError: not a ``.pt2`` program, an unknown node, other nodes crossing the
                cut, or a part that cannot be re-exported.
        """
        from nnrconv_pytorch import _split, _torchio

        model = _torchio.load(path)
        native = model.native
        if getattr(native, "kind", None) != "program" or native.module is None:
            raise UnsupportedError(f"{path}: only torch.export programs (.pt2) can be split, not this PyTorch file")
        _split.split_program(native.module, at, head, tail, path)

    def native_name(self, model: Model) -> str:
        """A sharded checkpoint's index name (its shards go beside it); else the default name."""
        layout = getattr(model.native, "layout", None)
        if layout is not None and layout.index is not None and all(s.file for s in layout.shards):
            return str(layout.index)
        return super().native_name(model)

    def save(self, model: Model, path: Path) -> None:
        """Write `model` in its own kind (.pt2 or TorchScript archive), or a state dict by suffix.

        Raises:
            UnsupportedError: a state dict asked to become a ``.pt2`` program.
        """
        from nnrconv_pytorch import _torchio

        _torchio.save(model, path)

    def save_embedded(self, model: Model, path: Path, parameter_sets: bytes, ndus: Mapping[str, bytes]) -> None:
        """Write the model's zip archive with the records of the tensors in `ndus` holding NNR units.

        `.pt2` and TorchScript models keep their archive; state dicts (and tensors from other
        formats) become a ``torch.save`` archive. The layout is described in
        `nnrconv_pytorch._embedded`; `load` reads such files back as `CodedTensor`s. torch itself
        cannot load them: convert to a plain file first.

        Raises:
            UnsupportedError: a state dict asked to become a ``.nnr.pt2`` program.
        """
        from nnrconv_pytorch import _embedded

        _embedded.save(model, path, parameter_sets, ndus)

    def topology_bytes(self, model: Model, carried: Collection[str]) -> bytes:
        """The archive without the payloads of carried tensors, or (state dicts) the tensors NNR cannot carry.

        Empty for a state dict whose tensors are all carried as float32, as NNCodec writes it;
        NUL-free UTF-8 text (key order, dtypes, shapes) when they are all carried but need their
        type or shape back; the layout is described in `nnrconv_pytorch._topology`.
        """
        from nnrconv_pytorch import _torchio

        return _torchio.topology_bytes(model, carried)

    def deflate_topology(self, topology: bytes) -> bool:
        """False for the text state dict topology, which NNCodec 2.1.3 must read as a string."""
        from nnrconv_pytorch._topology import is_text

        return not is_text(topology)

    def topology_tensors(self, topology: bytes) -> list[TopologyTensor] | None:
        """What the manifest says NDUs carry; None for NNCodec's empty state dict topology."""
        from nnrconv_pytorch import _topology

        return _topology.expected_tensors(topology)

    def from_topology(self, topology: bytes, tensors: Mapping[str, Tensor]) -> Model:
        """Rebuild the archive or state dict and load it (with the same safety checks as `load`).

        Raises:
            BitstreamError: the topology is malformed, or a tensor is missing, extra or misfits.
        """
        from nnrconv_pytorch import _torchio

        return _torchio.from_topology(topology, tensors)

    def can_run(self, model: Model) -> bool:
        """Programs and TorchScript modules run; a state dict has no graph (check compares tensors)."""
        return getattr(model.native, "kind", None) in ("program", "script")

    def input_specs(self, model: Model) -> list[InputSpec]:
        """User inputs of a program or TorchScript module, shaped like the stored example inputs."""
        from nnrconv_pytorch import _runtime

        return _runtime.input_specs(model)

    def run(self, model: Model, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs of the program or module on one thread, without autograd.

        Raises:
            UnsupportedError: a state dict (no graph), or torch cannot run the model.
        """
        from nnrconv_pytorch import _runtime

        return _runtime.run(model, inputs)

    def weight_inputs(self, model: Model) -> list[WeightInput]:
        """Convolutions (one group), linear layers and matmuls on a 2-D weight, read from the
        `.pt2` graph or the TorchScript inlined graph; empty for a state dict."""
        from nnrconv_pytorch import _layers

        return _layers.weight_inputs(model)

    def activations(
        self, model: Model, inputs: Mapping[str, np.ndarray], names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """The graph values `names` of one run, executed as `run` executes the model."""
        from nnrconv_pytorch import _layers

        return _layers.activations(model, inputs, names)

    def session(self, model: Model) -> object:
        """The `torch.export.ExportedProgram` (`.pt2`) or `torch.jit.ScriptModule` (TorchScript).

        Raises:
            UnsupportedError: a state dict (no graph to run).
        """
        from nnrconv_pytorch import _runtime

        return _runtime.session(model)
