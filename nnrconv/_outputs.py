# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Which format an output is written in: `--to`, else the name, else the model's own format.

NOTE: a bitstream records the kind of model it carries (its `topology_storage_format` and the
owning plugin's topology header), so `nnrconv m.nnr outdir` needs no `--to`: when the output
name matches no format's pattern (a folder name, a name without a telling suffix), the model is
written in the format it was read or decoded as, and the plugin picks the kind (SavedModel
folder, TorchScript archive, ...) from the model. An explicit format always wins, and a name
that matches several formats stays an error naming them.
"""

from __future__ import annotations

from pathlib import Path

from nnrconv.core import get_registry

__all__ = ["NNR_FORMAT", "NNR_SUFFIXES", "name_tells_format", "output_format"]

NNR_FORMAT = "nnr"
NNR_SUFFIXES = (".nnr", ".nnc")


def name_tells_format(path: Path) -> bool:
    """Whether the output name alone picks a format (an NNR suffix or some format's pattern)."""
    if path.suffix.lower() in NNR_SUFFIXES:
        return True
    return any(f.matches_name(path) or f.matches_embedded(path) for f in get_registry())


def output_format(path: Path, name: str | None, model_format: str | None = None) -> str:
    """The format to write `path` in.

    Args:
        path: the output.
        name: the format asked for explicitly (`--to`), which wins.
        model_format: the format of the model being written (its `source_format`), used when
            the name tells nothing; None while the model is not known yet.

    Raises:
        FormatError: no format is asked for, the name tells none and the model has none (a
            bitstream of bare tensors), or the name matches several formats.
    """
    if name is not None:
        return NNR_FORMAT if name.lower() == NNR_FORMAT else get_registry().get(name).name
    if path.suffix.lower() in NNR_SUFFIXES:
        return NNR_FORMAT
    if model_format and not name_tells_format(path):
        return get_registry().get(model_format).name
    return get_registry().for_output(path).name
