# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Cross-format conversion through nnef-tools' own converters, run in process.

Pairs: ONNX → NNEF, NNEF → ONNX, TensorFlow frozen graph or SavedModel → NNEF, TFLite → NNEF.
Each runs nnef-tools' pipeline as its ``nnef_tools.convert`` command does: the source format's
reader, that format's required optimizer fixes, the converter, the target format's writer.

NOTE: choices that keep outputs equal to the source's (within 1e-5), in the pipeline's terms:
- No ``--optimize``: NNEF keeps ``batch_normalization`` and the graph mirrors the source, op
  for op. The optimizer's folds (batch norm into scale and offset, mul into conv) change the
  arithmetic order.
- No ``--io-transpose``: TensorFlow and TFLite inputs and outputs stay NHWC. The converter
  transposes inside the graph, so the NNEF model takes the same arrays as the source.
- ``--keep-io-names``: the NNEF graph's inputs and outputs keep the source's names. nnef-tools
  names all other tensors (and so the variable labels) after their operations.
- Free input dimensions (ONNX ``dim_param``, TensorFlow ``-1``) are fixed, since NNEF shapes
  are static: ONNX inputs to the shapes the caller gives (``--input-shape``), every other free
  dimension to 1 (nnrconv's rule for runners too).
- ONNX is simplified first (`_simplify`): operators NNEF lacks are replaced by their ONNX
  function bodies, and onnxslim folds static shape computations. nnef-tools' Reduce* transforms
  also take opset-13+ ``axes`` inputs (`_reduce_axes_inputs`).
- TensorFlow graphs are prepared before nnef-tools reads them. Control inputs and dangling
  ``NoOp`` nodes (a frozen Keras graph has one) are dropped. Constant sub-graphs, including
  ``Shape`` of the now static inputs, are folded with nnef-tools' ``--fold-constants`` code,
  which evaluates them in TensorFlow itself. A SavedModel is frozen from its
  ``serving_default`` signature.
- ONNX written by nnef-tools lists every initializer as a graph input too (IR version 6). Those
  entries are removed, so the weights are constants and a runtime does not ask for them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from nnrconv.core import FormatError, FrameworkMissingError, NNRConvError, UnsupportedError
from nnrconv_nnef import _opcheck, _simplify

__all__ = ["PAIRS", "convert_model"]

# Framework modules each pair needs besides nnef_tools.
_NEEDS = {
    ("onnx", "nnef"): ("onnx", "onnxslim"),
    ("nnef", "onnx"): ("onnx", "nnef"),
    ("tensorflow", "nnef"): ("tensorflow",),
    ("tflite", "nnef"): ("flatbuffers",),
}
PAIRS = tuple(_NEEDS)
_INSTALL = "pip install 'nnrconv[nnef]'"
_MESSAGE_LIMIT = 2000


def convert_model(
    source: Path,
    source_format: str,
    target_format: str,
    workdir: Path,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> Path | None:
    """Convert `source` with nnef-tools and return the result inside `workdir`, or None for other pairs.

    Raises:
        FrameworkMissingError: nnef-tools or the source's framework is not installed.
        FormatError: the source cannot be read.
        UnsupportedError: operators nnef-tools cannot convert (all of them, in one message), or
            any other failure inside nnef-tools.
    """
    if source_format == "tensorflow":
        source_format = _tensorflow_kind(source)
    pair = (source_format, target_format)
    route = _ROUTES.get(pair)
    if route is None:
        return None
    missing = [m for m in ("nnef_tools", *_NEEDS[pair]) if importlib.util.find_spec(m) is None]
    if missing:
        raise FrameworkMissingError(
            f"converting {source_format} to {target_format} needs {', '.join(missing)}; install it with: {_INSTALL}"
        )
    out = Path(tempfile.mkdtemp(prefix="nnef-tools-", dir=workdir))
    label = _label(source, workdir, source_format)
    if pair == ("onnx", "nnef"):
        return _onnx_to_nnef(source, label, out, input_shapes)
    if input_shapes:
        raise UnsupportedError(f"{label}: input shapes can be given for ONNX sources only")
    return route(source, label, out)


def _tensorflow_kind(source: Path) -> str:
    """The TensorFlow format reads TFLite and Keras files too; nnef-tools converts TFLite on its own route.

    Raises:
        UnsupportedError: a Keras file, which nnef-tools does not read.
    """
    if source.is_dir():
        return "tensorflow"
    with open(source, "rb") as f:
        head = f.read(8)
    if head[4:8] == b"TFL3":
        return "tflite"
    if head.startswith((b"PK\x03\x04", b"\x89HDF")):
        raise UnsupportedError(
            f"{source}: nnef-tools does not read Keras files; export the model as a SavedModel "
            "(model.export) and convert that"
        )
    return "tensorflow"


def _label(source: Path, workdir: Path, source_format: str) -> str:
    """How messages name the source: the core writes a model decoded from NNR into `workdir` first."""
    if source.parent == workdir:
        return f"the decoded {source_format} model"
    return str(source)


# -- nnef-tools boundary -------------------------------------------------------------------
@contextlib.contextmanager
def _nnef_tools(label: str, target: str) -> Iterator[None]:
    """Run nnef-tools quietly; its failures become one-line nnrconv errors, chained."""
    from nnef_tools.conversion import ConversionError

    try:
        # nnef-tools reports progress with print() and trips framework deprecation warnings.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except NNRConvError:
        raise
    except ConversionError as exc:
        text = _one_line(str(exc), *(exc.details or ()))
        raise UnsupportedError(f"{label}: nnef-tools cannot convert it to {target}: {text}") from exc
    except OSError as exc:
        raise FormatError(f"{label}: nnef-tools cannot read or write it: {_one_line(str(exc))}") from exc
    except Exception as exc:
        # Readers and converters assert and index freely; whatever escapes is still a model they
        # cannot handle, not a bug of nnrconv.
        text = _one_line(str(exc)) or "(no message)"
        raise UnsupportedError(
            f"{label}: nnef-tools failed to convert it to {target}: {type(exc).__name__}: {text}"
        ) from exc


def _one_line(*texts: str) -> str:
    lines = [line.strip() for text in texts for line in str(text).splitlines() if line.strip()]
    joined = "; ".join(lines)
    return joined if len(joined) <= _MESSAGE_LIMIT else joined[: _MESSAGE_LIMIT - 1] + "…"


def _write_nnef(graph: Any, converter: Any, out: Path) -> Path:
    from nnef_tools.io.nnef import Writer

    target = out / "model.nnef"
    writer = Writer(
        fragments=converter.defined_operations(), fragment_dependencies=converter.defined_operation_dependencies()
    )
    writer(graph, str(target))
    return target


def _required_fixes(graph: Any, source_format: str) -> Any:
    """What nnef-tools always runs after reading: the source format's optimizer, required passes only."""
    from nnef_tools.convert import get_optimizer

    optimizer = get_optimizer(source_format)
    return graph if optimizer is None else optimizer(graph, only_required=True)


def _convert_graph(graph: Any, converter: Any) -> Any:
    graph.sort()
    return converter(graph)


# -- ONNX → NNEF -----------------------------------------------------------------------------
def _onnx_to_nnef(source: Path, label: str, out: Path, input_shapes: Mapping[str, Sequence[int]] | None = None) -> Path:
    import onnx
    from nnef_tools.conversion import onnx_to_nnef
    from nnef_tools.io.onnx import Reader

    try:
        model = onnx.load(str(source))
    except Exception as exc:
        raise FormatError(f"{label}: cannot read the ONNX model: {_one_line(str(exc))}") from exc
    _fix_onnx_inputs(model, input_shapes or {}, label)
    supported = set(onnx_to_nnef._Transforms)
    model = _simplify.simplify(model, supported)
    _opcheck.raise_unsupported(_opcheck.onnx_unsupported(model, supported), label, "NNEF")
    with tempfile.TemporaryDirectory(dir=out.parent) as staging:
        simplified = Path(staging) / "simplified.onnx"
        onnx.save(model, str(simplified))
        with _nnef_tools(label, "NNEF"):
            graph = _required_fixes(Reader(simplify=False)(str(simplified)), "onnx")
            converter = onnx_to_nnef.Converter(keep_io_names=True, custom_transforms=_reduce_axes_inputs())
            return _write_nnef(_convert_graph(graph, converter), converter, out)


def _reduce_axes_inputs() -> dict[str, Any]:
    """nnef-tools' Reduce* transforms, also reading `axes` from the second input (opset 13+ form).

    nnef-tools reads Squeeze/Unsqueeze axes from an input, but its Reduce* transforms only know
    the attribute; a tf2onnx export at opset 15 (`ReduceSum(x, axes)`) would fail. The same
    transforms get a default taken from the (constant) input, or every axis when there is none,
    and squeeze `keepdims=0` outputs on positive axes (negative ones make NNEF invalid).
    """
    import copy

    from nnef_tools.conversion import onnx_to_nnef

    transforms = {}
    for op in ("ReduceMin", "ReduceMax", "ReduceMean", "ReduceSum", "ReduceL1", "ReduceL2"):
        transform = copy.copy(onnx_to_nnef._Transforms[op])
        transform.defaults = {
            **transform.defaults,
            "axes": "!ensure_positive(as_const(I[1]), I[0].rank) if len(I) > 1 and I[1] is not None"
            " else list(range(I[0].rank))",
        }
        transform.outputs = "!squeeze_output(O[0], ensure_positive(axes, I[0].rank), keepdims)"
        transforms[op] = transform
    return transforms


def _fix_onnx_inputs(model: Any, given: Mapping[str, Sequence[int]], label: str) -> None:
    """Fix the graph inputs' shapes in place: `given` ones as given, other free dimensions to 1.

    Raises:
        UnsupportedError: a given name is no graph input, or its rank or a static dimension differs.
    """
    constants = {init.name for init in model.graph.initializer}
    inputs = {v.name: v for v in model.graph.input if v.name not in constants}
    unknown = sorted(set(given) - set(inputs))
    if unknown:
        raise UnsupportedError(
            f"{label}: no graph input named {', '.join(map(repr, unknown))}; inputs: {sorted(inputs)}"
        )
    for name, value in inputs.items():
        if not value.type.tensor_type.HasField("shape"):
            continue
        dims = value.type.tensor_type.shape.dim
        wanted = given.get(name)
        if wanted is not None and len(wanted) != len(dims):
            raise UnsupportedError(
                f"{label}: input {name!r} has {len(dims)} dimensions, the shape given has {len(wanted)}"
            )
        for index, d in enumerate(dims):
            static = d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            size = wanted[index] if wanted is not None else (static or 1)
            if static is not None and size != static:
                raise UnsupportedError(f"{label}: input {name!r} has dimension {index} fixed to {static}, not {size}")
            d.Clear()
            d.dim_value = size


# -- NNEF → ONNX -----------------------------------------------------------------------------
def _nnef_to_onnx(source: Path, label: str, out: Path) -> Path:
    from nnef_tools.conversion import nnef_to_onnx
    from nnef_tools.io.nnef import Reader
    from nnef_tools.io.onnx import Writer

    target = out / "model.onnx"
    with _nnef_tools(label, "ONNX"):
        converter = nnef_to_onnx.Converter()
        reader = Reader(decomposed=converter.decomposed_operations(), custom_shapes=converter.defined_shapes())
        graph = _required_fixes(reader(str(source)), "nnef")
    # The converter turns variables into constants itself, before its transforms run.
    supported = {*nnef_to_onnx._Transforms, "variable"}
    _opcheck.raise_unsupported(_opcheck.nnef_tools_graph_unsupported(graph, supported), label, "ONNX")
    with _nnef_tools(label, "ONNX"):
        Writer()(_convert_graph(graph, converter), str(target))
    _drop_initializer_inputs(target)
    return target


def _drop_initializer_inputs(path: Path) -> None:
    import onnx

    model = onnx.load(str(path))
    constants = {init.name for init in model.graph.initializer}
    keep = [value for value in model.graph.input if value.name not in constants]
    if len(keep) != len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(keep)
        onnx.save(model, str(path))


# -- TensorFlow → NNEF -----------------------------------------------------------------------
def _tf_to_nnef(source: Path, label: str, out: Path) -> Path:
    from nnef_tools.conversion import tf_to_nnef
    from nnef_tools.io.tf.graphdef import Reader

    prepared = out / "prepared.pb"
    graph = _prepare_graph_def(source, label, prepared)
    _opcheck.raise_unsupported(_opcheck.tf_unsupported(graph, tf_to_nnef._Transforms), label, "NNEF")
    with _nnef_tools(label, "NNEF"):
        read = _required_fixes(Reader(fold_constants=False)(str(prepared)), "tf")
        converter = tf_to_nnef.Converter(io_transpose=False, keep_io_names=True)
        return _write_nnef(_convert_graph(read, converter), converter, out)


def _prepare_graph_def(source: Path, label: str, prepared: Path) -> Any:
    """Write a static, folded GraphDef nnef-tools can read to `prepared`; return it imported in TF."""
    _quiet_tensorflow()
    import tensorflow as tf

    graph_def = _frozen_graph_def(source, label)
    _strip_control_flow_edges(graph_def)
    _fix_placeholders(graph_def)
    with _nnef_tools(label, "NNEF"):
        from nnef_tools.io.tf.graphdef.utils import fold_constant_tensors

        graph_def = fold_constant_tensors(graph_def)
    prepared.write_bytes(graph_def.SerializeToString())
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    return graph


def _quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ start-up chatter off stderr, as the TensorFlow plugin does, unless set."""
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _frozen_graph_def(source: Path, label: str) -> Any:
    """The source's GraphDef: a frozen graph as stored, or a SavedModel's serving signature frozen."""
    import tensorflow as tf

    folder = source if source.is_dir() else source.parent if source.name == "saved_model.pb" else None
    if folder is None:
        graph_def = tf.compat.v1.GraphDef()
        try:
            graph_def.ParseFromString(source.read_bytes())
        except Exception as exc:
            raise FormatError(f"{label}: not a TensorFlow GraphDef: {_one_line(str(exc))}") from exc
        return graph_def
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    try:
        loaded = tf.saved_model.load(str(folder))
        signature = loaded.signatures["serving_default"]
    except KeyError:
        raise UnsupportedError(f"{label}: the SavedModel has no 'serving_default' signature to convert") from None
    except Exception as exc:
        raise FormatError(f"{label}: TensorFlow cannot load the SavedModel: {_one_line(str(exc))}") from exc
    return convert_variables_to_constants_v2(signature).graph.as_graph_def()


def _strip_control_flow_edges(graph_def: Any) -> None:
    """Drop control inputs and the NoOp nodes no value flows from (a frozen graph needs neither)."""
    used = set()
    for node in graph_def.node:
        data = [name for name in node.input if not name.startswith("^")]
        if len(data) != len(node.input):
            del node.input[:]
            node.input.extend(data)
        used.update(name.split(":")[0] for name in data)
    keep = [node for node in graph_def.node if node.op != "NoOp" or node.name in used]
    if len(keep) != len(graph_def.node):
        del graph_def.node[:]
        graph_def.node.extend(keep)


def _fix_placeholders(graph_def: Any) -> None:
    """Set the placeholders' free dimensions to 1; stale recorded shapes are dropped and re-inferred."""
    for node in graph_def.node:
        node.attr.pop("_output_shapes", None)
        if node.op == "Placeholder" and "shape" in node.attr:
            for dim in node.attr["shape"].shape.dim:
                if dim.size < 0:
                    dim.size = 1


# -- TFLite → NNEF ---------------------------------------------------------------------------
def _tflite_to_nnef(source: Path, label: str, out: Path) -> Path:
    from nnef_tools.conversion import tflite_to_nnef
    from nnef_tools.io.tf.lite import Reader

    with _nnef_tools(label, "NNEF"):
        graph = _required_fixes(Reader()(str(source)), "tflite")
    supported = set(tflite_to_nnef._Transforms)
    _opcheck.raise_unsupported(_opcheck.nnef_tools_graph_unsupported(graph, supported), label, "NNEF")
    with _nnef_tools(label, "NNEF"):
        converter = tflite_to_nnef.Converter(io_transpose=False, keep_io_names=True)
        return _write_nnef(_convert_graph(graph, converter), converter, out)


_ROUTES: dict[tuple[str, str], Callable[[Path, str, Path], Path]] = {
    ("onnx", "nnef"): _onnx_to_nnef,
    ("nnef", "onnx"): _nnef_to_onnx,
    ("tensorflow", "nnef"): _tf_to_nnef,
    ("tflite", "nnef"): _tflite_to_nnef,
}
