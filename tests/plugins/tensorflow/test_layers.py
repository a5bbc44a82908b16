# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Error compensation on frozen TensorFlow graphs: which weights multiply which layer input, H
from the session's own activations predicting its layer-output change exactly, and an output
target met end to end with compensated layers."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

import nnrconv
from nnrconv import _api
from nnrconv._rate import OutputProbe, calibration_feeds
from nnrconv._rate._hessian import layer_hessians
from nnrconv.core import UnsupportedError, WeightInput
from tests.rate._checks import compensated_target_holds, every_layer_compensated  # noqa: F401 (autouse)

pytest.importorskip("tensorflow")


SIZE = 16


def _weights(rng: np.random.Generator, *shape: int) -> np.ndarray:
    fan_in = int(np.prod(shape[:-1]))
    return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)


def _params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {
        "w1": _weights(rng, 3, 3, 3, 8), "w2": _weights(rng, 3, 3, 8, 12), "w3": _weights(rng, 2, 3, 12, 8),
        "fc1": _weights(rng, 72, 16), "fc2": _weights(rng, 16, 5).T.copy(),  # fc2: (C_out, d)
    }  # fmt: skip


def _forward(tf, x, p):  # type: ignore[no-untyped-def]
    """SAME stride-2 conv (odd pad at the bottom/right) -> EXPLICIT dilated conv -> VALID
    (2, 1)-strided conv -> MatMul -> MatMul with transpose_b: every geometry covered."""
    h = tf.nn.relu(tf.nn.conv2d(x, tf.identity(p["w1"]), strides=2, padding="SAME", name="c1"))  # (8, 8)
    pads = [[0, 0], [1, 2], [0, 1], [0, 0]]
    h = tf.nn.relu(tf.nn.conv2d(h, p["w2"], strides=1, padding=pads, dilations=2, name="c2"))  # (7, 5)
    h = tf.nn.relu(tf.nn.conv2d(h, p["w3"], strides=[2, 1], padding="VALID", name="c3"))  # (3, 3)
    h = tf.nn.relu(tf.matmul(tf.reshape(h, [-1, 72]), tf.identity(p["fc1"]), name="m1"))
    return tf.matmul(h, p["fc2"], transpose_b=True, name="m2")


def convnet_graph(path: Path) -> Path:
    """The convnet as a frozen graph: x (N, 16, 16, 3) -> logits, weights as Const nodes."""
    import tensorflow as tf

    with tf.Graph().as_default() as graph:
        x = tf.compat.v1.placeholder(tf.float32, [None, SIZE, SIZE, 3], name="x")
        params = {name: tf.constant(value, name=name) for name, value in _params().items()}
        tf.identity(_forward(tf, x, params), name="logits")
    path.write_bytes(graph.as_graph_def().SerializeToString())
    return path


def convnet_saved_model(path: Path) -> Path:
    """The same convnet as a TF2 SavedModel: weights are variables captured by the signature."""
    import tensorflow as tf

    module = tf.Module()
    for name, value in _params().items():
        setattr(module, name, tf.Variable(value, name=name))
    params = {name: getattr(module, name) for name in _params()}
    spec = tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32, name="x")
    serve = tf.function(lambda x: {"logits": _forward(tf, x, params)}, input_signature=[spec])
    module.serve = serve
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    return path


