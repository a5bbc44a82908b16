# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The body of `nnrconv.convert`: read a model file, write it in another format.

Kept apart from `_api` (which holds the public signature and docstring) so that each stays
small. An NNR input is decoded one of two ways: as it is written (`_stream_io.open_nnr`: lazy
tensors decoded ahead within a memory window, for checkpoints larger than memory) when nothing
needs the whole stream at once; whole (`_api.decode`) for salvage (and a cut update), an
update applied to its base chain, an output the model must name first, and NNR embedded in a
native container (whose data units move as they are).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nnrconv import _api, _embedding, nnc
from nnrconv._api import NNR_FORMAT, ConversionResult, _plugin
from nnrconv._cluster import using_cluster
from nnrconv._files import check_output
from nnrconv._folder_output import checkpoint_target
from nnrconv._outputs import name_tells_format
from nnrconv._stream_io import open_nnr
from nnrconv._update_order import measured_importance
from nnrconv._updates import BasePaths, applicable_part, base_paths, read_base_files
from nnrconv.core import Model, NNRConvError, UnsupportedError, get_plugin_manager, get_registry

__all__ = ["convert_files"]


def convert_files(
    source: Path,
    target: Path,
    *,
    from_format: str | None,
    to_format: str | None,
    force: bool,
    options: nnc.CodingOptions | None,
    jobs: int | None,
    progress: nnc.Progress | None,
    base: BasePaths | None,
    parent_ref: nnc.ParentRef,
    partial: bool,
    salvage: bool,
    verify_key: str | os.PathLike[str] | None,
    signature: str | os.PathLike[str] | None,
    input_shapes: Mapping[str, Sequence[int]] | None,
    calibration: str | os.PathLike[str] | None,
    cluster: Any,
    send_tensors: bool,
) -> ConversionResult:
    """`nnrconv.convert` (see its docstring), with paths already made `Path`s."""
    started = time.perf_counter()
    _api._require_input(source)
    inputs = (source, *base_paths(base))
    if verify_key is not None:
        from nnrconv._signing import verify

        for path, sig in zip(inputs, (signature, *[None] * (len(inputs) - 1)), strict=True):
            verify(path, verify_key, signature=sig)
    src_name = _api._input_format(source, from_format)
    # None: the name tells no format, so the model decides once read (see `_outputs`).
    dst_name = _api._output_format(target, to_format) if to_format or name_tells_format(target) else None
    if dst_name is not None or not target.is_dir():  # else `save` checks, once the model names the format
        own = _api._own_output(dst_name) if dst_name else None
        check_output(target, inputs=inputs, force=force, is_own_output=own)
    if src_name == NNR_FORMAT and dst_name == NNR_FORMAT:
        raise UnsupportedError(f"{target}: input and output are both NNR bitstreams; nothing to convert")
    threads = jobs if jobs is not None else (options.jobs if options else None)
    base_model = None
    if base is not None:
        if NNR_FORMAT not in (src_name, dst_name):
            raise UnsupportedError("a base model applies to NNR input (an update) or NNR output; neither is NNR")
        base_model = read_base_files(base, jobs=threads, parent_ref=parent_ref)
    if salvage and src_name != NNR_FORMAT:
        raise UnsupportedError(f"{source}: --salvage applies to NNR bitstreams (.nnr), not to {src_name} files")
    if partial and src_name == NNR_FORMAT and base_model is None:
        raise UnsupportedError(f"{source}: --partial applies a cut update to its base; give --base")
    lazy = src_name == NNR_FORMAT and base_model is None and not (salvage or partial)
    # A bare existing folder: a sharded checkpoint's stream writes its index there (read lazily).
    bare = lazy and dst_name is None and target.is_dir()
    streamed = lazy and dst_name is not None and not _plugin(dst_name).matches_embedded(target)
    with contextlib.ExitStack() as lazily:
        lazily.enter_context(using_cluster(cluster, send_tensors=send_tensors))
        model = lazily.enter_context(open_nnr(source, jobs=threads, progress=progress)) if streamed or bare else None
        if bare and model is not None and checkpoint_target(model, target) is None:
            model = None  # other models decode whole into a folder, as before
        if model is None:
            model = _read_whole(source, src_name, threads, progress, base_model, partial=partial, salvage=salvage)
        found = checkpoint_target(model, target) if bare else None
        if found is not None:
            target, dst_name = found
        dst_name = dst_name or _api._output_format(target, None, model.source_format)
        allocation = _write(
            model, source, target, src_name, dst_name, inputs,
            force=force, options=options, progress=progress, base_model=base_model,
            input_shapes=input_shapes, calibration=calibration,
        )  # fmt: skip
    return ConversionResult(
        source=source,
        target=target,
        source_format=src_name,
        target_format=dst_name,
        source_bytes=_api._disk_size(source),
        target_bytes=_api._disk_size(target),
        tensors=len(model.tensors),
        parameters=model.parameter_count,
        seconds=time.perf_counter() - started,
        allocation=allocation,
    )


