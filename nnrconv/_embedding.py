# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The one seam for NNR inside native containers (integration mode 2).

NOTE: writing, the seam codes the carried tensors once (or reuses the units of a model read
from NNR) and hands the plugin its parameter sets and one unit per tensor (`save_embedded`).
Reading, the plugin only finds the parts (`extract_embedded`: the model, the parameter sets, and
each tensor's unit with its dtype and shape); the seam verifies every unit against the parameter
sets' integrity record at once, and wraps each as a `CodedTensor` that decodes its unit on first
access, checks the decoded size against the declared shape, and names file and tensor when it
fails. Units and arrays are therefore never in memory together until a tensor is used, and a
conversion to `.nnr` copies the units without decoding them at all (`pass_through`; a model
decoded from `.nnr` keeps its units through `keep_coded`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nnrconv import nnc
from nnrconv._carriage import carriers, source_defaults, with_roles
from nnrconv._topology import topology_of
from nnrconv.core import (
    BitstreamError,
    CodedTensor,
    CodedUnit,
    DType,
    EmbeddedModel,
    FormatPlugin,
    Model,
    UnsupportedError,
    restore_narrow,
)

__all__ = ["coded_units", "embedded_units", "keep_coded", "lazy_model", "load", "pass_through", "save"]


def load(fmt: FormatPlugin, path: Path) -> Model:
    """Read `path` with `fmt`; NNR-coded tensors inside it stay coded until accessed."""
    parts = fmt.extract_embedded(path)
    if parts is None:
        return fmt.load(path)
    return lazy_model(parts, str(path))


def lazy_model(parts: EmbeddedModel, source: str) -> Model:
    """The model of `parts`, each coded tensor a `CodedTensor` decoded on first access.

    Raises:
        BitstreamError: the parameter sets or a unit fail the integrity record, or a unit is
            missing (named by tensor, after `source`).
    """
    model = parts.model
    if not parts.units:
        return model
    ndus = {name: unit.ndu for name, unit in parts.units.items()}
    try:
        nnc.check_parts(parts.parameter_sets, ndus)
    except BitstreamError as exc:
        raise _located(exc, source) from exc
    try:
        decoder = nnc.PartsDecoder(parts.parameter_sets)
    except BitstreamError as exc:
        raise _located(exc, f"{source}: <parameter sets>") from exc
    for name, unit in parts.units.items():
        model.tensors[name] = tensor = CodedTensor(
            name,
            unit.dtype,
            unit.shape,
            unit.ndu,
            parts.parameter_sets,
            _Decoder(name, unit, decoder, source),
            role=unit.role,
        )
        if name in model.graph.initializers:
            model.graph.initializers[name] = tensor
    return model


def _located(exc: BitstreamError, source: str) -> BitstreamError:
    located = BitstreamError(exc.reason, unit_index=exc.unit_index, byte_offset=exc.byte_offset, tensor=exc.tensor)
    located.args = (f"{source}: {exc}",)
    return located


class _Decoder:
    """Decodes one unit when called (a class, so a `CodedTensor` holds no array until then).

    The units were checked against the integrity record when the model was read, and the
    parameter sets parsed once (`nnc.PartsDecoder`), so a call decodes just this unit.
    """

    __slots__ = ("decoder", "name", "source", "unit")

    def __init__(self, name: str, unit: CodedUnit, decoder: nnc.PartsDecoder, source: str) -> None:
        self.name, self.unit, self.decoder, self.source = name, unit, decoder, source

    def __call__(self) -> np.ndarray:
        try:
            decoded = self.decoder.decode({self.name: self.unit.ndu}, verify=False)
        except BitstreamError as exc:
            raise _located(exc, self.source) from exc
        array = decoded[self.name]
        try:
            return _as_declared(array, self.unit)
        except BitstreamError as exc:  # from the plugin's `finish`
            raise _located(exc.located(tensor=self.name), self.source) from exc
        except ValueError as exc:
            raise BitstreamError(f"{self.source}: tensor {self.name!r}: {exc}", tensor=self.name) from exc


def _as_declared(array: np.ndarray, unit: CodedUnit) -> np.ndarray:
    """The decoded `array` in the storage type of the unit's dtype and its shape.

    The plugin's `finish` converts when it has one; otherwise narrow floats are restored from
    their carriers and other types cast only when no value changes.

    Raises:
        ValueError: the element count differs from the shape's, or the values do not fit.
    """
    dtype, shape = unit.dtype, unit.shape
    expected = int(np.prod(shape, dtype=np.int64))
    if array.size != expected:
        raise ValueError(f"its data unit decodes to {array.size} elements, but shape {list(shape)} has {expected}")
    storage = dtype.storage_dtype
    if unit.finish is not None:
        array = unit.finish(array)
    elif array.dtype != storage:
        if dtype is DType.FLOAT16 or (dtype.is_floating_point and not dtype.is_numpy_native):
            array = restore_narrow(array, dtype)
        else:
            cast = array.astype(storage)
            if not np.array_equal(cast.astype(array.dtype), array):
                raise ValueError(f"decoded {array.dtype} values do not fit {dtype.name}")
            array = cast
    if array.dtype != storage:
        raise ValueError(f"decoded {array.dtype} values cannot stand for {dtype.name}")
    return array.reshape(shape)


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


def pass_through(model: Model, fmt: FormatPlugin | None, compress_topology: bool) -> bytes | None:
    """The NNR bitstream of a model whose tensors are all still coded, its units copied as they
    are (no decoding, no re-quantizing); None when they cannot be (coded under different
    parameter sets, or a model without topology that has uncoded tensors)."""
    units = coded_units(model)
    if units is None:
        return None
    parameter_sets, ndus = units
    if fmt is None or fmt.weights_only:
        if len(ndus) != len(model.tensors):
            return None
        topology, code = b"", int(nnc.TopologyStorageFormat.NNR_TPL_UNREC)
    else:
        try:
            topology, code, deflate = topology_of(fmt, model, set(ndus))
        except UnsupportedError:
            return None
        compress_topology = compress_topology and deflate
    return nnc.assemble_model(parameter_sets, topology, code, ndus.values(), compress_topology=compress_topology)


def keep_coded(model: Model, parameter_sets: bytes | None, coded: dict[str, bytes] | None) -> Model:
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


def embedded_units(
    model: Model, fmt: FormatPlugin | None, options: nnc.CodingOptions | None, progress: nnc.Progress | None = None
) -> tuple[bytes, dict[str, bytes]]:
    """Parameter sets and one NDU per carried tensor, for NNR inside a native container.

    Without `options`, tensors still coded from an NNR source keep their units (when all of them
    are coded under the same parameter sets; the others stay plain, as they were not carried);
    otherwise every carriable tensor is coded anew.
    """
    units = coded_units(model) if options is None else None
    if units is not None:
        return units
    options = with_roles(model, source_defaults(model, options or nnc.CodingOptions()))
    arrays = carriers(model, options, narrow=fmt is not None and fmt.carries_narrow_floats)
    return nnc.encode_parts(((name, array()) for name, array in arrays.items()), options, progress=progress)


def save(
    fmt: FormatPlugin,
    source_fmt: FormatPlugin | None,
    model: Model,
    path: Path,
    options: nnc.CodingOptions | None,
    progress: nnc.Progress | None = None,
) -> None:
    """Write `model` at `path` (staged) as `fmt`'s container with NNR-coded tensors inside."""
    parameter_sets, ndus = embedded_units(model, source_fmt, options, progress)
    fmt.save_embedded(model, path, parameter_sets, ndus)
