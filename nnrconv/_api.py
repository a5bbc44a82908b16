# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The typed Python API: everything the command line does, callable from code.

NNR is the hub format and belongs to the core: a `.nnr` file is read and written by the NNC
backend, and the model inside it is rebuilt by whichever format plugin owns the bitstream's
`topology_storage_format`. Every other format is a plugin.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnrconv import nnc
from nnrconv._carriage import Carrier, carriers, comparable, decoded_snr_db
from nnrconv._cluster import using_cluster
from nnrconv._files import check_output, staged_output
from nnrconv._stream_io import open_nnr, write_nnr
from nnrconv.core import (
    ArrayTensor,
    BaseMismatchError,
    BitstreamError,
    CodedTensor,
    FormatError,
    FormatPlugin,
    Graph,
    Model,
    NNRConvError,
    Tensor,
    UnsupportedError,
    get_plugin_manager,
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


@dataclass(frozen=True, slots=True)
class TensorDifference:
    """How one tensor differs between two models (`compare`)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    max_abs: float
    bit_identical: bool


@dataclass(slots=True)
class Comparison:
    differences: list[TensorDifference] = field(default_factory=list)
    only_in_first: list[str] = field(default_factory=list)
    only_in_second: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.only_in_first and not self.only_in_second and all(d.bit_identical for d in self.differences)

    @property
    def max_abs(self) -> float:
        return max((d.max_abs for d in self.differences), default=0.0)


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
            raise FormatError(f"{path}: not an NNR bitstream (no NNR start unit at byte offset 0)")
    elif path.is_dir() and path.suffix.lower() in _NNR_SUFFIXES:
        raise FormatError(f"{path}: is a folder, not an NNR bitstream")
    return get_registry().for_input(path).name


def _output_format(path: Path, name: str | None) -> str:
    if name is not None:
        return NNR_FORMAT if name.lower() == NNR_FORMAT else get_registry().get(name).name
    if path.suffix.lower() in _NNR_SUFFIXES:
        return NNR_FORMAT
    return get_registry().for_output(path).name


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
    return _plugin(name).load(path)


def _read_bitstream(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FormatError(f"{path}: cannot read: {exc.strerror}") from exc


def _carried(tensor: ArrayTensor, options: nnc.CodingOptions) -> bool:
    """Whether a tensor travels as an NDU under these options (else it stays in the topology)."""
    if not tensor.dtype.is_numpy_native or not nnc.can_carry(tensor.dtype.storage_dtype):
        return False
    return nnc.can_carry(tensor.numpy(), options)


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
        moved = _pass_through(model, fmt, compress_topology)
        if moved is not None:
            return moved
    options = options or nnc.CodingOptions()
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
    carried = [t for t in model if t.name in arrays]
    if fmt is None or fmt.weights_only:
        left = [f"{t.name!r} ({t.dtype.name})" for t in model if t.name not in arrays]
        if left:
            raise UnsupportedError(
                f"tensors {', '.join(left[:5])}{' …' if len(left) > 5 else ''} cannot be carried in NNR "
                f"data units yet, and a model without topology has nowhere else to keep them"
            )
        topology, code = b"", int(nnc.TopologyStorageFormat.NNR_TPL_UNREC)
    elif fmt.topology_code is None:
        raise UnsupportedError(
            f"format {fmt.name!r} has no NNR topology code, so NNR cannot carry its topology; "
            f"convert the model to a format that has one first (onnx, nnef, tensorflow or pytorch)"
        )
    else:
        topology = fmt.topology_bytes(model, {t.name for t in carried})
        code = fmt.topology_code
        compress_topology = compress_topology and fmt.deflate_topology(topology)
    return arrays, topology, code, compress_topology


def coded_units(model: Model) -> tuple[bytes, dict[str, bytes]] | None:
    """The parameter sets and NDUs of a model whose tensors are still NNR-coded, if they agree.

    A model read from NNR (`.nnr`, or NNR inside a native container) keeps each tensor's data
    unit; when all its coded tensors share one set of parameter sets, they can move to another
    NNR container as they are, without decoding or re-quantizing.
    """
    coded = [t for t in model if isinstance(t, CodedTensor)]
    if not coded or len({t.parameter_sets for t in coded}) != 1:
        return None
    return coded[0].parameter_sets, {t.name: t.ndu for t in coded}


def _pass_through(model: Model, fmt: FormatPlugin | None, compress_topology: bool) -> bytes | None:
    units = coded_units(model)
    if units is None:
        return None
    parameter_sets, ndus = units
    if fmt is None or fmt.weights_only:
        if len(ndus) != len(model.tensors):
            return None
        topology, code = b"", int(nnc.TopologyStorageFormat.NNR_TPL_UNREC)
    elif fmt.topology_code is None:
        return None
    else:
        topology, code = fmt.topology_bytes(model, set(ndus)), fmt.topology_code
        compress_topology = compress_topology and fmt.deflate_topology(topology)
    return nnc.assemble_model(parameter_sets, topology, code, ndus.values(), compress_topology=compress_topology)


def _keep_coded(model: Model, parameter_sets: bytes | None, coded: dict[str, bytes] | None) -> Model:
    """Wrap the tensors that came from data units so that they remember their units."""
    if parameter_sets is None or coded is None:
        return model
    for name, tensor in list(model.tensors.items()):
        ndu = coded.get(name)
        if ndu is not None and not isinstance(tensor, CodedTensor):
            model.tensors[name] = CodedTensor(
                name, tensor.dtype, tensor.shape, ndu, parameter_sets, tensor.numpy, role=tensor.role
            )
    return model


def decode(
    data: bytes,
    *,
    source: str = "<bytes>",
    jobs: int | None = None,
    progress: nnc.Progress | None = None,
    base: nnc.BaseModel | None = None,
) -> Model:
    """Rebuild a model from an NNR bitstream, through the plugin owning its topology format.

    `jobs` threads decode the data units (default: the number of cores). An incremental update
    needs its `base` (`nnc.read_base` of the model it updates).

    Raises:
        BaseMismatchError: an update without base, a base given with a bitstream that is no
            update, or a base that does not fit the update.
    """
    decoded = nnc.decode_model(data, source=source, jobs=jobs, progress=progress, base=base)
    if base is not None and not decoded.mps.mps_parent_signalling_enabled_flag:
        raise BaseMismatchError(
            f"{source} is not an incremental update (no parent signalling); decode it without a base"
        )
    tensors: dict[str, Tensor] = {name: ArrayTensor(name, array) for name, array in decoded.tensors.items()}
    model = model_from_parts(decoded, tensors, source, len(data))
    return _keep_coded(model, decoded.parameter_sets, decoded.coded)


def model_from_parts(decoded: nnc.DecodedModel, tensors: dict[str, Tensor], source: str, length: int) -> Model:
    """The model a bitstream's topology and tensors make, rebuilt by the plugin owning its topology
    format (tensors may still be lazy); `length`: the bitstream's size, for error locations."""
    code = decoded.topology_storage_format
    if code == nnc.TopologyStorageFormat.NNR_TPL_UNREC:
        return Model(Graph(name="tensors"), tensors, source_format="")
    fmt = get_registry().for_topology(code)
    if fmt is None:
        label = _topology_label(code)
        raise UnsupportedError(f"{source}: the bitstream's topology format is {label}; no installed plugin rebuilds it")
    fmt.ensure_available()
    try:
        return fmt.from_topology(decoded.topology, tensors)
    except BitstreamError as err:
        # The topology and the data units disagree; when units are missing (a stream cut at a
        # unit boundary) the place to look is the end of the stream.
        located = err.located(unit_index=decoded.unit_count, byte_offset=length)
        located.args = (f"{source}: {located}",)
        raise located from err


def _topology_label(code: int) -> str:
    try:
        return f"{nnc.TopologyStorageFormat(code).name} ({code})"
    except ValueError:
        return f"unknown code {code}"


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
    check_output(path, inputs=tuple(inputs), force=force)
    name = _output_format(path, format)
    if base is not None and name != NNR_FORMAT:
        raise UnsupportedError(f"{path}: an incremental update (base model) can only be written as an .nnr bitstream")
    if name == NNR_FORMAT:
        if base is None and (options is not None or coded_units(model) is None):
            with staged_output(path, force=force) as staged:
                write_nnr(model, staged, options=options, progress=progress)  # unit by unit
            return
        data = encode(model, options=options, progress=progress, base=base)
        with staged_output(path, force=force) as staged:
            staged.write_bytes(data)
        return
    fmt = _plugin(name)
    if model.source_format != fmt.name and not fmt.accepts_foreign_tensors:
        origin = f"a {model.source_format} model" if model.source_format else "tensors without a topology"
        hint = "" if model.source_format else "; write them to a weights-only format"
        raise UnsupportedError(f"{path}: cannot write {origin} as {fmt.name}{hint}")
    if fmt.matches_embedded(path):
        parameter_sets, ndus = _embedded_units(model, options, progress)
        with staged_output(path, force=force) as staged:
            fmt.save_embedded(model, staged, parameter_sets, ndus)
        return
    with staged_output(path, force=force) as staged:
        fmt.save(model, staged)


def _embedded_units(
    model: Model, options: nnc.CodingOptions | None, progress: nnc.Progress | None = None
) -> tuple[bytes, dict[str, bytes]]:
    """Parameter sets and one NDU per carried tensor, for NNR inside a native container.

    Without `options`, tensors still coded from an NNR source keep their units (when all of them
    are coded under the same parameter sets; the others stay plain, as they were not carried);
    otherwise every carriable tensor is coded anew.
    """
    units = coded_units(model) if options is None else None
    if units is not None:
        return units
    options = options or nnc.CodingOptions()
    carried = [t for t in model if _carried(t, options)]
    return nnc.encode_parts(((t.name, t.numpy()) for t in carried), options, progress=progress)


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
    base: str | os.PathLike[str] | None = None,
    cluster: Any = None,
    send_tensors: bool = False,
) -> ConversionResult:
    """Convert a model file: native → NNR, NNR → native, or native → native of the same format.

    `cluster` (a Dask scheduler address such as ``"tcp://host:8786"``, or a connected
    `distributed.Client`) runs the per-tensor coding and decoding there, with byte-identical
    results; its workers read the tensors from the input path, or receive them with
    `send_tensors` (see `nnrconv._cluster`).

    `options` say how tensors are coded into NNR (default `nnc.CodingOptions()`: lossy, each
    tensor at the default weight SNR; pass `nnc.CodingOptions(lossless=True)` for bit-exactness).
    Without `options`, tensors read already coded (from NNR) keep their data units unchanged.
    `jobs` sets the decoding threads (default: `options.jobs`, else all cores).

    `base` (an NNR file) makes the conversion incremental: native → NNR writes an update of the
    base (only the differences are coded); NNR → native restores a model from an update and its
    base.

    Raises:
        BaseMismatchError: the base does not fit the model or update, or an update is decoded
            without base.
    """
    source, target = Path(source), Path(target)
    started = time.perf_counter()
    _require_input(source)
    check_output(target, inputs=(source,), force=force)
    src_name = _input_format(source, from_format)
    dst_name = _output_format(target, to_format)
    if src_name == NNR_FORMAT and dst_name == NNR_FORMAT:
        raise UnsupportedError(f"{target}: input and output are both NNR bitstreams; nothing to convert")
    threads = jobs if jobs is not None else (options.jobs if options else None)
    base_model = None
    if base is not None:
        if NNR_FORMAT not in (src_name, dst_name):
            raise UnsupportedError("a base model applies to NNR input (an update) or NNR output; neither is NNR")
        base_path = Path(base)
        _require_input(base_path)
        base_model = nnc.read_base(_read_bitstream(base_path), source=str(base_path), jobs=threads)
    model: Model | None = None
    with contextlib.ExitStack() as lazily:
        lazily.enter_context(using_cluster(cluster, send_tensors=send_tensors))
        if src_name == NNR_FORMAT and base_model is None and not _plugin(dst_name).matches_embedded(target):
            model = lazily.enter_context(open_nnr(source, jobs=threads, progress=progress))  # decoded as written
        if src_name == NNR_FORMAT and model is None:
            model = decode(
                _read_bitstream(source), source=str(source), jobs=threads, progress=progress, base=base_model
            )
        elif src_name != NNR_FORMAT:
            model = load(source, src_name)
        _convert_model(model, source, target, src_name, dst_name, force, options, progress, base_model)
    return ConversionResult(
        source=source,
        target=target,
        source_format=src_name,
        target_format=dst_name,
        source_bytes=_disk_size(source),
        target_bytes=_disk_size(target),
        tensors=len(model.tensors),
        parameters=model.parameter_count,
        seconds=time.perf_counter() - started,
    )


