# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""TFLite flatbuffers: read, written back byte for byte, and carried in NNR (topology format 4).

NOTE: a TFLite file is a flatbuffer whose constant tensors point at `Buffer`s holding their raw
little-endian bytes (inside the flatbuffer's `data` vectors, or, for files over 2 GB, at an
absolute `offset`/`size` after it). nnrconv never re-serializes the flatbuffer: a weight is the
byte range of its buffer, viewed with its tensor's type and shape, and writing puts the new bytes
back into the same range. So a lossless round trip gives back the identical file, and a quantized
model's int8/int32 buffers and its scales and zero points (which live in the tensor table, not
in the buffers) travel exactly.

Topology bytes (an NNRTF container, `_container`):

    :kind        b"tflite"
    :cuts        JSON [{"key", "start", "length"}]: where each carried buffer's bytes were cut
                 out of the file, in increasing order of `start` (offsets in the original file)
    :flatbuffer  the file with those byte ranges removed (every other byte kept)

Rebuilding inserts each decoded tensor's bytes back at its offset; the lengths must match.

Which buffers are tensors: those of a constant tensor of a plain numeric type whose byte length
is exactly elements times item size (sparse or string buffers stay in the flatbuffer). A buffer
shared by several tensors is the first one's. Keys are the tensor names of the main subgraph,
`subgraph<i>/<name>` for the others, made unique with `#2`, `#3` ... since TFLite does not
require unique names.
"""

from __future__ import annotations

import json
import mmap
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from nnrconv.core import (
    ArrayTensor,
    BitstreamError,
    DType,
    FormatError,
    Graph,
    InputSpec,
    Model,
    Node,
    Tensor,
    TensorRole,
    UnsupportedError,
)
from nnrconv_tensorflow import _container
from nnrconv_tensorflow._model import FORMAT, LAYOUT_PREFIX

__all__ = ["IDENTIFIER", "TFLITE", "Slot", "TfliteNative", "from_container", "parse", "serialize", "to_container"]

TFLITE = "tflite"
IDENTIFIER = b"TFL3"  # the flatbuffer file identifier, at bytes 4..8

# TFLite TensorType -> numpy dtype, for the types held as plain arrays.
_TYPES = {
    0: np.float32,
    1: np.float16,
    2: np.int32,
    3: np.uint8,
    4: np.int64,
    6: np.bool_,
    7: np.int16,
    9: np.int8,
    10: np.float64,
    12: np.uint64,
    15: np.uint32,
    16: np.uint16,
}
_MAX_ITEMSIZE = 8
# Builtin operator -> {input index: (role, layout)} for the operators whose weights have one.
_CONV_2D, _DEPTHWISE_CONV_2D, _FULLY_CONNECTED, _TRANSPOSE_CONV = 3, 4, 9, 67
_WEIGHT_INPUTS = {
    _CONV_2D: {1: (TensorRole.WEIGHT, "OHWI"), 2: (TensorRole.BIAS, None)},
    _DEPTHWISE_CONV_2D: {1: (TensorRole.WEIGHT, "1HWO"), 2: (TensorRole.BIAS, None)},
    _FULLY_CONNECTED: {1: (TensorRole.WEIGHT, "OI"), 2: (TensorRole.BIAS, None)},
    _TRANSPOSE_CONV: {1: (TensorRole.WEIGHT, "OHWI"), 3: (TensorRole.BIAS, None)},
}


@dataclass(frozen=True, slots=True)
class Slot:
    """Where a tensor's bytes live in the file."""

    key: str
    start: int
    length: int
    dtype: np.dtype
    shape: tuple[int, ...]


@dataclass(slots=True)
class TfliteNative:
    """The file's bytes (or its read-only memory map) and the byte range of each tensor in it."""

    data: bytes | mmap.mmap
    slots: dict[str, Slot]
    kind: str = TFLITE
    loaded: dict[str, Tensor] = field(default_factory=dict)


def _schema():  # type: ignore[no-untyped-def]
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


def _buffer_range(buffer, size: int) -> tuple[int, int] | None:  # type: ignore[no-untyped-def]
    """(start, length) of a buffer's bytes in the file, or None for an empty buffer."""
    if buffer.Offset() > 1:  # data stored after the flatbuffer (files over 2 GB)
        start, length = int(buffer.Offset()), int(buffer.Size())
    else:
        o = buffer._tab.Offset(4)
        if not o or not buffer.DataLength():
            return None
        start, length = int(buffer._tab.Vector(o)), int(buffer.DataLength())
    if start < 0 or length < 0 or start + length > size:
        raise FormatError(f"a TFLite buffer spans bytes {start}..{start + length}, past the end of the file ({size})")
    return start, length


def _unique(name: str, taken: set[str]) -> str:
    key, n = name, 1
    while key in taken:
        n += 1
        key = f"{name}#{n}"
    taken.add(key)
    return key


