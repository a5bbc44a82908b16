# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`nnrconv m.nnr out/`: a bitstream decoded into an existing bare folder.

A Hugging Face checkpoint coded with its shard layout names its own index file
(`FormatPlugin.native_name`, e.g. ``model.safetensors.index.json``), so decoding it into an
existing folder writes that index there, with its shards and the files that travelled beside
it, exactly as `nnrconv m.nnr out/model.safetensors.index.json` does. Any other model keeps the
folder rule it had (the format's own folder output, such as a SavedModel, replaced only with
`--force`).
"""

from __future__ import annotations

from pathlib import Path

from nnrconv._api import _plugin
from nnrconv.core import Model

__all__ = ["INDEX_SUFFIX", "checkpoint_target"]

INDEX_SUFFIX = ".safetensors.index.json"


def checkpoint_target(model: Model, folder: Path) -> tuple[Path, str] | None:
    """(the index path inside `folder`, the format name) when `model` is a sharded checkpoint
    whose format writes it by its index; None for every other model."""
    if not model.source_format:
        return None
    fmt = _plugin(model.source_format)
    name = fmt.native_name(model)
    if not name.lower().endswith(INDEX_SUFFIX) or Path(name).name != name:
        return None
    return folder / name, fmt.name