def _read_whole(
    source: Path,
    src_name: str,
    threads: int | None,
    progress: nnc.Progress | None,
    base_model: nnc.BaseModel | None,
    *,
    partial: bool,
    salvage: bool,
) -> Model:
    """The input model, decoded whole (NNR) or loaded by its plugin."""
    if src_name != NNR_FORMAT:
        return _api.load(source, src_name)
    data = _api._read_bitstream(source)
    if partial or (salvage and base_model is not None):  # a cut before the topology: exit 4, saying so
        applicable_part(data, str(source))
    # A cut update's missing units are checked against its integrity record like lost ones.
    return _api.decode(
        data, source=str(source), jobs=threads, progress=progress, base=base_model, salvage=salvage or partial
    )


def _write(
    model: Model,
    source: Path,
    target: Path,
    src_name: str,
    dst_name: str,
    inputs: tuple[Path, ...],
    *,
    force: bool,
    options: nnc.CodingOptions | None,
    progress: nnc.Progress | None,
    base_model: nnc.BaseModel | None,
    input_shapes: Mapping[str, Sequence[int]] | None,
    calibration: str | os.PathLike[str] | None,
) -> str | None:
    """Save `model` as `dst_name` (translated first when needed); returns the rate allocation used."""
    if not model.source_format and dst_name != NNR_FORMAT and not _plugin(dst_name).accepts_foreign_tensors:
        weights_only = ", ".join(f.name for f in get_registry() if f.accepts_foreign_tensors) or "none installed"
        raise UnsupportedError(
            f"{source}: the bitstream carries no topology, only {len(model.tensors)} named tensors; "
            f"write them to a weights-only format ({weights_only})"
        )
    allocation = None
    if options is not None and options.target is not None and options.plan is None:
        resolved = _api._rate_plan(model, options, calibration=calibration, input_shapes=input_shapes)
        model, options, allocation = resolved.model, resolved.options, resolved.summary
    if _needs_translation(model, dst_name):
        with tempfile.TemporaryDirectory(prefix="nnrconv-") as workdir:
            model = _translate(model, source, src_name, dst_name, Path(workdir), input_shapes)
            _api.save(model, target, dst_name, force=force, inputs=inputs, options=options, progress=progress)
        return allocation
    update_base = base_model if dst_name == NNR_FORMAT else None
    if input_shapes and allocation is None and update_base is None:
        raise UnsupportedError(
            f"{target}: input shapes apply to conversion into another format, to a rate target's "
            "and to an update's synthetic calibration inputs"
        )
    if update_base is not None:  # units most useful first, as measured by running the model
        importance = measured_importance(
            model, update_base, _plugin(model.source_format) if model.source_format else None,
            calibration=calibration, input_shapes=input_shapes,
        )  # fmt: skip
        if importance is not None:
            options = dataclasses.replace(options or nnc.CodingOptions(), importance=importance)
    _api.save(
        model, target, dst_name, force=force, inputs=inputs, options=options, progress=progress, base=update_base
    )
    return allocation


def _needs_translation(model: Model, dst_name: str) -> bool:
    """A model of one format written as another that cannot simply take its tensors."""
    if dst_name == NNR_FORMAT or not model.source_format or model.source_format == dst_name:
        return False
    return not _plugin(dst_name).accepts_foreign_tensors


def _translate(
    model: Model,
    source: Path,
    src_name: str,
    dst_name: str,
    workdir: Path,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> Model:
    """Convert `model` to another format through a plugin's `convert_model` hook.

    Converters work on files; a model decoded from NNR is first written natively into
    `workdir`. The returned model may map files inside `workdir`, which must outlive its use.
    """
    fmt = _plugin(model.source_format)
    native = source
    try:
        if src_name == NNR_FORMAT:
            native = workdir / fmt.native_name(model)
            fmt.save(model, native)
        hook = get_plugin_manager().hook.convert_model
        result = hook(
            source=native, source_format=fmt.name, target_format=dst_name, workdir=workdir, input_shapes=input_shapes
        )
    except NNRConvError as err:
        # Speak of the user's file, not of the private copy made of it.
        err.args = (str(err).replace(str(native), f"{source} (decoded as {fmt.name})"),)
        raise
    if result is None:
        raise UnsupportedError(
            f"{source}: no installed plugin converts {fmt.name} models to {dst_name}; "
            f"formats convert to and from NNR, and to formats that take plain tensors"
        )
    return _embedding.load(_plugin(dst_name), Path(result))