def left_out_graph(path: Path) -> Path:
    """Layers whose weight use cannot be expressed exactly: each must be left out."""
    import tensorflow as tf

    rng = np.random.default_rng(6)
    with tf.Graph().as_default() as graph:
        x = tf.compat.v1.placeholder(tf.float32, [None, 8, 8, 4], name="x")
        free = tf.compat.v1.placeholder(tf.float32, [None, None, None, 4], name="free")
        v = tf.compat.v1.placeholder(tf.float32, [6, 3], name="v")
        depthwise = tf.constant(_weights(rng, 3, 3, 4, 1), name="depthwise")
        tf.nn.depthwise_conv2d(x, depthwise, [1, 1, 1, 1], "SAME", name="dw")
        grouped = tf.constant(_weights(rng, 3, 3, 2, 4), name="grouped")  # 4 input channels: 2 groups
        tf.nn.conv2d(x, grouped, 1, "VALID", name="group_conv")
        reshaped = tf.constant(_weights(rng, 36, 4), name="reshaped")
        tf.nn.conv2d(x, tf.reshape(reshaped, [3, 3, 4, 4]), 1, "VALID", name="reshaped_conv")
        dynamic = tf.constant(_weights(rng, 3, 3, 4, 4), name="dynamic_same")
        tf.nn.conv2d(free, dynamic, 2, "SAME", name="dynamic_conv")
        dynamic_valid = tf.constant(_weights(rng, 3, 3, 4, 4), name="dynamic_valid")
        tf.nn.conv2d(free, dynamic_valid, 2, "VALID", name="dynamic_valid_conv")
        for name, crops in (("space_to_batch_cropped", [[0, 1], [0, 1]]), ("space_to_batch_whole", [[0, 0], [0, 0]])):
            blocks = tf.space_to_batch_nd(x, [2, 2], [[0, 2], [0, 2]])  # (5, 5) per block
            kernel = tf.constant(_weights(rng, 3, 3, 4, 4), name=name)
            tf.batch_to_space(tf.nn.conv2d(blocks, kernel, 1, "VALID"), [2, 2], crops)
        transposed = tf.constant(_weights(rng, 6, 5), name="transposed_a")
        tf.matmul(transposed, v, transpose_a=True, name="ta")
    path.write_bytes(graph.as_graph_def().SerializeToString())
    return path


def smooth_nhwc(count: int, seed: int) -> np.ndarray:
    """Correlated images (neighbouring pixels alike), as calibration inputs are."""
    noise = np.random.default_rng(seed).standard_normal((count, SIZE, SIZE, 3))
    return np.cumsum(np.cumsum(noise, axis=1), axis=2).astype(np.float32) / SIZE


def convnet_keras(path: Path) -> Path:
    """A Keras convnet of the same kinds of layers (Keras has no explicit padding: a VALID dilated
    conv instead, and Dense layers are all x·W), saved as `.keras` or `.h5` by its name."""
    import keras

    keras.utils.set_random_seed(2)
    layers = keras.layers
    x = keras.Input((SIZE, SIZE, 3), name="x")
    h = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="w1")(x)  # (8, 8)
    h = layers.Conv2D(12, 3, dilation_rate=2, activation="relu", name="w2")(h)  # (4, 4)
    h = layers.Conv2D(8, (2, 3), strides=(2, 1), activation="relu", name="w3")(h)  # (2, 2)
    h = layers.Dense(16, activation="relu", name="fc1")(layers.Flatten()(h))
    keras.Model(x, layers.Dense(5, name="fc2")(h)).save(path)
    return path


LAYERS = ("w1", "w2", "w3", "fc1", "fc2")
KINDS = ("frozen", "savedmodel", "keras", "h5")


def _conv(strides: tuple[int, int], pads: tuple[int, ...], dilations: tuple[int, int]) -> WeightInput:
    return WeightInput("", "", "conv", strides, pads, dilations, layout="hwio")  # type: ignore[arg-type]


GRAPH_GEOMETRY = {
    "w1": _conv((2, 2), (0, 0, 1, 1), (1, 1)), "w2": _conv((1, 1), (1, 0, 2, 1), (2, 2)),
    "w3": _conv((2, 1), (0, 0, 0, 0), (1, 1)),
    "fc1": WeightInput("", "", "matmul"), "fc2": WeightInput("", "", "linear"),
}  # fmt: skip
# Keras runs a dilated convolution as SpaceToBatchND -> VALID Conv2D -> BatchToSpaceND (no crop here).
KERAS_GEOMETRY = {**GRAPH_GEOMETRY, "w2": _conv((1, 1), (0, 0, 0, 0), (1, 1)), "fc2": WeightInput("", "", "matmul")}


