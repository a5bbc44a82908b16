# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""An nnrconv format plugin written as a third party would write one: numpy `.npz` archives.

It knows nothing of nnrconv's internals: it subclasses the public `FormatPlugin`, registers
through the `register_formats` hook, and is found through the `nnrconv` entry-point group.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from nnrconv.core import ArrayTensor, FormatError, FormatPlugin, Graph, Model, hookimpl


class NpzFormat(FormatPlugin):
    name = "npz"
    description = "numpy .npz archive of named arrays (weights only)"
    patterns = ("*.npz",)
    requires = ("numpy",)
    install = "pip install nnrconv-npz"
    weights_only = True

    def sniff(self, path: Path, head: bytes) -> bool:
        return head.startswith(b"PK") and self.matches_name(path)

    def load(self, path: Path) -> Model:
        try:
            with np.load(path, allow_pickle=False) as archive:
                tensors = {name: ArrayTensor(name, archive[name]) for name in archive.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise FormatError(f"{path}: not a readable .npz archive: {exc}") from exc
        return Model(Graph(name=path.stem), tensors, source_format=self.name)

    def save(self, model: Model, path: Path) -> None:
        arrays = {name: tensor.numpy() for name, tensor in model.tensors.items()}
        with open(path, "wb") as f:
            np.savez(f, **arrays)


@hookimpl
def register_formats(register):
    register(NpzFormat())
