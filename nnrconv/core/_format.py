# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""What a format plugin provides: the `FormatPlugin` base class.

NOTE: pluggy discovers plugins and collects their formats (`register_formats`), but the format
itself is an object with typed methods rather than one hook per capability. A conversion needs
several calls to the *same* format (sniff, load, topology bytes, save), and an object keeps them
together, typed and testable in isolation; hooks stay for what is genuinely plugin-wide.

A plugin module must import without its framework installed: import the framework inside the
methods, and list it in `requires` so `nnrconv formats` can say what to install.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import stat
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from nnrconv.core._digest_parts import UNVERIFIED
from nnrconv.core._dtype import DType
from nnrconv.core._embedded import EmbeddedModel
from nnrconv.core._errors import FrameworkMissingError, UnsupportedError
from nnrconv.core._layers import WeightInput
from nnrconv.core._model import Model
from nnrconv.core._tensor import Tensor

__all__ = ["FormatPlugin", "InputSpec", "TopologyTensor"]


def _raise(error: OSError) -> None:
    """os.walk's error hook: a folder that cannot be listed may hold anything, so stop."""
    raise error


@dataclass(frozen=True, slots=True)
class TopologyTensor:
    """A tensor a topology expects from a data unit: what salvage zero-fills when the unit is lost.

    Attributes:
        name: the key the data unit carries (as `from_topology` looks it up).
        dtype: the element type `from_topology` accepts for it.
        shape: its dimensions; None when the topology gives only the byte size (a flat array of
            `nbytes` bytes' worth of elements is then accepted).
        nbytes: the decoded size, checked against the memory budget before any allocation.
    """

    name: str
    dtype: DType
    shape: tuple[int, ...] | None
    nbytes: int


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One model input as a runner needs it: name, element type and a concrete shape.

    Attributes:
        name, dtype: the input's.
        shape: a concrete shape; dimensions the plugin could not resolve are filled (with 1 by
            plugins that predate `dims`).
        dims: the dimensions as the model declares them, when the plugin knows: an int for a
            fixed (or plugin-resolved) size, a str for a named free dimension ("batch",
            "sequence"), None for an unnamed free one. None: every entry of `shape` is fixed.
        value_range: [low, high) the values must lie in (e.g. token ids below an embedding's
            row count), when the plugin can tell; integer inputs are drawn inside it.
    """

    name: str
    dtype: DType
    shape: tuple[int, ...]
    dims: tuple[int | str | None, ...] | None = None
    value_range: tuple[float, float] | None = None


class FormatPlugin:
    """Base class of a format: subclass it, set the class attributes, implement load and save.

    Attributes:
        name: short unique name used by `--from/--to` (e.g. ``"onnx"``).
        description: one line for `nnrconv formats`.
        patterns: file-name patterns (fnmatch, case-insensitive) this format writes and reads.
        topology_code: the NNR `topology_storage_format` this format owns (NNEF 1, ONNX 2,
            PyTorch 3, TensorFlow 4), or None for weights-only formats.
        requires: importable top-level modules the format needs at run time.
        install: the command that installs them (shown when they are missing).
        directory: True if models of this format are folders rather than files.
        saves_any_model: True for formats whose `save` can write the tensors of a model from any
            format (or a bitstream without topology) as a weights file, like a state dict.
            Implied by `weights_only`.
        embedded_patterns: output names (e.g. ``"*.nnr.onnx"``) that ask for the native container
            with NNR-coded tensors inside (integration mode 2); see `save_embedded`.
        weights_only: True for formats that hold named tensors and no graph (npz, safetensors,
            state dicts). They travel through NNR with an empty topology of storage format 0
            (NNR_TPL_UNREC), and they can save the tensors of any model.
        carries_narrow_floats: True when `from_topology` restores bfloat16, float8 (and float16
            sent as bit patterns) from their NNR carriers with `nnrconv.core.restore_narrow`;
            only then do such tensors travel as data units (else they stay in the topology).
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    patterns: ClassVar[tuple[str, ...]] = ()
    topology_code: ClassVar[int | None] = None
    requires: ClassVar[tuple[str, ...]] = ()
    install: ClassVar[str] = ""
    directory: ClassVar[bool] = False
    weights_only: ClassVar[bool] = False
    embedded_patterns: ClassVar[tuple[str, ...]] = ()
    saves_any_model: ClassVar[bool] = False
    carries_narrow_floats: ClassVar[bool] = False

    @property
    def accepts_foreign_tensors(self) -> bool:
        """Whether `save` writes models from other formats (as named tensors)."""
        return self.weights_only or self.saves_any_model

    @property
    def version(self) -> str:
        """Version of the distribution that ships the plugin (set by the registry)."""
        return getattr(self, "_version", "")

    # -- availability -------------------------------------------------------------------
    def missing_requirements(self) -> list[str]:
        """Modules from `requires` that cannot be imported here."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    @property
    def available(self) -> bool:
        return not self.missing_requirements()

    def ensure_available(self) -> None:
        """Raise FrameworkMissingError naming the missing modules and the install command."""
        missing = self.missing_requirements()
        if missing:
            hint = f"; install it with: {self.install}" if self.install else ""
            raise FrameworkMissingError(
                f"format {self.name!r} needs {', '.join(missing)}, which is not installed{hint}"
            )

    # -- detection ----------------------------------------------------------------------
    def matches_name(self, path: Path) -> bool:
        """Whether the path's name fits one of `patterns` (used for outputs and as a hint)."""
        name = path.name.lower()
        return any(fnmatch.fnmatchcase(name, p.lower()) for p in self.patterns)

    def matches_embedded(self, path: Path) -> bool:
        """Whether an output name asks for NNR-coded tensors inside this container."""
        name = path.name.lower()
        return any(fnmatch.fnmatchcase(name, p.lower()) for p in self.embedded_patterns)

    def native_name(self, model: Model) -> str:
        """A file (or folder) name under which `save` writes this model natively.

        Used when a model decoded from NNR must exist as a native file, for example to hand it
        to a converter. The default takes the first ``*.ext`` pattern; formats with several
        kinds of output (a SavedModel folder versus a frozen graph) override it.
        """
        pattern = next((p for p in self.patterns if p.startswith("*.")), "*")
        return pattern.replace("*", "model", 1)

    def sniff(self, path: Path, head: bytes) -> bool:
        """Whether an existing input is of this format, judged by content.

        Args:
            path: the input (a file or a directory).
            head: the first bytes of the file (empty for a directory).

        The default trusts the file name; override to look at magic bytes or folder layout.
        """
        return self.matches_name(path)

    def is_own_output(self, path: Path) -> bool:
        """Whether the existing folder `path` is a model of this format that `save` could have written.

        `--force` replaces an existing folder only when this says yes, so answer True only when
        every entry in it is one your writer makes: a folder holding anything else is the
        user's, and would be lost. Files are never asked about (they are replaced atomically).
        The default is False: a format that does not say how to recognise its own folders never
        has one replaced. `folder_holds_only` does the walking for a fixed layout.
        """
        return False

    @staticmethod
    def folder_holds_only(path: Path, required: Collection[str], allowed: Collection[str]) -> bool:
        """Whether a folder has every `required` file and nothing but `allowed` files and folders.

        Entries are matched by their path relative to `path`, with `/` separators, against
        fnmatch patterns (case-sensitive; `*` also matches `/`). Sub-folders are allowed when
        they hold only allowed files; a symbolic link or any other special entry anywhere means no.
        """
        found: set[str] = set()
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                return False
            for root, folders, files in os.walk(path, onerror=_raise, followlinks=False):
                relative_root = Path(root).relative_to(path)
                for name in [*folders, *files]:
                    entry = Path(root, name)
                    mode = os.lstat(entry).st_mode
                    relative = (relative_root / name).as_posix()
                    if stat.S_ISDIR(mode):
                        continue
                    if not stat.S_ISREG(mode) or not any(fnmatch.fnmatchcase(relative, p) for p in allowed):
                        return False
                    found.add(relative)
        except OSError:
            return False
        return all(name in found for name in required)

    # -- model I/O ----------------------------------------------------------------------
    def load(self, path: Path) -> Model:
        """Read a model; tensor data should stay lazy (memory-mapped or deferred)."""
        raise UnsupportedError(f"format {self.name!r} cannot read models")

    def save(self, model: Model, path: Path) -> None:
        """Write `model` to `path` (which does not exist yet; the caller renames it into place)."""
        raise UnsupportedError(f"format {self.name!r} cannot write models")

    # -- NNR topology carriage (integration mode 1) ---------------------------------------
    def topology_bytes(self, model: Model, carried: Collection[str]) -> bytes:
        """The native topology with the payloads of the `carried` tensors removed.

        Tensors not in `carried` (those no NNR payload can hold exactly) must stay inside the
        returned bytes. Names, shapes and types of carried tensors must be kept so that
        `from_topology` can put them back.
        """
        raise UnsupportedError(f"format {self.name!r} cannot carry its topology in NNR")

    def deflate_topology(self, topology: bytes) -> bool:
        """Whether NNR may deflate these topology bytes (NNR_DFL) when that makes them smaller.

        Return False for topologies that must stay readable as text by decoders that take
        `topology_data` for a null-terminated string (NNCodec 2.1.3 does).
        """
        return True

    def from_topology(self, topology: bytes, tensors: Mapping[str, Tensor]) -> Model:
        """Rebuild the model from `topology_bytes` output and the decoded tensors."""
        raise UnsupportedError(f"format {self.name!r} cannot rebuild a model from an NNR topology")

    def topology_tensors(self, topology: bytes) -> list[TopologyTensor] | None:
        """The tensors `from_topology` expects from data units, in the topology's order; None
        when the format cannot tell (salvage then fills lost tensors only from a base).

        Must not allocate the tensors; sizes come from what the topology declares.

        Raises:
            BitstreamError: the topology is malformed.
        """
        return None

    # -- NNR inside the native container (integration mode 2) -----------------------------
    def save_embedded(self, model: Model, path: Path, parameter_sets: bytes, ndus: Mapping[str, bytes]) -> None:
        """Write `model` with the tensors named in `ndus` replaced by their NNR-coded units.

        Args:
            model: the model; tensors not in `ndus` are written as they are.
            path: where to write (inside the core's staging folder).
            parameter_sets: the NNR start unit and model parameter set the units need; they
                must travel inside the container so that it is self-contained.
            ndus: topology element id -> complete NNR_NDU unit bytes.

        Reading such a container back is `extract_embedded`'s job. The layout conventions of
        the built-in formats are listed in the README ("NNR inside native containers").
        """
        raise UnsupportedError(f"format {self.name!r} cannot hold NNR-coded tensors in its container")

    def extract_embedded(self, path: Path) -> EmbeddedModel | None:
        """The model at `path` with its NNR-coded tensors still coded, the mirror of `save_embedded`.

        Return None when `path` holds no NNR-coded tensors (then `load` reads it), or an
        `EmbeddedModel` whose `units` may be empty (a plain model read on the way, to read the
        file once). Do not decode: the seam (`nnrconv.load`) verifies the units against the
        parameter sets' integrity record, checks each decoded size against the unit's dtype and
        shape, and decodes each tensor on first access, so converting to `.nnr` copies units.

        Raises:
            FormatError: the container's NNR parts (parameter sets, a unit's place) are damaged.
        """
        return None

    def container_digest_status(self, path: Path) -> str:
        """Whether the container at `path` matches its container digest (the integrity of what is
        not an NNR unit: graph, headers, manifests, the file's structure), without decoding.

        Returns "verified", "unverified (no container digest)" (the default: a format, or a
        file, without one) or "damaged: <the one-line error>"; never raises for damage.
        """
        return UNVERIFIED

    # -- split inference -----------------------------------------------------------------
    def split(self, path: Path, at: Sequence[str], head: Path, tail: Path) -> None:
        """Write two native models cut from the one at `path`: `head` computes the tensors `at`
        from the model's inputs, `tail` the model's outputs from them (and the inputs it still
        needs). `head` and `tail` do not exist yet and are named like `path`.

        Raises:
            UnsupportedError: a cut tensor is unknown, or other tensors computed from the inputs
                cross the cut (the message lists them).
        """
        raise UnsupportedError(f"format {self.name!r} cannot split models")

    # -- round-trip checks ---------------------------------------------------------------
    def input_specs(self, model: Model) -> list[InputSpec]:
        """The inputs a run of `model` needs, with concrete shapes (free dimensions set to 1)."""
        raise UnsupportedError(f"format {self.name!r} has no runner for round-trip checks")

    def run(self, model: Model, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run `model` in the format's native runtime on `inputs`; return every output by name.

        Must be deterministic for identical models and inputs (single-threaded if needed), so
        that a round-trip check can demand identical outputs after lossless coding.
        """
        raise UnsupportedError(f"format {self.name!r} has no runner for round-trip checks")

    def weight_inputs(self, model: Model) -> list[WeightInput]:
        """The weights `model` applies linearly to an activation, and how (error compensation
        quantizes these knowing their inputs' correlation); empty when the format cannot tell."""
        return []

    def activations(
        self, model: Model, inputs: Mapping[str, np.ndarray], names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """The intermediate tensors `names` (from `weight_inputs`) of one run on `inputs`."""
        raise UnsupportedError(f"format {self.name!r} cannot return intermediate activations")

    def session(self, model: Model) -> object:
        """The runtime's own object for `model`, ready for inference (`nnrconv.session`).

        For example an `onnxruntime.InferenceSession`, a torch module or exported program, a
        TensorFlow concrete function or an NNEF interpreter: whatever the format's users call
        directly. Build it from `model` in memory where the runtime allows (the model may have
        been decoded from NNR; no plain copy of it should land on disk).
        """
        raise UnsupportedError(f"format {self.name!r} has no runtime session")

    def can_run(self, model: Model) -> bool:
        """Whether `run` can execute this model (a bare weights file cannot; `check` then
        compares tensors only)."""
        return "run" in self.capabilities()

    def capabilities(self) -> list[str]:
        """Which optional methods this format overrides, for `nnrconv formats`."""
        names = (
            "load", "save", "topology_bytes", "from_topology", "save_embedded", "extract_embedded", "run", "session",
            "split",
        )
        return [n for n in names if getattr(type(self), n) is not getattr(FormatPlugin, n)]
