# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""NNEF models on disk: a folder (or `.tgz` of one) with `graph.nnef`, `graph.quant` and `.dat` files.

NOTE: the model's `native` is an `NnefDocument`: the graph and quantisation text exactly as read,
and per variable label the exact `.dat` header. Writing puts the text back byte for byte and
rebuilds each `.dat` from that header and the tensor in `Model.tensors`, so a model read and
written (or carried through NNR) comes back with bit-identical files.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnrconv.core import (
    BitstreamError,
    DType,
    FormatError,
    LazyTensor,
    MappedTensor,
    Model,
    Tensor,
    TensorRole,
    UnsupportedError,
)
from nnrconv.core._digest_parts import DIGEST_KEY, UNVERIFIED, VERIFIED
from nnrconv_nnef import _digest, _gzip
from nnrconv_nnef._dat import HEADER_SIZE, DatError, DatHeader, decode_payload, encode_payload
from nnrconv_nnef._graph import GraphError, ParsedGraph, VariableDecl, parse_graph

__all__ = [
    "GRAPH_FILE",
    "PARAMETER_SETS_FILE",
    "QUANT_FILE",
    "DatRecord",
    "NnefDocument",
    "dat_bytes",
    "is_tgz_name",
    "model_from_document",
    "read_model",
    "write_files",
    "write_model",
]

GRAPH_FILE = "graph.nnef"
QUANT_FILE = "graph.quant"
# NNR inside NNEF (integration mode 2, `_embed`): the NNR start unit and model parameter set
# that the NNR-coded `.dat` payloads need, beside graph.nnef.
PARAMETER_SETS_FILE = "graph.nnr"
_TGZ_SUFFIXES = (".tgz", ".tar.gz")


@dataclass(slots=True)
class DatRecord:
    """A variable's `.dat` file as nnrconv keeps it.

    Attributes:
        decl: the variable's declaration in the graph.
        header: the exact header of its `.dat` file.
        opaque: for payloads nnrconv cannot interpret (vendor item types, odd bit widths), a
            function returning the payload bytes; None when the data lives in `Model.tensors`.
    """

    decl: VariableDecl
    header: DatHeader
    opaque: Callable[[], bytes] | None = None


@dataclass(slots=True)
class NnefDocument:
    """The native form of an NNEF model (see the module note)."""

    graph_text: bytes
    quant_text: bytes | None
    parsed: ParsedGraph
    records: dict[str, DatRecord] = field(default_factory=dict)
    # Keeps the folder a `.tgz` was extracted to alive while the model's tensors map its files.
    keepalive: Any = None
    # The bytes of graph.nnr, if the folder has one (see `_embed`); never written by `write_model`.
    parameter_sets: bytes | None = None
    # "verified" or "unverified (no container digest)" (see `_digest`), for `Model.metadata`.
    digest_status: str | None = None


def is_tgz_name(path: Path) -> bool:
    return path.name.lower().endswith(_TGZ_SUFFIXES)


# -- reading -----------------------------------------------------------------------------------


def read_model(path: Path) -> Model:
    """Read a model folder or `.tgz`; tensor data stays in the `.dat` files until asked for.

    Raises:
        FormatError: no `graph.nnef`, a graph that does not parse, a missing or corrupt `.dat`,
            or a `.dat` whose shape differs from its variable's declaration.
    """
    keepalive, gzip_header = None, None
    if path.is_dir():
        root = path
    else:
        keepalive, root, gzip_header = _extract(path)
    # The container digest first: damage anywhere is then named by file and byte offset.
    digest_status = VERIFIED if _digest.check(root, str(path), gzip_header) else UNVERIFIED
    graph_path = root / GRAPH_FILE
    if not graph_path.is_file():
        raise FormatError(f"{path}: not an NNEF model: no {GRAPH_FILE} in it")
    graph_text = _read(graph_path, path)
    quant_path = root / QUANT_FILE
    quant_text = _read(quant_path, path) if quant_path.is_file() else None
    try:
        parsed = parse_graph(graph_text, quant_text)
    except GraphError as exc:
        raise FormatError(f"{path}: {GRAPH_FILE}: {exc}") from None
    document = NnefDocument(graph_text, quant_text, parsed, keepalive=keepalive, digest_status=digest_status)
    nnr_path = root / PARAMETER_SETS_FILE
    if nnr_path.is_file():
        document.parameter_sets = _read(nnr_path, path)
    tensors: dict[str, Tensor] = {}
    for label, decl in parsed.variables.items():
        role = parsed.roles.get(label, TensorRole.OTHER)
        record, tensor = _read_variable(root, decl, role, path, keepalive)
        document.records[label] = record
        if tensor is not None:
            tensors[label] = tensor
    return model_from_document(document, tensors)


def check_digest(path: Path) -> bool:
    """Verify the container digest of the folder or `.tgz` at `path` alone; False when it has none.

    Raises:
        BitstreamError: damage (see `_digest.check`).
        FormatError: not a readable folder or `.tgz`.
    """
    if path.is_dir():
        return _digest.check(path, str(path))
    workdir, root, gzip_header = _extract(path)
    with workdir:
        return _digest.check(root, str(path), gzip_header)