def _convert_model(
    model: Model,
    source: Path,
    target: Path,
    src_name: str,
    dst_name: str,
    force: bool,
    options: nnc.CodingOptions | None,
    progress: nnc.Progress | None,
    base_model: nnc.BaseModel | None,
) -> None:
    if not model.source_format and dst_name != NNR_FORMAT and not _plugin(dst_name).accepts_foreign_tensors:
        weights_only = ", ".join(f.name for f in get_registry() if f.accepts_foreign_tensors) or "none installed"
        raise UnsupportedError(
            f"{source}: the bitstream carries no topology, only {len(model.tensors)} named tensors; "
            f"write them to a weights-only format ({weights_only})"
        )
    if _needs_translation(model, dst_name):
        with tempfile.TemporaryDirectory(prefix="nnrconv-") as workdir:
            model = _translate(model, source, src_name, dst_name, Path(workdir))
            save(model, target, dst_name, force=force, inputs=(source,), options=options, progress=progress)
    else:
        update_base = base_model if dst_name == NNR_FORMAT else None
        save(
            model,
            target,
            dst_name,
            force=force,
            inputs=(source,),
            options=options,
            progress=progress,
            base=update_base,
        )


def _needs_translation(model: Model, dst_name: str) -> bool:
    """A model of one format written as another that cannot simply take its tensors."""
    if dst_name == NNR_FORMAT or not model.source_format or model.source_format == dst_name:
        return False
    return not _plugin(dst_name).accepts_foreign_tensors