@dataclass
class Net:
    kind: str
    path: Path
    calib: Path
    model: object
    fmt: object
    tensors: dict[str, np.ndarray]
    hessians: dict
    keys: dict[str, str]  # w1, ... -> the model's tensor key

    def output_of(self, model: object, layer: str) -> str:
        """The flat graph's tensor name of the output of the Conv2D / MatMul reading `layer`."""
        from nnrconv_tensorflow import _flat, _layers

        flat = _flat.flat_graph(model)
        ops = [op for op in flat.graph.get_operations() if op.type in ("Conv2D", "MatMul")]
        found = [
            op.outputs[0].name
            for op in ops
            if flat.keys.get(_layers._const_source(op.inputs[1]) or "") == self.keys[layer]
        ]
        assert len(found) == 1, found
        return found[0]


def _build(kind: str, root: Path) -> tuple[Path, dict[str, str]]:
    if kind == "frozen":
        return convnet_graph(root / "net.pb"), {n: n for n in LAYERS}
    if kind == "savedmodel":
        return convnet_saved_model(root / "net_savedmodel"), {n: f"{n}/.ATTRIBUTES/VARIABLE_VALUE" for n in LAYERS}
    return convnet_keras(root / f"net.{kind}"), {n: f"{n}/kernel" for n in LAYERS}


