# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The typed Python API: everything the command line does, callable from code.

NNR is the hub format and belongs to the core: a `.nnr` file is read and written by the NNC
backend, and the model inside it is rebuilt by whichever format plugin owns the bitstream's
`topology_storage_format`. Every other format is a plugin.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from nnrconv import _embedding, _inspect_embedded, _salvage, nnc
from nnrconv._carriage import Carrier, carriers, decoded_snr_db, source_defaults, with_roles
from nnrconv._compare import Comparison, TensorDifference, compare
from nnrconv._embedding import coded_units, keep_coded, pass_through
from nnrconv._files import OwnOutput, check_output, staged_output
from nnrconv._inspect_embedded import ContainerReport
from nnrconv._outputs import output_format
from nnrconv._stream_io import write_nnr
from nnrconv._topology import owner, topology_of
from nnrconv._updates import BasePaths
from nnrconv.core import (
    ArrayTensor,
    BaseMismatchError,
    BitstreamError,
    FormatError,
    FormatPlugin,
    Graph,
    Model,
    Tensor,
    UnsupportedError,
    get_registry,
)

__all__ = [
    "Comparison",
    "ConversionResult",
    "FormatInfo",
    "TensorDifference",
    "compare",
    "convert",
    "decode",
    "encode",
    "formats",
    "inspect",
    "inspect_container",
    "is_nnr",
    "load",
    "save",
]

NNR_FORMAT = "nnr"
_NNR_SUFFIXES = (".nnr", ".nnc")


@dataclass(frozen=True, slots=True)
class FormatInfo:
    """One row of `nnrconv formats`."""

    name: str
    description: str
    version: str
    plugin: str
    patterns: tuple[str, ...]
    topology_code: int | None
    available: bool
    missing: tuple[str, ...]
    install: str
    capabilities: tuple[str, ...]


@dataclass(slots=True)
class ConversionResult:
    """What a conversion did, for summaries and reports."""

    source: Path
    target: Path
    source_format: str
    target_format: str
    source_bytes: int
    target_bytes: int
    tensors: int
    parameters: int
    seconds: float
    allocation: str | None = None


def formats() -> list[FormatInfo]:
    """Every registered format, built-in and third-party, available or not."""
    registry = get_registry()
    rows = []
    for fmt in registry:
        missing = tuple(fmt.missing_requirements())
        rows.append(
            FormatInfo(
                name=fmt.name,
                description=fmt.description,
                version=fmt.version,
                plugin=registry.plugin_of(fmt.name),
                patterns=tuple(fmt.patterns),
                topology_code=fmt.topology_code,
                available=not missing,
                missing=missing,
                install=fmt.install,
                capabilities=tuple(fmt.capabilities()),
            )
        )
    return rows


def is_nnr(path: Path, head: bytes | None = None) -> bool:
    """Whether a path is an NNR bitstream: by content if it exists, else by suffix."""
    if head is None and path.is_file():
        with open(path, "rb") as f:
            head = f.read(4)
    if head:
        return nnc.looks_like_nnr(head)
    return path.suffix.lower() in _NNR_SUFFIXES and not path.is_dir()


def _require_input(path: Path) -> None:
    if not path.exists():
        raise FormatError(f"{path}: no such file or folder")
    if path.is_file() and path.stat().st_size == 0:
        raise FormatError(f"{path}: file is empty")


def _input_format(path: Path, name: str | None) -> str:
    """Name of the format of an existing input (NNR_FORMAT for bitstreams)."""
    _require_input(path)
    if name is not None:
        if name.lower() == NNR_FORMAT:
            return NNR_FORMAT
        return get_registry().get(name).name
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(4)
        if nnc.looks_like_nnr(head):
            return NNR_FORMAT
        if path.suffix.lower() in _NNR_SUFFIXES:
            raise nnc.no_start_unit(str(path), named_nnr=path.suffix.lower() in _NNR_SUFFIXES)
    elif path.is_dir() and path.suffix.lower() in _NNR_SUFFIXES:
        raise FormatError(f"{path}: is a folder, not an NNR bitstream")
    return get_registry().for_input(path).name


def _output_format(path: Path, name: str | None, model_format: str | None = None) -> str:
    return output_format(path, name, model_format)


def _own_output(name: str) -> OwnOutput | None:
    """How the output format recognises a folder it may replace; None when it writes files only."""
    fmt = None if name == NNR_FORMAT else get_registry().get(name)
    return fmt.is_own_output if fmt is not None and fmt.directory else None


