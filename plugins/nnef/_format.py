# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`NnefFormat`: the `FormatPlugin` for NNEF model folders and `.tgz` archives.

NOTE: this module is imported when plugins are discovered, so it imports neither ``nnef`` nor
``nnef_tools``. Sniffing needs neither; every other method imports the submodule it needs
(`_io`, `_carry`, `_runner`), and those import the frameworks.
"""

from __future__ import annotations

import tarfile
import zlib
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

__all__ = ["NnefFormat"]

_GZIP_MAGIC = b"\x1f\x8b"
# Sniffing a gzip file looks at this many tar members at most before giving up.
_SNIFF_MEMBERS = 4096


def _tgz_has_graph(path: Path) -> bool:
    """Whether a gzip-compressed tar holds a `graph.nnef` (reads member headers, in stream mode)."""
    try:
        with tarfile.open(path, "r|gz") as tar:
            for count, member in enumerate(tar):
                if member.isfile() and Path(member.name).name == "graph.nnef":
                    return True
                if count >= _SNIFF_MEMBERS:
                    return False
    except (tarfile.TarError, OSError, EOFError, zlib.error):
        return False
    return False


class NnefFormat(FormatPlugin):
    """NNEF models (a folder or `.tgz` of `graph.nnef`, `graph.quant`, `.dat`), NNR topology format 1."""

    name: ClassVar[str] = "nnef"
    description: ClassVar[str] = "NNEF model folder or .tgz (graph.nnef, graph.quant, .dat tensors)"
    patterns: ClassVar[tuple[str, ...]] = ("*.nnef", "*.nnef.tgz", "*.nnef.tar.gz", "*.tgz")
    topology_code: ClassVar[int | None] = 1
    requires: ClassVar[tuple[str, ...]] = ("nnef",)
    install: ClassVar[str] = "pip install 'nnrconv[nnef]'"
    directory: ClassVar[bool] = True
    # NNR inside NNEF (integration mode 2): `.dat` payloads are NNR data units; see `_embed`.
    embedded_patterns: ClassVar[tuple[str, ...]] = ("*.nnr.nnef", "*.nnr.tgz", "*.nnr.nnef.tgz", "*.nnr.tar.gz")

    def sniff(self, path: Path, head: bytes) -> bool:
        """A folder holding `graph.nnef`, or a gzip-compressed tar with a `graph.nnef` member."""
        if path.is_dir():
            return (path / "graph.nnef").is_file()
        if head[:2] != _GZIP_MAGIC:
            return False
        return _tgz_has_graph(path)

    def is_own_output(self, path: Path) -> bool:
        """A folder of `graph.nnef` with only `graph.quant`, `graph.nnr`, its digest and `.dat` files beside it."""
        allowed = ("graph.nnef", "graph.quant", "graph.nnr", "graph.nnr.digest", "*.dat")
        return self.folder_holds_only(path, ("graph.nnef",), allowed)

    def load(self, path: Path) -> Model:
        """Read a model folder or `.tgz`; each variable becomes a lazy tensor keyed by its label.

        Variables holding NNR data units (a `*.nnr.nnef` written by `save_embedded`) are read by
        `nnrconv.load` through `extract_embedded`.

        Raises:
            FormatError: no graph.nnef, a graph that does not parse, or a missing, corrupt or
                mis-shaped `.dat` file (the message names the variable and file).
            BitstreamError: an NNR-coded variable or `graph.nnr` is corrupt (names the variable).
        """
        parts = self.extract_embedded(path)
        if parts.units:
            raise UnsupportedError(f"{path}: holds NNR-coded variables; read it with nnrconv.load, which decodes them")
        return parts.model

    def extract_embedded(self, path: Path) -> EmbeddedModel:
        """The model at `path` with the variables of a `*.nnr.nnef` still coded (none when plain).

        The layout is described in `nnrconv_nnef._embed`.
        """
        from nnrconv_nnef import _embed, _io

        model = _io.read_model(path)
        if _embed.is_embedded(model):
            return _embed.extract_embedded(model, path)
        return EmbeddedModel(model)

    def container_digest_status(self, path: Path) -> str:
        """The status of the `graph.nnr.digest` of a folder or `.tgz` (see `nnrconv_nnef._digest`)."""
        from nnrconv.core._digest_parts import status_of
        from nnrconv_nnef import _io

        return status_of(lambda: _io.check_digest(path))

    def save(self, model: Model, path: Path) -> None:
        """Write a folder, or a `.tgz` when the name ends in `.tgz`/`.tar.gz`, with exact `.dat` headers.

        Raises:
            UnsupportedError: the model did not come from NNEF.
            FormatError: a tensor does not fit its variable, or a file cannot be written.
        """
        from nnrconv_nnef import _io

        _io.write_model(model, path)

    def save_embedded(self, model: Model, path: Path, parameter_sets: bytes, ndus: Mapping[str, bytes]) -> None:
        """Write a folder (or `.tgz`) whose `.dat` files hold NNR data units under vendor item type 'NR'/1.

        `graph.nnef` is unchanged; `graph.nnr` beside it holds the parameter sets. The layout is
        described in `nnrconv_nnef._embed`; `load` reads such models back.

        Raises:
            UnsupportedError: the model did not come from NNEF.
            FormatError: a unit names no variable, a tensor does not fit, or a file cannot be written.
        """
        from nnrconv_nnef import _embed

        _embed.write_embedded(model, path, parameter_sets, ndus)

    def topology_bytes(self, model: Model, carried: Collection[str]) -> bytes:
        """`graph.nnef` text, followed (after a 0x00) by whatever else must travel; see `_topology`.

        Raises:
            UnsupportedError: the model did not come from NNEF.
            FormatError: a carried name is not a variable, or a tensor does not fit.
        """
        from nnrconv_nnef import _carry

        return _carry.topology_bytes(model, carried)

    def topology_tensors(self, topology: bytes) -> list[TopologyTensor]:
        """The variables the graph declares whose data NDUs carry, with their types and shapes."""
        from nnrconv_nnef import _carry

        return _carry.topology_tensors(topology)

    def from_topology(self, topology: bytes, tensors: Mapping[str, Tensor]) -> Model:
        """Rebuild the model from the topology and the decoded tensors, keyed by variable label.

        Raises:
            BitstreamError: the topology is malformed, or tensors and variables do not match.
        """
        from nnrconv_nnef import _carry

        return _carry.from_topology(topology, tensors)

    def input_specs(self, model: Model) -> list[InputSpec]:
        """The graph's `external` inputs with their declared shapes (and NNEF's element types).

        Raises:
            UnsupportedError: the model did not come from NNEF.
        """
        from nnrconv_nnef import _runner

        return _runner.input_specs(model)

    def run(self, model: Model, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model in nnef-tools' PyTorch interpreter (CPU, one thread).

        Raises:
            FrameworkMissingError: nnef_tools or torch is not installed.
            FormatError: an input is missing.
            UnsupportedError: the interpreter cannot run the graph.
        """
        from nnrconv_nnef import _runner

        return _runner.run(model, inputs)

    def weight_inputs(self, model: Model) -> list[WeightInput]:
        """`conv` (one group, 2-D), `linear` and `matmul` weights with the activation each multiplies."""
        from nnrconv_nnef import _layers

        return _layers.weight_inputs(model)

    def activations(
        self, model: Model, inputs: Mapping[str, np.ndarray], names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """The tensors `names` of one interpreter run (see `nnrconv_nnef._layers`)."""
        from nnrconv_nnef import _layers

        return _layers.activations(model, inputs, names)

    def session(self, model: Model) -> object:
        """nnef-tools' PyTorch `Interpreter`, built in memory (no model folder written).

        Raises:
            FrameworkMissingError: nnef_tools or torch is not installed.
            UnsupportedError: the model did not come from NNEF, or the interpreter cannot build it.
        """
        from nnrconv_nnef import _session

        return _session.interpreter(model)
