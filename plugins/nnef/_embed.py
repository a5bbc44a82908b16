# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Integration mode 2: NNR-coded tensors inside an NNEF model folder or `.tgz` (`*.nnr.nnef`).

Layout (see the plugin README): `graph.nnef` and `graph.quant` unchanged; `graph.nnr` beside
them holds the NNR start unit and model parameter set (the first units of an NNR bitstream);
each carried variable's `.dat` keeps its 128-byte header layout with

- item type ``0x4E52_0001``: vendor code ``0x4E52`` (ASCII 'NR', high 16 bits), kind 1
  "NNR_NDU" (low 16 bits);
- bits per item 8 (the payload is a byte string) and data_length the unit's size;
- magic, version, rank and all eight extent words unchanged;
- reserved word 0: the original item type; word 1: the original bits per item; words 2-18:
  the original reserved words 0-16 (legacy headers keep eight float parameters in words 0-7).

The payload is the variable's complete NNR_NDU unit (size field included). The original header
is thereby exactly recoverable: its data_length follows from extents and bits. A variable whose
original reserved words 17-18 are not zero (no known writer sets them) cannot be described this
way and is written plain.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from nnrconv.core import CodedUnit, EmbeddedModel, FormatError, LazyTensor, Model, Tensor, TensorRole
from nnrconv_nnef._dat import DatError, DatHeader
from nnrconv_nnef._io import (
    GRAPH_FILE,
    PARAMETER_SETS_FILE,
    QUANT_FILE,
    DatRecord,
    NnefDocument,
    dat_bytes,
    header_for,
    model_from_document,
    native,
    write_files,
)

__all__ = [
    "NNR_KIND",
    "NNR_ITEM_TYPE",
    "NNR_VENDOR",
    "embed_header",
    "is_embedded",
    "extract_embedded",
    "restore_header",
    "write_embedded",
]

NNR_VENDOR = 0x4E52  # ASCII 'NR'
NNR_KIND = 0x0001  # NNR_NDU: the payload is one complete NNR compressed data unit
NNR_ITEM_TYPE = (NNR_VENDOR << 16) | NNR_KIND
_PAYLOAD_BITS = 8
_RESERVED_WORDS = 19
_KEPT_WORDS = _RESERVED_WORDS - 2  # original reserved words carried in words 2..18
_WORDS = struct.Struct(f"<{_RESERVED_WORDS}I")


def is_nnr_header(header: DatHeader) -> bool:
    return header.item_type == NNR_ITEM_TYPE


def embed_header(original: DatHeader, ndu_length: int) -> DatHeader | None:
    """The header of an NNR-coded `.dat`, or None if `original` cannot be restored from it."""
    words = _WORDS.unpack(original.reserved)
    if any(words[_KEPT_WORDS:]):
        return None
    reserved = _WORDS.pack(original.item_type, original.bits_per_item, *words[:_KEPT_WORDS])
    return DatHeader(
        original.version, ndu_length, original.rank, original.extents, _PAYLOAD_BITS, NNR_ITEM_TYPE, reserved
    )


def restore_header(embedded: DatHeader) -> DatHeader:
    """The original header an NNR-coded `.dat` header stands for.

    Raises:
        DatError: the header is not ours, or the original it describes is not an interpretable
            tensor header.
    """
    if not is_nnr_header(embedded):
        raise DatError(f"item type {embedded.item_type:#010x} is not NNR_NDU ({NNR_ITEM_TYPE:#010x})")
    if embedded.bits_per_item != _PAYLOAD_BITS:
        raise DatError(
            f"an NNR_NDU payload has {_PAYLOAD_BITS} bits per item, the header says {embedded.bits_per_item}"
        )
    item_type, bits, *kept = _WORDS.unpack(embedded.reserved)
    reserved = _WORDS.pack(*kept, 0, 0)
    original = DatHeader(embedded.version, 0, embedded.rank, embedded.extents, bits, item_type, reserved)
    length = original.expected_length()
    if length is None or original.dtype is None:
        raise DatError(f"the original item type {item_type:#x} with {bits} bits is not an interpretable tensor type")
    return DatHeader(embedded.version, length, embedded.rank, embedded.extents, bits, item_type, reserved)