def _plugin(name: str) -> FormatPlugin:
    fmt = get_registry().get(name)
    fmt.ensure_available()
    return fmt


def load(path: str | os.PathLike[str], format: str | None = None) -> Model:
    """Read a model from a native file or an NNR bitstream (whose topology names its format)."""
    path = Path(path)
    name = _input_format(path, format)
    if name == NNR_FORMAT:
        return decode(_read_bitstream(path), source=str(path))
    return _embedding.load(_plugin(name), path)


def _read_bitstream(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FormatError(f"{path}: cannot read: {exc.strerror}") from exc


def encode(
    model: Model,
    *,
    compress_topology: bool = True,
    options: nnc.CodingOptions | None = None,
    progress: nnc.Progress | None = None,
    base: nnc.BaseModel | None = None,
) -> bytes:
    """Code a model as an NNR bitstream carrying its topology (integration mode 1).

    Tensors the NNC backend can hold travel as data units, coded as `options` say (default: the
    per-tensor SNR target, `nnc.CodingOptions()`); the others stay inside the topology bytes, so
    the bitstream always rebuilds the complete model. A model without a topology (from a
    weights-only format) travels as named tensors with topology format 0.

    With `base` (`nnc.read_base` of an NNR model) the bitstream is an incremental update of it:
    only the differences to the base tensors are coded (`nnc.encode_update`).
    """
    fmt = _plugin(model.source_format) if model.source_format else None
    if options is None and base is None:
        moved = pass_through(model, fmt, compress_topology)
        if moved is not None:
            return moved
    options = source_defaults(model, options or nnc.CodingOptions())
    if options.target is not None and options.plan is None:
        resolved = _rate_plan(model, options)
        model, options = resolved.model, resolved.options
    options = with_roles(model, options)
    arrays, topology, code, compress_topology = encoding_inputs(model, options, compress_topology)
    if base is not None:
        return nnc.encode_update(
            ((name, array()) for name, array in arrays.items()),
            topology,
            code,
            base,
            compress_topology=compress_topology,
            options=options,
            progress=progress,
        )
    return nnc.encode_model(
        ((name, array()) for name, array in arrays.items()),
        topology,
        code,
        compress_topology=compress_topology,
        options=options,
        progress=progress,
    )


def encoding_inputs(
    model: Model, options: nnc.CodingOptions, compress_topology: bool = True
) -> tuple[dict[str, Carrier], bytes, int, bool]:
    """What coding `model` needs: each carried tensor's source, the topology bytes, their
    storage format code and whether to deflate them.

    Raises:
        UnsupportedError: a model without topology holds tensors NNR cannot carry, or its format
            has no NNR topology code.
    """
    fmt = _plugin(model.source_format) if model.source_format else None
    arrays = carriers(model, options, narrow=fmt is not None and fmt.carries_narrow_floats)
    if fmt is None or fmt.weights_only:
        left = [f"{t.name!r} ({t.dtype.name})" for t in model if t.name not in arrays]
        if left:
            raise UnsupportedError(
                f"tensors {', '.join(left[:5])}{' …' if len(left) > 5 else ''} cannot be carried in NNR "
                f"data units yet, and a model without topology has nowhere else to keep them"
            )
        return arrays, b"", int(nnc.TopologyStorageFormat.NNR_TPL_UNREC), compress_topology
    topology, code, deflate = topology_of(fmt, model, set(arrays))
    return arrays, topology, code, compress_topology and deflate


def decode(
    data: bytes,
    *,
    source: str = "<bytes>",
    jobs: int | None = None,
    progress: nnc.Progress | None = None,
    base: nnc.BaseModel | None = None,
    salvage: bool = False,
) -> Model:
    """Rebuild a model from an NNR bitstream, through the plugin owning its topology format.

    `jobs` threads decode the data units (default: the number of cores). An incremental update
    needs its `base` (`nnc.read_base` of the model it updates). `salvage`: see `_salvage.decode`.

    Raises:
        BaseMismatchError: an update without base, a base given with a bitstream that is no
            update, or a base that does not fit the update.
    """
    decode_model = _salvage.decode if salvage else partial(nnc.decode_model, progress=progress)
    decoded = decode_model(data, source=source, jobs=jobs, base=base)
    if base is not None and not salvage and not decoded.mps.mps_parent_signalling_enabled_flag:
        raise BaseMismatchError(
            f"{source} is not an incremental update (no parent signalling); decode it without a base"
        )
    tensors: dict[str, Tensor] = {name: ArrayTensor(name, array) for name, array in decoded.tensors.items()}
    model = model_from_parts(decoded, tensors, source, len(data), salvage=salvage)
    return keep_coded(model, decoded.parameter_sets, decoded.coded)


def model_from_parts(
    decoded: nnc.DecodedModel, tensors: dict[str, Tensor], source: str, length: int, *, salvage: bool = False
) -> Model:
    """The model a bitstream's topology and tensors make, rebuilt by the plugin owning its topology
    format (tensors may still be lazy); `length`: the bitstream's size, for error locations."""
    fmt, topology = owner(decoded.topology_storage_format, decoded.topology, source)
    if fmt is None:
        return Model(Graph(name="tensors"), tensors, source_format="")
    fmt.ensure_available()
    try:
        return fmt.from_topology(topology, tensors)
    except BitstreamError as err:
        # The topology and the data units disagree; when units are missing (a stream cut at a
        # unit boundary) the place to look is the end of the stream.
        located = err.located(unit_index=decoded.unit_count, byte_offset=length)
        lost = "; it was lost (see the warnings): give --base BASE.nnr to fill it" if salvage and err.tensor else ""
        located.args = (f"{source}: {located}{lost}",)
        raise located from err


def save(
    model: Model,
    path: str | os.PathLike[str],
    format: str | None = None,
    *,
    force: bool = False,
    inputs: Sequence[Path] = (),
    options: nnc.CodingOptions | None = None,
    progress: nnc.Progress | None = None,
    base: nnc.BaseModel | None = None,
) -> None:
    """Write a model natively or as NNR (coded as `options` say); atomic, never replacing a file without `force`.

    With `base`, the NNR output is an incremental update of that base model.
    """
    path = Path(path)
    name = _output_format(path, format, model.source_format)
    own = _own_output(name)
    check_output(path, inputs=tuple(inputs), force=force, is_own_output=own)
    if base is not None and name != NNR_FORMAT:
        raise UnsupportedError(f"{path}: an incremental update (base model) can only be written as an .nnr bitstream")
    if name == NNR_FORMAT:
        if base is None and (options is not None or coded_units(model) is None):
            options = options or nnc.CodingOptions()
            if options.target is not None and options.plan is None:
                resolved = _rate_plan(model, options)
                model, options = resolved.model, resolved.options
            with staged_output(path, force=force, is_own_output=own) as staged:
                write_nnr(model, staged, options=options, progress=progress)  # unit by unit
            return
        data = encode(model, options=options, progress=progress, base=base)
        with staged_output(path, force=force, is_own_output=own) as staged:
            staged.write_bytes(data)
        return
    fmt = _plugin(name)
    if model.source_format != fmt.name and not fmt.accepts_foreign_tensors:
        origin = f"a {model.source_format} model" if model.source_format else "tensors without a topology"
        hint = "" if model.source_format else "; write them to a weights-only format"
        raise UnsupportedError(f"{path}: cannot write {origin} as {fmt.name}{hint}")
    if fmt.matches_embedded(path):
        source_fmt = _plugin(model.source_format) if model.source_format else None
        with staged_output(path, force=force, is_own_output=own) as staged:
            _embedding.save(fmt, source_fmt, model, staged, options, progress)
        return
    with staged_output(path, force=force, is_own_output=own) as staged:
        fmt.save(model, staged)


def convert(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    from_format: str | None = None,
    to_format: str | None = None,
    force: bool = False,
    options: nnc.CodingOptions | None = None,
    jobs: int | None = None,
    progress: nnc.Progress | None = None,
    base: BasePaths | None = None,
    parent_ref: nnc.ParentRef = "sha256",
    partial: bool = False,
    salvage: bool = False,
    verify_key: str | os.PathLike[str] | None = None,
    signature: str | os.PathLike[str] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    calibration: str | os.PathLike[str] | None = None,
    cluster: Any = None,
    send_tensors: bool = False,
) -> ConversionResult:
    """Convert a model file: native → NNR, NNR → native, or native → native of the same format.

    `cluster` (a Dask scheduler address such as ``"tcp://host:8786"``, or a connected
    `distributed.Client`) runs the per-tensor coding and decoding there, with byte-identical
    results; its workers read the tensors from the input path, or receive them with
    `send_tensors` (see `nnrconv._cluster`). An NNR input without base, salvage or partial is
    decoded as it is written (`nnrconv._stream_io.open_nnr`).

    `options` say how tensors are coded into NNR (default `nnc.CodingOptions()`: lossy, each
    tensor at the default weight SNR; pass `nnc.CodingOptions(lossless=True)` for bit-exactness).
    Without `options`, tensors read already coded (from NNR) keep their data units unchanged.
    `jobs` sets the decoding threads (default: `options.jobs`, else all cores).

    With `verify_key` (an EC public key, PEM) the source, and each base if given, must carry a
    valid signature (`signature`, default SOURCE.sig; BASE.sig) before anything is read.

    `base` (an NNR file, or a chain: the full model then its updates in order) makes the
    conversion incremental: native → NNR writes an update of the model the base decodes to (only
    the differences are coded, parents named as `parent_ref` says: "sha256" binds the update to
    that exact base, "id" names parents by node id only); NNR → native restores a model from an
    update and its base. Writing an update of a model the format can run orders its data units
    by measured output improvement (on `calibration`, else synthetic inputs; `_update_order`).

    `salvage` (NNR input only): decode what survives of a damaged bitstream, `base` filling
    losses; with `base`, an update cut short (in transmission) applies its complete data units
    and keeps the base for the rest. `partial` is the same, kept as an alias that requires a base.

    A rate target in `options` (`output_snr_db`, `bits_per_param`, `size_bytes`) is met by a
    per-tensor plan measured on `calibration` (an `.npz` or a folder of them; default: seeded
    synthetic inputs shaped by `input_shapes`); the result's `allocation` says which was used.

    Raises:
        BaseMismatchError: the base does not fit the model or update, or an update is decoded
            without base.
        SignatureError: with `verify_key`, an input is unsigned or its signature is invalid.
    """
    from nnrconv._convert import convert_files

    return convert_files(
        Path(source),
        Path(target),
        from_format=from_format,
        to_format=to_format,
        force=force,
        options=options,
        jobs=jobs,
        progress=progress,
        base=base,
        parent_ref=parent_ref,
        partial=partial,
        salvage=salvage,
        verify_key=verify_key,
        signature=signature,
        input_shapes=input_shapes,
        calibration=calibration,
        cluster=cluster,
        send_tensors=send_tensors,
    )


def _rate_plan(model: Model, options: nnc.CodingOptions, **where: Any) -> Any:
    """`options` with the per-tensor plan meeting their rate target (nnrconv._rate.resolve)."""
    from nnrconv._rate import resolve

    fmt = _plugin(model.source_format) if model.source_format else None
    return resolve(model, fmt, options, measure_size=lambda planned: len(encode(model, options=planned)), **where)


def _disk_size(path: Path) -> int:
    """Size of a file, or of everything under a folder; for ONNX, external data files count too."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    if path.name.lower().endswith(".safetensors.index.json"):  # the index names a checkpoint folder
        return _disk_size(path.parent)
    return path.stat().st_size


def inspect_container(path: str | os.PathLike[str], format: str | None = None) -> ContainerReport | None:
    """The NNR units and integrity of a native container with NNR inside; None for a bitstream."""
    path = Path(path)
    name = _input_format(path, format)
    return None if name == NNR_FORMAT else _inspect_embedded.inspect_container(_plugin(name), path)


def inspect(
    path: str | os.PathLike[str], *, original: str | os.PathLike[str] | None = None
) -> list[nnc.UnitInfo]:
    """One record per NNR unit of a bitstream file.

    With `original` (the model that was coded, any format) each data unit also gets its weight
    SNR against the original tensor of the same name.
    """
    path = Path(path)
    _require_input(path)
    if path.is_dir():
        raise FormatError(f"{path}: is a folder, not an NNR bitstream")
    data = _read_bitstream(path)
    if not nnc.looks_like_nnr(data[:4]):
        raise nnc.no_start_unit(str(path), named_nnr=path.suffix.lower() in _NNR_SUFFIXES)
    infos = nnc.inspect_units(data, source=str(path))
    if original is None:
        return infos
    reference = load(original)
    decoded = nnc.decode_model(data, source=str(path)).tensors
    result = []
    for info in infos:
        tensor = reference.tensors.get(info.tensor) if info.tensor is not None else None
        if tensor is not None and info.tensor in decoded:
            info = dataclasses.replace(info, snr_db=decoded_snr_db(tensor, decoded[info.tensor]))
        result.append(info)
    return result