@pytest.fixture(scope="module", params=KINDS)
def net(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("tf_layers")
    path, keys = _build(request.param, root)
    calib = root / "calib.npz"
    np.savez(calib, x=smooth_nhwc(8, seed=1))
    model = nnrconv.load(path)
    fmt = _api._plugin("tensorflow")
    tensors = {n: t.numpy() for n, t in model.tensors.items()}
    feeds, _ = calibration_feeds(calib, fmt.input_specs(model))
    return Net(request.param, path, calib, model, fmt, tensors, layer_hessians(fmt, model, feeds, tensors), keys)


def test_every_conv_and_matmul_weight_is_found_with_its_geometry(net):
    found = {u.weight: replace(u, activation="") for u in net.fmt.weight_inputs(net.model)}
    geometry = KERAS_GEOMETRY if net.kind in ("keras", "h5") else GRAPH_GEOMETRY
    assert found == {net.keys[n]: replace(g, weight=net.keys[n]) for n, g in geometry.items()}


def test_every_weight_gets_its_input_correlation(net):
    shapes = {n: net.hessians[net.keys[n]][1].shape for n in LAYERS}
    fc1 = 32 if net.kind in ("keras", "h5") else 72
    assert shapes == {"w1": (27, 27), "w2": (72, 72), "w3": (72, 72), "fc1": (fc1, fc1), "fc2": (16, 16)}
    assert set(net.hessians) == set(net.keys.values())


def test_activations_are_the_layer_inputs_as_tensorflow_has_them(net):
    x = np.load(net.calib)["x"][:2]
    uses = {u.weight: u.activation for u in net.fmt.weight_inputs(net.model)}
    names = [uses[net.keys[n]] for n in ("w1", "w2", "fc2")]
    values = net.fmt.activations(net.model, {"x": x}, names)
    np.testing.assert_array_equal(values[names[0]], x)
    space_to_batch = net.kind in ("keras", "h5")  # w2's input: 2x2 blocks of the (8, 8) map
    assert values[names[1]].shape == ((8, 4, 4, 8) if space_to_batch else (2, 8, 8, 8))
    assert values[names[2]].shape == (2, 16)
    with pytest.raises(UnsupportedError):
        net.fmt.activations(net.model, {"x": x}, ["no_such_node:0"])


@pytest.mark.parametrize("name", LAYERS)
def test_hessian_predicts_the_session_output_change_exactly(net, name):
    """Σ over samples ||ΔW·x||² = tr(ΔW H ΔWᵀ): the windows (SAME split, explicit pads, stride,
    dilation, NHWC/HWIO order) are those TensorFlow convolves with, and the changed weight is
    the one the layer reads."""
    key = net.keys[name]
    use, hessian = net.hessians[key]
    weight = net.tensors[key]
    delta = np.random.default_rng(3).standard_normal(weight.shape).astype(np.float32) * 1e-2
    feed = {"x": np.load(net.calib)["x"]}
    layer_out = net.output_of(net.model, name)
    before = net.fmt.activations(net.model, feed, [layer_out])[layer_out].astype(np.float64)
    probe = OutputProbe(net.fmt, net.model, [feed], margins=False)
    changed = probe.with_tensors({key: weight + delta})
    layer_out = net.output_of(changed, name)
    after = net.fmt.activations(changed, feed, [layer_out])[layer_out].astype(np.float64)
    if use.kind == "conv":
        matrix = delta.transpose(3, 2, 0, 1).reshape(delta.shape[3], -1)  # HWIO -> (C_out, C_in·kh·kw)
    else:
        matrix = delta.T if use.kind == "matmul" else delta
    predicted = float(np.trace(matrix.astype(np.float64) @ hessian @ matrix.T.astype(np.float64)))
    assert predicted > 0
    assert np.sum((after - before) ** 2) == pytest.approx(predicted, rel=1e-3)


def test_layers_it_cannot_express_exactly_are_left_out(tmp_path):
    model = nnrconv.load(left_out_graph(tmp_path / "odd.pb"))
    fmt = _api._plugin("tensorflow")
    found = {u.weight: u for u in fmt.weight_inputs(model)}
    assert set(found) == {"dynamic_valid", "space_to_batch_whole"}  # VALID needs no spatial size
    assert found["dynamic_valid"] == WeightInput("dynamic_valid", "free:0", "conv", (2, 2), layout="hwio")


@pytest.mark.slow
def test_output_target_with_calibration_compensates_and_holds(net, tmp_path):
    _, allocation, _ = compensated_target_holds(net.path, net.calib, net.fmt, net.model, tmp_path / "net.nnr")
    assert set(allocation.replaced) <= set(net.keys.values())


def test_keras_exported_savedmodels_are_left_out_as_their_loaders_read_different_copies(tmp_path):
    """`model.export` writes each variable as `variables/<i>` and `_all_variables/<i>`; the object
    graph loader reads one, the v1 loader (the runner's) the other: no key is safe to compensate."""
    from tests.plugins.tensorflow import _models

    model = nnrconv.load(_models.saved_model("cnn", tmp_path / "cnn_savedmodel"))
    assert any(key.startswith("_all_variables/") for key in model.tensors)
    assert _api._plugin("tensorflow").weight_inputs(model) == []


def test_layers_inside_a_lowered_loop_are_left_out_and_those_after_it_kept(tmp_path):
    """A frozen loop body runs once per iteration and a session cannot fetch its tensors."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    rng = np.random.default_rng(8)
    inner, after = _weights(rng, 4, 4), _weights(rng, 4, 2)

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def forward(x):  # type: ignore[no-untyped-def]
        def body(i, h):  # type: ignore[no-untyped-def]
            return i + 1, tf.tanh(tf.matmul(h, tf.constant(inner, name="inner")))

        h = tf.while_loop(lambda i, h: i < 3, body, [tf.constant(0), x])[1]
        return tf.matmul(h, tf.constant(after, name="after"))

    path = tmp_path / "loop.pb"
    frozen = convert_variables_to_constants_v2(forward.get_concrete_function())  # lowers the loop
    path.write_bytes(frozen.graph.as_graph_def().SerializeToString())
    model = nnrconv.load(path)
    fmt = _api._plugin("tensorflow")
    assert any(n.op == "Enter" for n in model.native.graph_def.node)
    (use,) = fmt.weight_inputs(model)
    assert np.array_equal(model.tensors[use.weight].numpy(), after) and use.kind == "matmul"
    x = np.ones((2, 4), np.float32)
    assert fmt.activations(model, {"x": x}, [use.activation])[use.activation].shape == (2, 4)
