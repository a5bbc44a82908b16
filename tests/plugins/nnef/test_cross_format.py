# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Cross-format conversion through nnef-tools (`convert_model`): ONNX, TensorFlow, TFLite, NNR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nnrconv
from nnrconv import nnc
from nnrconv.core import UnsupportedError, get_plugin_manager, get_registry
from tests.plugins.nnef._helpers import cli

pytest.importorskip("nnef_tools")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from onnx import TensorProto, helper  # noqa: E402

from tests.plugins.onnx import _models as onnx_models  # noqa: E402

TOLERANCE = 1e-5


def _run(path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of a model in its format's runner (onnxruntime or nnef-tools' interpreter)."""
    model = nnrconv.load(path)
    return get_registry().get(model.source_format).run(model, inputs)


def _assert_close(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> None:
    assert len(first) == len(second) == 1
    a, b = next(iter(first.values())), next(iter(second.values()))
    assert a.shape == b.shape
    assert float(np.max(np.abs(a - b))) <= TOLERANCE


@pytest.fixture(scope="module")
def torch_onnx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, np.ndarray]]]:
    root = tmp_path_factory.mktemp("cross_onnx")
    return {kind: onnx_models.torch_model(kind, root / f"{kind}.onnx") for kind in ("cnn", "mlp")}


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
def test_onnx_to_nnef_to_onnx_keeps_outputs(torch_onnx, tmp_path: Path, kind: str) -> None:
    source, inputs = torch_onnx[kind]
    nnef_path, back = tmp_path / "m.nnef", tmp_path / "back.onnx"
    result = nnrconv.convert(source, nnef_path)
    assert (result.source_format, result.target_format) == ("onnx", "nnef")
    assert (nnef_path / "graph.nnef").is_file()
    nnrconv.convert(nnef_path, back)
    reference = _run(source, inputs)
    _assert_close(reference, _run(nnef_path, inputs))
    _assert_close(reference, _run(back, inputs))
    # Graph inputs and outputs keep their names; weights are constants, not inputs, in the ONNX.
    graph = onnx.load(str(back)).graph
    assert [v.name for v in graph.input] == ["x"] and [v.name for v in graph.output] == ["y"]
    if kind == "cnn":
        assert "batch_normalization(" in (nnef_path / "graph.nnef").read_text()


def test_nnr_with_onnx_topology_to_nnef(torch_onnx, tmp_path: Path) -> None:
    source, inputs = torch_onnx["cnn"]
    bitstream, direct, via_nnr = tmp_path / "m.nnr", tmp_path / "direct.nnef", tmp_path / "via.nnef"
    nnrconv.convert(source, bitstream, options=nnc.CodingOptions(lossless=True))
    result = nnrconv.convert(bitstream, via_nnr)
    assert (result.source_format, result.target_format) == ("nnr", "nnef")
    nnrconv.convert(source, direct)
    # Lossless coding: the decoded ONNX is the source, so the NNEF files are the same.
    assert (via_nnr / "graph.nnef").read_bytes() == (direct / "graph.nnef").read_bytes()
    _assert_close(_run(source, inputs), _run(via_nnr, inputs))


def test_free_input_dimensions_become_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weight = onnx.numpy_helper.from_array(rng.standard_normal((6, 4)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "free",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[weight],
    )
    source = tmp_path / "free.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(source))
    target = tmp_path / "free.nnef"
    nnrconv.convert(source, target)
    specs = get_registry().get("nnef").input_specs(nnrconv.load(target))
    assert [(s.name, s.shape) for s in specs] == [("x", (1, 6))]
    inputs = {"x": rng.standard_normal((1, 6)).astype(np.float32)}
    _assert_close(_run(source, inputs), _run(target, inputs))


def _unsupported_model(path: Path) -> Path:
    """Four unsupported operators at top level (If among them), one in each If branch, and a supported one."""
    branch = helper.make_graph(
        [helper.make_node("HardSigmoid", ["r"], ["hs"])],
        "branch",
        [],
        [helper.make_tensor_value_info("hs", TensorProto.FLOAT, [2, 3])],
    )
    nodes = [
        helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["selected"]),
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("HardSwish", ["r"], ["h"]),
        helper.make_node("TopK", ["h", "k"], ["values", "indices"], axis=1),
        helper.make_node("If", ["cond"], ["branched"], then_branch=branch, else_branch=branch),
    ]
    graph = helper.make_graph(
        nodes,
        "unsupported",
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 100, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 100]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("selected", TensorProto.INT64, [None, 3]),
            helper.make_tensor_value_info("values", TensorProto.FLOAT, [2, 1]),
            helper.make_tensor_value_info("branched", TensorProto.FLOAT, [2, 3]),
        ],
        initializer=[onnx.numpy_helper.from_array(np.array([1], np.int64), "k")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_every_unsupported_operator_in_one_message(tmp_path: Path) -> None:
    source = _unsupported_model(tmp_path / "m.onnx")
    result = cli(source, tmp_path / "m.nnef")
    assert result.returncode == 5, result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    # HardSwish and HardSigmoid (also inside the If branches) are decomposed exactly before
    # conversion (their ONNX function bodies), so only the rest is listed.
    assert "3 operators cannot be converted to NNEF" in message
    for part in ("NonMaxSuppression (boxes [1,100,4], scores [1,1,100])", "TopK (", "If (cond [])"):
        assert part in message
    assert "HardSigmoid" not in message and "HardSwish" not in message
    assert not (tmp_path / "m.nnef").exists()


def test_hook_convert_model_declines_other_pairs(tmp_path: Path) -> None:
    hook = get_plugin_manager().hook.convert_model
    source = tmp_path / "m.onnx"
    source.write_bytes(b"")
    assert (
        hook(source=source, source_format="onnx", target_format="pytorch", workdir=tmp_path, input_shapes=None) is None
    )
    assert (
        hook(source=source, source_format="tensorflow", target_format="onnx", workdir=tmp_path, input_shapes=None)
        is None
    )


def test_nnef_tools_errors_become_one_line(tmp_path: Path) -> None:
    source = tmp_path / "broken.nnef"
    source.mkdir()
    (source / "graph.nnef").write_text("version 1.0;\ngraph G( x ) -> ( y )\n{\n  x = external(shape = [1]);\n}\n")
    with pytest.raises(UnsupportedError) as info:
        get_plugin_manager().hook.convert_model(
            source=source, source_format="nnef", target_format="onnx", workdir=tmp_path, input_shapes=None
        )
    assert "\n" not in str(info.value) and str(source) in str(info.value)


# -- TensorFlow and TFLite ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tf_models():  # type: ignore[no-untyped-def]
    pytest.importorskip("tensorflow")
    from tests.plugins.tensorflow import _models

    return _models


def _keras_reference(tf_models, kind: str) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    x = tf_models.sample_input(kind)[:1]  # free batch dimensions become 1
    return x, tf_models.keras_model(kind)(x).numpy()


def test_tensorflow_frozen_graph_to_nnef(tf_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = tf_models.frozen_graph("cnn", tmp_path / "cnn.pb")
    target = tmp_path / "cnn.nnef"
    result = nnrconv.convert(source, target)
    assert (result.source_format, result.target_format) == ("tensorflow", "nnef")
    x, reference = _keras_reference(tf_models, "cnn")
    outputs = _run(target, {"image": x})
    _assert_close({"y": reference}, outputs)


def test_tensorflow_savedmodel_to_nnef(tf_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = tf_models.saved_model("mlp", tmp_path / "mlp_savedmodel")
    target = tmp_path / "mlp.nnef"
    nnrconv.convert(source, target)
    x, reference = _keras_reference(tf_models, "mlp")
    specs = get_registry().get("nnef").input_specs(nnrconv.load(target))
    _assert_close({"y": reference}, _run(target, {specs[0].name: x}))


def test_tensorflow_loop_lists_its_operators(tf_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = tf_models.frozen_graph("lstm", tmp_path / "lstm.pb")
    with pytest.raises(UnsupportedError, match=r"operators cannot be converted to NNEF: .*TensorListReserve"):
        nnrconv.convert(source, tmp_path / "lstm.nnef")


def test_tflite_to_nnef(tf_models, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    import tensorflow as tf

    model = tf_models.keras_model("cnn")
    source = tmp_path / "cnn.tflite"
    source.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    capfd.readouterr()
    assert get_registry().for_input(source).name == "tensorflow"  # the TensorFlow family reads TFLite
    target = tmp_path / "cnn.nnef"
    result = nnrconv.convert(source, target)
    assert (result.source_format, result.target_format) == ("tensorflow", "nnef")
    x, reference = _keras_reference(tf_models, "cnn")
    specs = get_registry().get("nnef").input_specs(nnrconv.load(target))
    _assert_close({"y": reference}, _run(target, {specs[0].name: x}))
    # A TFLite model now travels in NNR too, and from there to NNEF.
    nnrconv.convert(source, tmp_path / "cnn.nnr", options=nnc.CodingOptions(lossless=True))
    again = tmp_path / "again.nnef"
    nnrconv.convert(tmp_path / "cnn.nnr", again)
    _assert_close({"y": reference}, _run(again, {specs[0].name: x}))


def test_savedmodel_carried_in_nnr_converts_to_nnef(tmp_path):
    """A SavedModel decoded from NNR is written as a folder before nnef-tools converts it."""
    from tests.plugins.tensorflow import _models as tf_models

    saved = tf_models.saved_model("mlp", tmp_path / "mlp_savedmodel")
    nnrconv.convert(saved, tmp_path / "m.nnr", options=nnc.CodingOptions(lossless=True))
    nnrconv.convert(tmp_path / "m.nnr", tmp_path / "m.nnef")
    assert (tmp_path / "m.nnef" / "graph.nnef").is_file()
