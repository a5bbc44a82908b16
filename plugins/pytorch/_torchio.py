# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Reading and writing PyTorch models with torch: `.pt2`, TorchScript, state dicts, safetensors.

NOTE on safety: nothing here unpickles arbitrary objects.
- state dicts load with ``torch.load(weights_only=True)``; a file that needs more is refused.
- `.pt2` archives are checked *before* ``torch.export.load`` sees them, because torch 2.13 loads
  weights and constants marked ``use_pickle`` with ``torch.load(weights_only=False)``, custom and
  opaque objects with ``torch._C._pickle_load_obj`` / ``pickle.loads``, and falls back to
  ``weights_only=False`` for sample inputs that fail the safe load. nnrconv refuses the first
  three and proves the sample inputs load safely, then hands torch the very bytes it checked.
- TorchScript ``data.pkl`` / ``constants.pkl`` are read by `_archive.SafeUnpickler` first, which
  refuses any global TorchScript does not write; ``torch.jit.load`` itself uses TorchScript's
  C++ unpickler (no Python globals) but runs the archive's TorchScript code.
"""

from __future__ import annotations

import io
import math
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nnrconv.core import (
    ArrayTensor,
    BitstreamError,
    CodedTensor,
    DType,
    FormatError,
    Graph,
    LazyTensor,
    Model,
    Node,
    Tensor,
    TensorRole,
    UnsupportedError,
    ValueInfo,
    restore_narrow,
)
from nnrconv_pytorch import _archive, _roles, _safetensors, _shards, _topology
from nnrconv_pytorch._archive import Record, Slot

__all__ = ["Native", "from_topology", "load", "save", "to_numpy", "topology_bytes"]

FORMAT = "pytorch"
# Names that ask for a TorchScript archive (a state dict is not written under them).
SCRIPT_SUFFIXES = (".jit", ".torchscript")

_DTYPES: dict[torch.dtype, tuple[DType, torch.dtype | None]] = {
    torch.float32: (DType.FLOAT, None),
    torch.float64: (DType.DOUBLE, None),
    torch.float16: (DType.FLOAT16, None),
    torch.bfloat16: (DType.BFLOAT16, torch.uint16),
    torch.int8: (DType.INT8, None),
    torch.int16: (DType.INT16, None),
    torch.int32: (DType.INT32, None),
    torch.int64: (DType.INT64, None),
    torch.uint8: (DType.UINT8, None),
    torch.uint16: (DType.UINT16, None),
    torch.uint32: (DType.UINT32, None),
    torch.uint64: (DType.UINT64, None),
    torch.bool: (DType.BOOL, None),
    torch.complex64: (DType.COMPLEX64, None),
    torch.complex128: (DType.COMPLEX128, None),
    torch.float8_e4m3fn: (DType.FLOAT8E4M3FN, torch.uint8),
    torch.float8_e4m3fnuz: (DType.FLOAT8E4M3FNUZ, torch.uint8),
    torch.float8_e5m2: (DType.FLOAT8E5M2, torch.uint8),
    torch.float8_e5m2fnuz: (DType.FLOAT8E5M2FNUZ, torch.uint8),
}
_FROM_DTYPE: dict[DType, torch.dtype] = {d: t for t, (d, _) in _DTYPES.items()}

_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "weights")
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


@dataclass(slots=True)
class Native:
    """What the plugin keeps of a loaded model to write it back exactly.

    Attributes:
        kind: ``"program"`` (.pt2), ``"script"`` (TorchScript) or ``"state_dict"``.
        records: the zip archive's records (program and script).
        slots: state_dict key -> the record holding exactly its bytes (program and script).
        module: the loaded ExportedProgram or ScriptModule (for running), loaded once.
        layout: state dicts read from safetensors: shard files, their metadata, the index and
            the files beside it (`_shards`), written back as they were.
        held: per state_dict key, the model tensor whose values `module` holds now; the runtime
            copies any other tensor the model gives that key (an embedded placeholder decoded, a
            rate probe's replacement) into the module before running it.
    """

    kind: str
    records: list[Record] = field(default_factory=list)
    slots: dict[str, Slot] = field(default_factory=dict)
    module: Any = None
    layout: _shards.Layout | None = None
    held: dict[str, Tensor] = field(default_factory=dict)


# -- tensors ---------------------------------------------------------------------------------------


def to_numpy(tensor: torch.Tensor, name: str) -> tuple[np.ndarray, DType]:
    """The tensor's exact bits as a numpy array of its nnrconv storage dtype (no copy if contiguous)."""
    if tensor.layout != torch.strided or tensor.is_quantized:
        raise UnsupportedError(f"tensor {name!r}: {tensor.layout} / quantized tensors are not supported yet")
    entry = _DTYPES.get(tensor.dtype)
    if entry is None:
        raise UnsupportedError(f"tensor {name!r}: element type {tensor.dtype} has no nnrconv DType")
    dtype, view = entry
    t = tensor.detach().cpu()
    if not t.is_contiguous():
        t = t.contiguous()
    if view is not None:
        t = t.view(view)
    return t.numpy(), dtype


def _array_tensor(name: str, tensor: torch.Tensor, role: TensorRole = TensorRole.OTHER) -> ArrayTensor:
    array, dtype = to_numpy(tensor, name)
    return ArrayTensor(name, array, dtype=dtype, role=role)


def to_torch(tensor: Tensor) -> torch.Tensor:
    """A torch tensor holding a copy of an nnrconv tensor's exact bits."""
    dtype = _FROM_DTYPE.get(tensor.dtype)
    if dtype is None:
        raise UnsupportedError(f"tensor {tensor.name!r}: {tensor.dtype.name} has no torch element type")
    array = np.array(tensor.numpy(), copy=True).reshape(tensor.shape)
    result = torch.from_numpy(array)
    return result.view(dtype) if result.dtype != dtype else result


# -- roles -----------------------------------------------------------------------------------------

# -- loading ---------------------------------------------------------------------------------------


def load(path: Path) -> Model:
    """Read any supported PyTorch file, judged by content.

    Raises:
        FormatError: unreadable, corrupt, or needing full unpickling.
        UnsupportedError: a valid file of a kind nnrconv cannot convert (legacy .pt2, subclasses).
    """
    from nnrconv_pytorch import _embedded

    source = str(path)
    if path.is_dir() or path.name.lower().endswith(_shards.INDEX_SUFFIX):
        tensors, layout = _shards.read_checkpoint(path)
        _roles.assign(tensors, _roles.from_names(list(tensors)))
        return _state_dict_model(tensors, layout)
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise FormatError(f"{source}: cannot read: {exc.strerror}") from exc
    if _safetensors.looks_like_safetensors(head):
        tensors = _safetensors.read(path)
        _roles.assign(tensors, _roles.from_names(list(tensors)))
        metadata = _safetensors.read_metadata(path)
        layout = _shards.Layout([_shards.Shard(None, metadata, list(tensors))]) if metadata else None
        return _state_dict_model(tensors, layout)
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                kind = _archive.archive_kind(names)
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
            raise FormatError(f"{source}: corrupt PyTorch zip archive ({exc})") from None
        if kind and _embedded.is_embedded(names):
            raise UnsupportedError(f"{source}: holds NNR-coded tensors; read it with nnrconv.load, which decodes them")
        if kind in ("pt2", "script"):
            return load_archive(path.read_bytes(), source)
        if kind == "pickle":
            return _load_state_dict_file(path, source, mmap=True)
        raise FormatError(f"{source}: a zip archive, but not one torch wrote (no data.pkl, code/ or archive_format)")
    if head.startswith(_LEGACY_MAGIC) or head[:1] == b"\x80":
        return _load_state_dict_file(path, source, mmap=False)
    raise FormatError(
        f"{source}: not a PyTorch file (neither a torch zip archive, a torch.save pickle nor safetensors)"
    )


def _unpickling_refused(source: str, exc: BaseException) -> FormatError:
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    lines = [line for line in text.splitlines() if line.strip() and "weights_only" not in line.lower()]
    if found:
        detail = f"it pickles the Python global {found.group(1)}"
    else:
        detail = lines[0].strip() if lines else type(exc).__name__
    return FormatError(
        f"{source}: needs full unpickling to load ({detail}); nnrconv only loads tensors and plain "
        "containers (torch.load weights_only=True). Re-save the weights with "
        "torch.save(model.state_dict(), ...) or export the model with torch.export.save"
    )


def _load_state_dict_file(path: Path | io.BytesIO, source: str, *, mmap: bool) -> Model:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise _unpickling_refused(source, exc) from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FormatError(f"{source}: corrupt or truncated PyTorch file ({first})") from None
    state = _unwrap(obj, source)
    tensors = {key: _array_tensor(key, value) for key, value in state.items()}
    _roles.assign(tensors, _roles.from_names(list(tensors)))
    return _state_dict_model(tensors)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _unwrap(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The state dict inside a file: the object itself, or under a checkpoint key; `module.` dropped."""
    if isinstance(obj, torch.nn.Module):  # pragma: no cover - weights_only never returns modules
        obj = obj.state_dict()
    state = obj if _is_state_dict(obj) else None
    if state is None and isinstance(obj, Mapping):
        state = next((obj[k] for k in _CHECKPOINT_KEYS if k in obj and _is_state_dict(obj[k])), None)
    if state is None:
        keys = ", ".join(repr(k) for k in list(obj)[:8]) if isinstance(obj, Mapping) else type(obj).__name__
        raise UnsupportedError(
            f"{source}: holds no state dict (a mapping of names to tensors, directly or under one of "
            f"{', '.join(_CHECKPOINT_KEYS)}); found {keys}"
        )
    keys = [str(k) for k in state]
    if all(k.startswith("module.") for k in keys):
        return {k[len("module.") :]: v for k, v in zip(keys, state.values(), strict=True)}
    return dict(zip(keys, state.values(), strict=True))


def _state_dict_model(tensors: dict[str, Tensor], layout: _shards.Layout | None = None) -> Model:
    native = Native("state_dict", layout=layout)
    return Model(Graph(name="state_dict"), tensors, source_format=FORMAT, native=native)


def load_archive(data: bytes, source: str) -> Model:
    """A `.pt2` or TorchScript model from its archive bytes, checked for unsafe pickles first."""
    records = _archive.read_zip(data, source)
    kind = _archive.archive_kind(r.name for r in records)
    if kind == "pt2":
        return _load_program(data, records, source)
    if kind == "script":
        return _load_script(data, records, source)
    raise FormatError(f"{source}: not a torch.export or TorchScript archive")


def _check_pt2(records: list[Record], source: str) -> None:
    pickled = _archive.pickled_pt2_members(records, source)
    if pickled:
        raise FormatError(
            f"{source}: needs full unpickling to load (pickled payloads {', '.join(pickled[:3])}); torch.export.load "
            "would run them with pickle, so nnrconv refuses the archive"
        )
    for record in records:
        if "/data/sample_inputs/" in record.name and record.data:
            try:
                torch.load(io.BytesIO(record.data), map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as exc:
                raise _unpickling_refused(f"{source}: {record.name}", exc) from None
            except Exception as exc:
                raise FormatError(f"{source}: {record.name} is not a loadable tensor file ({exc})") from None


def _load_program(data: bytes, records: list[Record], source: str) -> Model:
    _check_pt2(records, source)
    try:
        program = torch.export.load(io.BytesIO(data))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FormatError(f"{source}: torch.export.load cannot read the archive ({first})") from None
    roles = _roles.from_program(program)
    tensors = {
        key: _array_tensor(key, value, roles.get(key, TensorRole.OTHER)) for key, value in program.state_dict.items()
    }
    graph = _program_graph(program)
    native = Native("program", records, _archive.payload_records_pt2(records, source), program, held=dict(tensors))
    return Model(graph, tensors, source_format=FORMAT, native=native, metadata={"container": "pt2"})


def _program_graph(program: Any) -> Graph:
    graph = Graph(name="exported_program")
    for node in program.graph.nodes:
        if node.op == "call_function":
            inputs = [a.name for a in node.args if hasattr(a, "name")]
            graph.nodes.append(Node(str(node.target), inputs, [node.name], name=node.name, domain="aten"))
    for spec in program.graph_signature.input_specs:
        if spec.kind.name == "USER_INPUT":
            graph.inputs.append(ValueInfo(spec.arg.name))
    for spec in program.graph_signature.output_specs:
        graph.outputs.append(ValueInfo(getattr(spec.arg, "name", str(spec.arg))))
    return graph


def _load_script(data: bytes, records: list[Record], source: str) -> Model:
    _archive.read_script_pickle(records, "data.pkl", source)
    if any(r.name.endswith("/constants.pkl") for r in records):
        _archive.read_script_pickle(records, "constants.pkl", source)
    try:
        module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FormatError(f"{source}: torch.jit.load cannot read the archive ({first})") from None
    roles = _roles.from_script(module)
    state = module.state_dict()
    tensors = {key: _array_tensor(key, value, roles.get(key, TensorRole.OTHER)) for key, value in state.items()}
    slots = _archive.payload_records_script(records, list(tensors), {k: t.nbytes for k, t in tensors.items()}, source)
    graph = Graph(name=getattr(module, "original_name", "script"))
    for node in module.inlined_graph.nodes():
        graph.nodes.append(
            Node(node.kind(), [v.debugName() for v in node.inputs()], [v.debugName() for v in node.outputs()])
        )
    native = Native("script", records, slots, module, held=dict(tensors))
    return Model(graph, tensors, source_format=FORMAT, native=native, metadata={"container": "torchscript"})


# -- NNR topology ----------------------------------------------------------------------------------


def _native(model: Model) -> Native:
    if model.source_format != FORMAT or not isinstance(model.native, Native):
        origin = model.source_format or "tensors without a topology"
        raise UnsupportedError(f"model from {origin} has no PyTorch topology")
    return model.native


def _filled_records(model: Model, native: Native, skip: Collection[str] = ()) -> list[Record]:
    """The archive records with every slot refilled from the model's tensors (so edits are kept)."""
    payloads = {}
    for key, slot in native.slots.items():
        if key in skip:
            continue
        raw = model.tensors[key].tobytes()
        if len(raw) != slot.nbytes:
            raise FormatError(
                f"tensor {key!r}: {len(raw)} bytes do not fit its {slot.nbytes}-byte record {slot.record}"
            )
        payloads[slot.record] = raw
    return _archive.fill(native.records, payloads)


def topology_bytes(model: Model, carried: Collection[str]) -> bytes:
    """See `_topology` for the layout; carried archive payloads are emptied."""
    native = _native(model)
    if native.kind == "state_dict":
        return _state_dict_topology(model, carried)
    stripped = [slot for key, slot in native.slots.items() if key in carried]
    records = _archive.strip(_filled_records(model, native, skip=carried), [s.record for s in stripped])
    manifest = {
        "stripped": [
            {"key": s.key, "record": s.record, "nbytes": s.nbytes, "dtype": model.tensors[s.key].dtype.name}
            for s in stripped
        ]
    }
    return _topology.pack(native.kind, manifest, _archive.write_zip(records))


def _state_dict_topology(model: Model, carried: Collection[str]) -> bytes:
    kept = [t for k, t in model.tensors.items() if k not in carried]
    plain = all(t.dtype is DType.FLOAT and t.shape != () for k, t in model.tensors.items() if k in carried)
    layout = model.native.layout if isinstance(model.native, Native) else None
    if not kept and plain and layout is None:
        return b""  # NNCodec's NNR_TPL_PYT: names travel in the NDUs, nothing else is needed
    manifest: dict[str, Any] = {
        "keys": list(model.tensors),
        "shapes": {k: list(t.shape) for k, t in model.tensors.items() if k in carried},
        "dtypes": {k: t.dtype.name for k, t in model.tensors.items() if k in carried},
    }
    if layout is not None:
        manifest["layout"] = layout.to_manifest()
    if not kept:
        return _topology.pack_text(manifest)  # readable by NNCodec 2.1.3 (a NUL-free string)
    return _topology.pack("state_dict", manifest, _safetensors.write_bytes(kept))


def _fit(tensor: Tensor, dtype_name: str | None, shape: list[int] | None) -> np.ndarray:
    """A decoded array in the element type and shape its slot expects.

    The backend may return a wider type than it was given (int32 for int64 or uint16, float32 for
    float16); integers must survive the narrowing exactly, floats are narrowed as coded.
    bfloat16 returns as float32 values (rounded to nearest even) or, like float8 and float16 sent
    exactly, as the integers of its bit patterns (`restore_narrow`).

    Raises:
        BitstreamError: the type name is unknown, the values do not fit it, or the size misfits.
    """
    array = np.asarray(tensor.numpy())
    if dtype_name is not None:
        try:
            dtype = DType.from_name(dtype_name)
        except TypeError:
            raise BitstreamError(
                f"unknown element type {dtype_name!r} in the PyTorch topology", tensor=tensor.name
            ) from None
        target = dtype.storage_dtype
        if dtype.is_floating_point and array.dtype.kind != target.kind:
            try:  # a narrow float's carrier: bfloat16 values, or float bit patterns as integers
                array = restore_narrow(array, dtype)
            except ValueError as exc:
                raise BitstreamError(str(exc), tensor=tensor.name) from None
        if array.dtype != target:
            narrowed = array.astype(target)
            if array.dtype.kind in "iub" and not np.array_equal(narrowed.astype(array.dtype), array):
                raise BitstreamError(f"decoded values do not fit {dtype_name}", tensor=tensor.name)
            array = narrowed
    if shape is not None:
        if int(np.prod(shape)) != array.size:
            raise BitstreamError(
                f"decoded tensor of {array.size} elements does not fit shape {shape}", tensor=tensor.name
            )
        array = array.reshape(shape)
    return array


def _fitted(tensor: Tensor, dtype_name: str | None, shape: list[int] | None) -> Tensor:
    """`_fit` of a decoded tensor, deferred until its data is used (decoding included), so that a
    lazily decoded model is written tensor by tensor; names and sizes are checked now."""
    try:
        dtype = DType.from_name(dtype_name) if dtype_name is not None else tensor.dtype
    except TypeError:
        raise BitstreamError(
            f"unknown element type {dtype_name!r} in the PyTorch topology", tensor=tensor.name
        ) from None
    if shape is not None and math.prod(shape) != math.prod(tensor.shape):
        raise BitstreamError(
            f"decoded tensor of {math.prod(tensor.shape)} elements does not fit shape {shape}", tensor=tensor.name
        )
    if isinstance(tensor, LazyTensor) and not isinstance(tensor, CodedTensor):
        final = tuple(shape) if shape is not None else tensor.shape
        return LazyTensor(tensor.name, dtype, final, lambda: _fit(tensor, dtype_name, shape))
    return ArrayTensor(tensor.name, _fit(tensor, dtype_name, shape), dtype=dtype if dtype_name else None)


def from_topology(topology: bytes, tensors: Mapping[str, Tensor]) -> Model:
    """Rebuild a model from `topology_bytes` output (or NNCodec's empty topology) and the NDU tensors."""
    parsed = _topology.unpack(topology)
    if parsed.kind == "state_dict":
        return _state_dict_from_topology(parsed, tensors)
    records = _archive.read_zip(parsed.body, "NNR topology")
    payloads = {}
    for entry in parsed.manifest.get("stripped", []):
        key, record, nbytes = entry["key"], entry["record"], int(entry["nbytes"])
        tensor = tensors.get(key)
        if tensor is None:
            raise BitstreamError(f"the PyTorch topology expects tensor {key!r}, which no data unit carries", tensor=key)
        raw = np.ascontiguousarray(_fit(tensor, entry.get("dtype"), None)).tobytes()
        if len(raw) != nbytes:
            raise BitstreamError(f"decoded tensor has {len(raw)} bytes; its record {record} needs {nbytes}", tensor=key)
        payloads[record] = raw
    model = load_archive(_archive.write_zip(_archive.fill(records, payloads)), "NNR topology")
    unknown = [k for k in tensors if k not in model.tensors]
    if unknown:
        raise BitstreamError(f"data unit tensor {unknown[0]!r} has no place in the PyTorch model", tensor=unknown[0])
    return model


def _state_dict_from_topology(parsed: _topology.Topology, tensors: Mapping[str, Tensor]) -> Model:
    kept = _safetensors.read_bytes(parsed.body, "NNR topology") if parsed.body else {}
    shapes = parsed.manifest.get("shapes", {})
    dtypes = parsed.manifest.get("dtypes", {})
    order = parsed.manifest.get("keys") or [*tensors, *kept]
    result: dict[str, Tensor] = {}
    for key in order:
        if key in kept:
            result[key] = kept[key]
        elif key in tensors:
            result[key] = _fitted(tensors[key], dtypes.get(key), shapes.get(key))
        else:
            raise BitstreamError(f"the PyTorch topology expects tensor {key!r}, which no data unit carries", tensor=key)
    extra = [k for k in tensors if k not in result]
    if extra:
        raise BitstreamError(f"data unit tensor {extra[0]!r} is not in the state dict", tensor=extra[0])
    _roles.assign(result, _roles.from_names(list(result)))
    layout = parsed.manifest.get("layout")
    return _state_dict_model(result, None if layout is None else _shards.layout_from_manifest(layout))


# -- saving ----------------------------------------------------------------------------------------


def save(model: Model, path: Path) -> None:
    """Write the model: archives back as archives, state dicts by suffix (`.safetensors` or torch.save).

    Raises:
        UnsupportedError: a state dict asked to become a `.pt2` program.
    """
    native = model.native if isinstance(model.native, Native) else Native("state_dict")
    suffix = path.suffix.lower()
    if path.name.lower().endswith(_shards.INDEX_SUFFIX):
        _shards.write_checkpoint(path, model.tensors, native.layout)
        return
    if suffix == ".safetensors":
        layout = native.layout
        metadata = layout.shards[0].metadata if layout is not None and layout.shards else None
        _shards.write_safetensors(path, model.tensors.values(), metadata)
        return
    if native.kind in ("program", "script"):
        path.write_bytes(_archive.write_zip(_filled_records(model, native)))
        return
    if suffix == ".pt2":
        raise UnsupportedError(f"{path.name}: a state dict has no graph to write as a torch.export program; use .pt")
    if suffix in SCRIPT_SUFFIXES:
        raise UnsupportedError(f"{path.name}: a state dict has no graph to write as a TorchScript module; use .pt")
    state = OrderedDict((key, to_torch(tensor)) for key, tensor in model.tensors.items())
    torch.save(state, path)