def parse(data: bytes | mmap.mmap, source: str) -> Model:
    """The model of a TFLite file: its constant tensors (lazy views of `data`) and operator graph.

    Raises:
        FormatError: not a TFLite flatbuffer, or one whose buffers point outside the file.
    """
    if data[4:8] != IDENTIFIER:
        raise FormatError(f"{source}: not a TFLite flatbuffer (no {IDENTIFIER.decode()} identifier at byte 4)")
    schema = _schema()
    try:
        return _parse(schema.Model.GetRootAs(data, 0), data, source)
    except FormatError:
        raise
    except Exception as exc:  # generated flatbuffer code raises anything on corrupt offsets
        raise FormatError(f"{source}: corrupt TFLite flatbuffer: {exc}") from exc


def _op_codes(model) -> list[int]:  # type: ignore[no-untyped-def]
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        codes.append(max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode())))
    return codes


def _parse(fb, data: bytes | mmap.mmap, source: str) -> Model:  # type: ignore[no-untyped-def]
    slots: dict[str, Slot] = {}
    claimed: set[int] = set()
    taken: set[str] = set()
    graph = Graph(name=TFLITE)
    roles: dict[str, tuple[TensorRole, str | None]] = {}
    codes = _op_codes(fb)
    for s in range(fb.SubgraphsLength()):
        subgraph = fb.Subgraphs(s)
        names: dict[int, str] = {}
        for t in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(t)
            name = (tensor.Name() or b"").decode("utf-8", "replace") or f"tensor{t}"
            names[t] = name if s == 0 else f"subgraph{s}/{name}"
            index = int(tensor.Buffer())
            dtype = _TYPES.get(int(tensor.Type()))
            if index <= 0 or index in claimed or dtype is None or index >= fb.BuffersLength() or tensor.Sparsity():
                continue
            found = _buffer_range(fb.Buffers(index), len(data))
            shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
            if found is None or any(d < 0 for d in shape):
                continue
            start, length = found
            if length != int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize:
                continue
            key = _unique(names[t], taken)
            names[t] = key
            claimed.add(index)
            slots[key] = Slot(key, start, length, np.dtype(dtype).newbyteorder("<"), shape)
        for o in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(o)
            code = codes[op.OpcodeIndex()] if op.OpcodeIndex() < len(codes) else -1
            inputs = [names.get(int(i), "") for i in (op.InputsAsNumpy() if op.InputsLength() else [])]
            outputs = [names.get(int(i), "") for i in (op.OutputsAsNumpy() if op.OutputsLength() else [])]
            graph.nodes.append(Node(str(code), inputs, outputs, name=f"{s}:{o}", domain="tflite"))
            for position, role in _WEIGHT_INPUTS.get(code, {}).items():
                if position < len(inputs) and inputs[position] in slots:
                    roles.setdefault(inputs[position], role)
    native = TfliteNative(data, slots)
    return _model(native, roles)


def _model(native: TfliteNative, roles: Mapping[str, tuple[TensorRole, str | None]]) -> Model:
    view = memoryview(native.data)
    tensors: dict[str, Tensor] = {}
    metadata = {"tensorflow.kind": TFLITE}
    for key, slot in native.slots.items():
        array = np.frombuffer(view[slot.start : slot.start + slot.length], dtype=slot.dtype).reshape(slot.shape)
        role, layout = roles.get(key, (TensorRole.OTHER, None))
        tensors[key] = ArrayTensor(key, array, dtype=DType.from_numpy(slot.dtype.newbyteorder("=")), role=role)
        if layout:
            metadata[LAYOUT_PREFIX + key] = layout
    graph = Graph(name=TFLITE)
    graph.initializers.update(tensors)
    native.loaded = dict(tensors)
    return Model(graph, tensors, source_format=FORMAT, native=native, metadata=metadata)


def _tensor_bytes(tensor: Tensor, slot: Slot) -> bytes:
    from nnrconv_tensorflow._tensors import coerce

    array = np.asarray(tensor.numpy())
    try:
        values = coerce(array, DType.from_numpy(slot.dtype.newbyteorder("=")))
    except ValueError as exc:
        raise FormatError(f"tensor {slot.key!r}: {exc}") from exc
    raw = np.ascontiguousarray(values, dtype=slot.dtype).tobytes()
    if len(raw) != slot.length:
        raise FormatError(f"tensor {slot.key!r} has {len(raw)} bytes; its TFLite buffer holds {slot.length}")
    return raw


def serialize(model: Model) -> bytes:
    """The file with every tensor's current values in its buffer (the original bytes elsewhere)."""
    native: TfliteNative = model.native
    out = bytearray(native.data)
    for key, slot in native.slots.items():
        tensor = model.tensors.get(key)
        if tensor is None:
            raise FormatError(f"the TFLite model has no tensor {key!r}")
        if tensor is not native.loaded.get(key):
            out[slot.start : slot.start + slot.length] = _tensor_bytes(tensor, slot)
    return bytes(out)


