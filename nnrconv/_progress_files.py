# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Which file of a sharded checkpoint each tensor lives in, for the progress bar.

A progress object may have a ``files(mapping)`` method (the CLI's bar has): it is then told, before
the tensors of a sharded checkpoint are coded or decoded, the shard file of each tensor, and names
the shard being read (encoding) or written (decoding) as the work reaches it. The shards come from
the model's native layout when its plugin keeps one (``model.native.layout.shards``, each with a
``file`` and its ``keys``: the PyTorch plugin's Hugging Face layout); duck-typed, so that nothing
here imports a plugin.
"""

from __future__ import annotations

from typing import Any

from nnrconv.core import Model

__all__ = ["announce_files", "tensor_files"]


def tensor_files(model: Model) -> dict[str, str]:
    """Tensor name -> the file it is read from or written to; empty unless there are two shards or more."""
    shards = getattr(getattr(model.native, "layout", None), "shards", None) or []
    found: dict[str, str] = {}
    for shard in shards:
        file, keys = getattr(shard, "file", None), getattr(shard, "keys", None)
        if isinstance(file, str) and keys is not None:
            found.update((key, file) for key in keys if key in model.tensors)
    return found if len(set(found.values())) > 1 else {}


def announce_files(progress: Any, model: Model) -> None:
    """Tell `progress` the shard of each tensor, when it asks (a ``files`` method) and there are shards."""
    files = getattr(progress, "files", None)
    if files is None:
        return
    mapping = tensor_files(model)
    if mapping:
        files(mapping)