def model_from_document(document: NnefDocument, tensors: dict[str, Tensor]) -> Model:
    model = Model(document.parsed.graph, tensors, source_format="nnef", native=document)
    if document.digest_status == VERIFIED or (document.digest_status and document.parameter_sets is not None):
        model.metadata[DIGEST_KEY] = document.digest_status
    return model


def _read(file: Path, model: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        raise FormatError(f"{model}: cannot read {file.name}: {exc.strerror}") from exc


def _extract(path: Path) -> tuple[tempfile.TemporaryDirectory[str], Path, _digest.GzipHead]:
    """Unpack a `.tgz` into a private temporary folder; return it, the folder holding graph.nnef
    and the gzip header (which the container digest covers).

    Raises:
        FormatError: not a readable gzip-compressed tar.
        BitstreamError: the same, for an archive of NNR inside NNEF (named `*.nnr.*`, or holding
            `graph.nnr`): damaged, not of another format.
    """
    # The compressed stream's digest first (in the header of a sealed `.nnr.tgz`).
    try:
        gzip_sealed = _gzip.verify(path)
    except OSError as exc:
        raise FormatError(f"{path}: cannot read: {exc.strerror}") from None
    workdir = tempfile.TemporaryDirectory(prefix="nnrconv-nnef-")
    try:
        with open(path, "rb") as raw:
            gzip_header = raw.read(_digest.GZIP_HEADER_SIZE)
        with tarfile.open(path, "r:gz") as tar:
            # The 'data' filter refuses absolute paths, '..', links leaving the folder, devices.
            tar.extractall(workdir.name, filter="data")
            # Read the gzip stream to its end, so that its trailer's CRC-32 is checked: it covers
            # the whole tar stream, member headers and padding included.
            while tar.fileobj.read(1 << 20):  # type: ignore[union-attr]
                pass
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        coded = ".nnr." in path.name.lower() or any(Path(workdir.name).rglob(PARAMETER_SETS_FILE))
        workdir.cleanup()
        if coded:
            raise BitstreamError(f"{path}: the NNR-in-NNEF archive is damaged ({exc})") from None
        raise FormatError(f"{path}: not a readable NNEF .tgz archive ({exc})") from None
    base = Path(workdir.name)
    graphs = sorted(base.rglob(GRAPH_FILE), key=lambda p: (len(p.parts), str(p)))
    if not graphs:
        workdir.cleanup()
        raise FormatError(f"{path}: not an NNEF model: the archive holds no {GRAPH_FILE}")
    return workdir, graphs[0].parent, _digest.GzipHead(gzip_header, gzip_sealed)


class _ExtractedTensor(MappedTensor):
    """A `MappedTensor` in an unpacked `.tgz`; it keeps the temporary folder alive while it lives."""

    __slots__ = ("_keepalive",)

    def __init__(self, *args: Any, keepalive: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keepalive = keepalive


def _read_variable(
    root: Path, decl: VariableDecl, role: TensorRole, model: Path, keepalive: Any = None
) -> tuple[DatRecord, Tensor | None]:
    dat = root / decl.relative_path
    where = f"{model}: variable {decl.label!r} ({decl.relative_path})"
    if not os.path.abspath(dat).startswith(os.path.abspath(root) + os.sep):
        raise FormatError(f"{where}: the label leads outside the model folder")
    try:
        with open(dat, "rb") as f:
            head = f.read(HEADER_SIZE)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise FormatError(f"{where}: the tensor file is missing") from None
    except OSError as exc:
        raise FormatError(f"{where}: cannot read: {exc.strerror}") from exc
    try:
        header = DatHeader.unpack(head)
        header.check(size)
    except DatError as exc:
        raise FormatError(f"{where}: corrupt tensor file: {exc}") from None
    if header.shape != decl.shape:
        raise FormatError(
            f"{where}: the file's shape {list(header.shape)} differs from the declared {list(decl.shape)}"
        )
    dtype = header.dtype
    if dtype is None:
        return DatRecord(decl, header, opaque=_payload_reader(dat, header, keepalive)), None
    if header.is_packed_bool:
        read = _payload_reader(dat, header, keepalive)
        tensor: Tensor = LazyTensor(
            decl.label, DType.BOOL, decl.shape, lambda: decode_payload(header, read()), role=role
        )
    elif keepalive is not None:
        tensor = _ExtractedTensor(
            decl.label, dtype, decl.shape, dat, HEADER_SIZE, header.data_length, role=role, keepalive=keepalive
        )
    else:
        tensor = MappedTensor(decl.label, dtype, decl.shape, dat, HEADER_SIZE, header.data_length, role=role)
    return DatRecord(decl, header), tensor


def _payload_reader(dat: Path, header: DatHeader, keepalive: Any = None) -> Callable[[], bytes]:
    def read(_keepalive: Any = keepalive) -> bytes:  # the default keeps an unpacked .tgz alive
        with open(dat, "rb") as f:
            f.seek(HEADER_SIZE)
            data = f.read(header.data_length)
        if len(data) != header.data_length:
            raise FormatError(f"{dat}: truncated: {len(data)} of {header.data_length} payload bytes")
        return data

    return read


# -- writing -----------------------------------------------------------------------------------


def native(model: Model) -> NnefDocument:
    if model.source_format != "nnef" or not isinstance(model.native, NnefDocument):
        raise UnsupportedError(
            f"only models read from NNEF can be written as NNEF; this one comes from {model.source_format!r}"
        )
    return model.native


def header_for(record: DatRecord, tensor: Tensor) -> DatHeader:
    """The header to write for `tensor`: the original one if it still describes the tensor.

    Raises:
        FormatError: the tensor's shape differs from the variable's declared shape, or NNEF has
            no item type for its element type.
    """
    if tensor.shape != record.decl.shape:
        raise FormatError(
            f"tensor {record.decl.label!r} has shape {list(tensor.shape)}, the graph declares {list(record.decl.shape)}"
        )
    if record.header.dtype is tensor.dtype:
        return record.header
    try:
        return DatHeader.for_tensor(tensor.dtype, tensor.shape)
    except DatError as exc:
        raise FormatError(f"tensor {record.decl.label!r}: {exc}") from None


def dat_bytes(record: DatRecord, tensors: Mapping[str, Tensor]) -> bytes:
    """The complete `.dat` file of one variable (header and payload).

    Raises:
        FormatError: the model holds no data for the variable, or the data does not fit.
    """
    label = record.decl.label
    if record.opaque is not None:
        return record.header.pack() + record.opaque()
    tensor = tensors.get(label)
    if tensor is None:
        raise FormatError(f"variable {label!r} has no tensor in the model")
    header = header_for(record, tensor)
    try:
        return header.pack() + encode_payload(header, tensor.numpy())
    except DatError as exc:
        raise FormatError(f"tensor {label!r}: {exc}") from None


def _files(model: Model) -> Iterator[tuple[str, bytes]]:
    """(relative path, content) of every file of the model, graph first, one `.dat` at a time."""
    document = native(model)
    yield GRAPH_FILE, document.graph_text
    if document.quant_text is not None:
        yield QUANT_FILE, document.quant_text
    for record in document.records.values():
        yield record.decl.relative_path, dat_bytes(record, model.tensors)


def write_model(model: Model, path: Path) -> None:
    """Write a model folder, or a gzip-compressed tar of one when `path` ends in `.tgz`/`.tar.gz`.

    Raises:
        UnsupportedError: the model did not come from NNEF.
        FormatError: a tensor does not fit its variable, or a file cannot be written.
    """
    write_files(_files(model), path)


def write_files(files: Iterable[tuple[str, bytes]], path: Path, *, seal: bool = False) -> None:
    """Write (relative path, content) pairs as a folder, or as a `.tgz` when `path` ends so;
    with `seal`, add the container digest (`_digest`) covering every file.

    Raises:
        FormatError: a file cannot be written (or producing a file's content failed so).
    """
    try:
        if is_tgz_name(path) and seal:
            _write_sealed_tgz(files, path)
        elif is_tgz_name(path):
            _write_tgz(files, path)
        else:
            _write_folder(files, path)
            if seal:
                _digest.seal(path)
    except OSError as exc:
        raise FormatError(f"{path}: cannot write: {exc.strerror or exc}") from exc


def _write_folder(files: Iterable[tuple[str, bytes]], path: Path) -> None:
    path.mkdir()
    for relative, content in files:
        target = path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


def _write_sealed_tgz(files: Iterable[tuple[str, bytes]], path: Path) -> None:
    """A `.tgz` with the container digest: staged as a folder, sealed, archived, then compressed
    with the digest of the compressed stream in the gzip header (`_gzip`)."""
    mtime = int(time.time())
    with tempfile.TemporaryDirectory(prefix="nnrconv-nnef-", dir=path.parent) as staging:
        root = Path(staging) / "model"
        names: list[str] = []
        _write_folder(_noting_names(files, names), root)
        _digest.seal(root, _gzip.HEADER)
        names.append(_digest.DIGEST_FILE)
        plain = Path(staging) / "model.tar"
        with tarfile.open(plain, mode="w") as tar:
            for name in names:
                info = tarfile.TarInfo(name)
                content = (root / name).read_bytes()
                info.size, info.mtime, info.mode = len(content), mtime, 0o644
                tar.addfile(info, io.BytesIO(content))
        _gzip.write(plain, path)


def _noting_names(files: Iterable[tuple[str, bytes]], names: list[str]) -> Iterator[tuple[str, bytes]]:
    for name, content in files:
        names.append(name)
        yield name, content


def _write_tgz(files: Iterable[tuple[str, bytes]], path: Path) -> None:
    # Members sit at the archive's root, as nnef-tools' own `--compress` writes them.
    now = int(time.time())
    with tarfile.open(path, "w:gz") as tar:
        for relative, content in files:
            info = tarfile.TarInfo(relative)
            info.size, info.mtime, info.mode = len(content), now, 0o644
            tar.addfile(info, io.BytesIO(content))