# -- NNR topology ------------------------------------------------------------------------------
def to_container(model: Model, carried: set[str]) -> bytes:
    """The NNRTF container: the file without the carried tensors' bytes, and where they were."""
    native: TfliteNative = model.native
    data = serialize(model)
    cuts = sorted((native.slots[k] for k in carried), key=lambda slot: slot.start)
    pieces, pos = [], 0
    for slot in cuts:
        pieces.append(data[pos : slot.start])
        pos = slot.start + slot.length
    pieces.append(data[pos:])
    listed = [{"key": s.key, "start": s.start, "length": s.length} for s in cuts]
    cut_list = json.dumps(listed, separators=(",", ":")).encode()
    return _container.pack({":kind": TFLITE.encode(), ":cuts": cut_list, ":flatbuffer": b"".join(pieces)})


def from_container(entries: Mapping[str, bytes], tensors: Mapping[str, Tensor]) -> Model:
    """Insert the decoded tensors' bytes back into the flatbuffer and read it.

    Raises:
        BitstreamError: malformed cuts, a missing or extra tensor, bytes of the wrong length, or
            a rebuilt flatbuffer whose tensors are not where the cuts say.
    """
    try:
        cuts = [(str(c["key"]), int(c["start"]), int(c["length"])) for c in json.loads(entries[":cuts"])]
        stripped = entries[":flatbuffer"]
    except (KeyError, TypeError, ValueError) as exc:
        raise BitstreamError(f"the TFLite topology has no valid cut list or flatbuffer: {exc}") from exc
    # The flatbuffer's tables lie outside the cut ranges, so it parses with zeros in their place.
    skeleton, pos, previous_end = bytearray(), 0, 0
    for key, start, length in cuts:
        keep = start - previous_end
        if keep < 0 or length < 0 or pos + keep > len(stripped):
            raise BitstreamError(f"the TFLite topology cuts bytes {start}..{start + length} out of order", tensor=key)
        if key not in tensors:
            raise BitstreamError("the TFLite buffer has no NNR data unit", tensor=key)
        if length > tensors[key].size * _MAX_ITEMSIZE:
            declared = f"the TFLite topology declares {length} bytes for {tensors[key].size} values"
            raise BitstreamError(declared, tensor=key)
        skeleton += stripped[pos : pos + keep]
        skeleton += bytes(length)
        pos, previous_end = pos + keep, start + length
    skeleton += stripped[pos:]
    extra = sorted(set(tensors) - {key for key, _, _ in cuts})
    if extra:
        raise BitstreamError(f"{len(extra)} decoded tensor(s) match no TFLite buffer: {extra[:5]!r}")
    try:
        model = parse(bytes(skeleton), "the NNR topology's TFLite flatbuffer")
    except FormatError as exc:
        raise BitstreamError(str(exc)) from exc
    native: TfliteNative = model.native
    filled = skeleton
    for key, start, length in cuts:
        slot = native.slots.get(key)
        if slot is None or (slot.start, slot.length) != (start, length):
            raise BitstreamError("the rebuilt TFLite flatbuffer has no buffer where the topology cut it", tensor=key)
        try:
            filled[start : start + length] = _tensor_bytes(tensors[key], slot)
        except FormatError as exc:
            raise BitstreamError(str(exc), tensor=key) from exc
    native.data = bytes(filled)
    roles = {k: (t.role, model.metadata.get(LAYOUT_PREFIX + k)) for k, t in model.tensors.items()}
    return _model(native, roles)


# -- runner ------------------------------------------------------------------------------------
def _interpreter(model: Model):  # type: ignore[no-untyped-def]
    import tensorflow as tf

    # Without default delegates: XNNPACK would announce itself on stderr and may reorder float
    # arithmetic; the builtin kernels on one thread give the same outputs for the same weights.
    resolver = tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
            interpreter = tf.lite.Interpreter(
                model_content=serialize(model), num_threads=1, experimental_op_resolver_type=resolver
            )
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise UnsupportedError(f"the TFLite interpreter cannot load the model: {str(exc).splitlines()[0]}") from exc
    return interpreter


def input_specs(model: Model) -> list[InputSpec]:
    """The interpreter's inputs, with their allocated shapes (free dimensions are 1)."""
    return [
        InputSpec(d["name"], DType.from_numpy(np.dtype(d["dtype"])), tuple(int(x) for x in d["shape"]))
        for d in _interpreter(model).get_input_details()
    ]


def run(model: Model, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of `tf.lite.Interpreter` (one thread) by output tensor name.

    Raises:
        UnsupportedError: the interpreter cannot load or run the model on these inputs.
    """
    interpreter = _interpreter(model)
    try:
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], np.asarray(inputs[detail["name"]], dtype=detail["dtype"]))
        interpreter.invoke()
        return {d["name"]: np.array(interpreter.get_tensor(d["index"])) for d in interpreter.get_output_details()}
    except (KeyError, ValueError, RuntimeError) as exc:
        raise UnsupportedError(f"the TFLite interpreter cannot run the model: {str(exc).splitlines()[0]}") from exc