def _translate(model: Model, source: Path, src_name: str, dst_name: str, workdir: Path) -> Model:
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
        result = hook(source=native, source_format=fmt.name, target_format=dst_name, workdir=workdir)
    except NNRConvError as err:
        # Speak of the user's file, not of the private copy made of it.
        err.args = (str(err).replace(str(native), f"{source} (decoded as {fmt.name})"),)
        raise
    if result is None:
        raise UnsupportedError(
            f"{source}: no installed plugin converts {fmt.name} models to {dst_name}; "
            f"formats convert to and from NNR, and to formats that take plain tensors"
        )
    return _plugin(dst_name).load(Path(result))


def _disk_size(path: Path) -> int:
    """Size of a file, or of everything under a folder; for ONNX, external data files count too."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    if path.name.lower().endswith(".safetensors.index.json"):  # the index names a checkpoint folder
        return _disk_size(path.parent)
    return path.stat().st_size


def inspect(path: str | os.PathLike[str], *, original: str | os.PathLike[str] | None = None) -> list[nnc.UnitInfo]:
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
        raise FormatError(f"{path}: not an NNR bitstream (no NNR start unit at byte offset 0)")
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


def compare(first: Model, second: Model) -> Comparison:
    """Tensor-by-tensor differences between two models (names matched exactly)."""
    result = Comparison()
    for name, a in first.tensors.items():
        b = second.tensors.get(name)
        if b is None:
            result.only_in_first.append(name)
            continue
        result.differences.append(_difference(name, comparable(a), comparable(b), a.dtype.name))
    result.only_in_second = [n for n in second.tensors if n not in first.tensors]
    return result


def _difference(name: str, a: np.ndarray, b: np.ndarray, dtype: str) -> TensorDifference:
    identical = a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()
    if a.shape != b.shape:
        max_abs = float("inf")
    elif a.dtype.kind in "fiub" and b.dtype.kind in "fiub" and a.size:
        max_abs = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
    else:
        max_abs = 0.0 if identical else float("inf")
    return TensorDifference(name, tuple(a.shape), dtype, max_abs, identical)