# -- writing -----------------------------------------------------------------------------------


def write_embedded(model: Model, path: Path, parameter_sets: bytes, ndus: Mapping[str, bytes]) -> None:
    """Write `model` as a folder or `.tgz` whose variables in `ndus` hold their NNR data units.

    Raises:
        UnsupportedError: the model did not come from NNEF.
        FormatError: a unit names no variable, a tensor does not fit, or a file cannot be written.
    """
    document = native(model)
    unknown = sorted(set(ndus) - set(document.records))
    if unknown:
        raise FormatError(f"{path}: coded tensors {unknown[:5]!r} are not variables of this NNEF model")
    write_files(_embedded_files(model, document, parameter_sets, ndus), path, seal=True)


def _embedded_files(
    model: Model, document: NnefDocument, parameter_sets: bytes, ndus: Mapping[str, bytes]
) -> Iterator[tuple[str, bytes]]:
    from nnrconv import nnc

    yield GRAPH_FILE, document.graph_text
    if document.quant_text is not None:
        yield QUANT_FILE, document.quant_text
    headers: dict[str, DatHeader] = {}
    for label, record in document.records.items():
        ndu = ndus.get(label)
        if ndu is not None and record.opaque is None and label in model.tensors:
            header = embed_header(header_for(record, model.tensors[label]), len(ndu))
            if header is not None:
                headers[label] = header
    # The integrity record must cover exactly the units embedded (some variables stay plain).
    yield PARAMETER_SETS_FILE, nnc.seal_parts(parameter_sets, [ndus[label] for label in headers])
    for label, record in document.records.items():
        header = headers.get(label)
        if header is None:
            yield record.decl.relative_path, dat_bytes(record, model.tensors)
        else:
            yield record.decl.relative_path, header.pack() + bytes(ndus[label])


# -- reading -----------------------------------------------------------------------------------


def is_embedded(model: Model) -> bool:
    """Whether a model read by `_io.read_model` has NNR-coded variables."""
    document = model.native
    return isinstance(document, NnefDocument) and any(is_nnr_header(r.header) for r in document.records.values())


def _still_coded() -> np.ndarray:
    raise FormatError("an NNR-coded variable was read before nnrconv.load decoded it")


def extract_embedded(model: Model, path: Path) -> EmbeddedModel:
    """The NNR-coded variables of `model` (read from `path`) as units for the seam, not decoded.

    Raises:
        FormatError: `graph.nnr` is missing, or a coded `.dat` header is corrupt or does not
            describe the declared shape (names the variable).
    """
    document: NnefDocument = model.native
    units: dict[str, CodedUnit] = {}
    tensors: dict[str, Tensor] = {}
    for label, record in document.records.items():
        if not is_nnr_header(record.header):
            if label in model.tensors:
                tensors[label] = model.tensors[label]
            continue
        where = f"{path}: variable {label!r} ({record.decl.relative_path})"
        if document.parameter_sets is None:
            raise FormatError(f"{where}: holds an NNR data unit, but the model has no {PARAMETER_SETS_FILE}")
        try:
            header = restore_header(record.header)
            if header.dtype is None or header.shape != record.decl.shape:
                raise DatError("the carried header does not describe an interpretable tensor of the declared shape")
            header.check()
        except DatError as exc:
            raise FormatError(f"{where}: corrupt NNR-coded tensor file: {exc}") from None
        assert record.opaque is not None
        role = document.parsed.roles.get(label, TensorRole.OTHER)
        units[label] = CodedUnit(bytes(record.opaque()), header.dtype, tuple(record.decl.shape), role)
        document.records[label] = DatRecord(record.decl, header)
        # A placeholder keeps the variable's place in order; the seam replaces it.
        tensors[label] = LazyTensor(label, header.dtype, record.decl.shape, _still_coded, role=role)
    return EmbeddedModel(model_from_document(document, tensors), document.parameter_sets or b"", units)
