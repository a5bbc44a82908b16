# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The hooks a plugin may implement; this module is the plugin contract.

A plugin is a module (or object) registered under the ``nnrconv`` entry-point group. It marks
its implementations with `hookimpl` and may implement any subset of the hooks below, each with
any subset of the arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pluggy

__all__ = ["hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("nnrconv")
hookimpl = pluggy.HookimplMarker("nnrconv")


@hookspec
def register_formats(register: Callable[[Any], None]) -> None:
    """Register model formats by calling ``register(format_instance)`` once per format.

    Each instance is a `nnrconv.core.FormatPlugin` subclass instance. The core settles duplicate
    names (an error naming both plugins) and keeps registration order, which is the order in
    which formats are asked to recognise an input: built-in formats first, then third-party
    ones in entry-point order. The module that implements this hook must import without the
    format's framework; import the framework inside the format's methods.
    """


@hookspec(firstresult=True)
def convert_model(
    source: Path,
    source_format: str,
    target_format: str,
    workdir: Path,
    input_shapes: Mapping[str, Sequence[int]] | None,
) -> Path | None:
    """Convert the model file `source` of `source_format` into `target_format`, or return None.

    Called when a model is written in another format than its own and the target cannot simply
    take its tensors (for example ONNX to NNEF). Write the result inside `workdir` (a private
    temporary folder that lives until the converted model is written out) and return its path;
    the target format's plugin then loads it. Return None for pairs the plugin does not
    convert; the first non-None answer wins. Raise `UnsupportedError` listing everything the
    model uses that cannot be converted (every unsupported operator with its shapes, in one
    message) rather than stopping at the first. `input_shapes` (input name -> dims, or None)
    fixes the shapes of inputs whose dimensions are free, for targets with static shapes.
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add subcommands to the ``nnrconv`` command line; ``cli`` is the root `click.Group`."""
