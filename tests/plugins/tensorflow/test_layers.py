# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Error compensation on frozen TensorFlow graphs: which weights multiply which layer input, H
from the session's own activations predicting its layer-output change exactly, and an output
target met end to end with compensated layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nnrconv
from nnrconv import _api, nnc
from nnrconv._rate import OutputProbe, calibration_feeds, prepare, snr_of
from nnrconv._rate._hessian import layer_hessians
from nnrconv.core import UnsupportedError, WeightInput

pytest.importorskip("tensorflow")

SIZE = 16


def _weights(rng: np.random.Generator, *shape: int) -> np.ndarray:
    fan_in = int(np.prod(shape[:-1]))
    return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)


def convnet_graph(path: Path) -> Path:
    """x (N, 16, 16, 3) -> SAME stride-2 conv (odd pad at the bottom/right) -> EXPLICIT dilated
    conv -> VALID (2, 1)-strided conv -> MatMul -> MatMul with transpose_b: every geometry."""
    import tensorflow as tf

    rng = np.random.default_rng(5)
    with tf.Graph().as_default() as graph:
        x = tf.compat.v1.placeholder(tf.float32, [None, SIZE, SIZE, 3], name="x")
        w1 = tf.identity(tf.constant(_weights(rng, 3, 3, 3, 8), name="w1"))
        h = tf.nn.relu(tf.nn.conv2d(x, w1, strides=2, padding="SAME", name="c1"))
        w2 = tf.constant(_weights(rng, 3, 3, 8, 12), name="w2")
        pads = [[0, 0], [1, 2], [0, 1], [0, 0]]
        h = tf.nn.relu(tf.nn.conv2d(h, w2, strides=1, padding=pads, dilations=2, name="c2"))  # (7, 5)
        w3 = tf.constant(_weights(rng, 2, 3, 12, 8), name="w3")
        h = tf.nn.relu(tf.nn.conv2d(h, w3, strides=[2, 1], padding="VALID", name="c3"))  # (3, 3)
        h = tf.reshape(h, [-1, 72])
        fc1 = tf.constant(_weights(rng, 72, 16), name="fc1")
        h = tf.nn.relu(tf.matmul(h, tf.identity(fc1), name="m1"))
        fc2 = tf.constant(_weights(rng, 16, 5).T.copy(), name="fc2")  # (C_out, d)
        tf.identity(tf.matmul(h, fc2, transpose_b=True, name="m2"), name="logits")
    path.write_bytes(graph.as_graph_def().SerializeToString())
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
        transposed = tf.constant(_weights(rng, 6, 5), name="transposed_a")
        tf.matmul(transposed, v, transpose_a=True, name="ta")
    path.write_bytes(graph.as_graph_def().SerializeToString())
    return path


def smooth_nhwc(count: int, seed: int) -> np.ndarray:
    """Correlated images (neighbouring pixels alike), as calibration inputs are."""
    noise = np.random.default_rng(seed).standard_normal((count, SIZE, SIZE, 3))
    return np.cumsum(np.cumsum(noise, axis=1), axis=2).astype(np.float32) / SIZE


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    root = tmp_path_factory.mktemp("tf_layers")
    path = convnet_graph(root / "net.pb")
    calib = root / "calib.npz"
    np.savez(calib, x=smooth_nhwc(8, seed=1))
    model = nnrconv.load(path)
    fmt = _api._plugin("tensorflow")
    tensors = {n: t.numpy() for n, t in model.tensors.items()}
    feeds, _ = calibration_feeds(calib, fmt.input_specs(model))
    return path, calib, model, fmt, tensors, layer_hessians(fmt, model, feeds, tensors)


def test_every_conv_and_matmul_weight_is_found_with_its_geometry(net):
    _, _, model, fmt, *_ = net
    assert {u.weight: u for u in fmt.weight_inputs(model)} == {
        "w1": WeightInput("w1", "x:0", "conv", (2, 2), (0, 0, 1, 1), (1, 1), layout="hwio"),
        "w2": WeightInput("w2", "Relu:0", "conv", (1, 1), (1, 0, 2, 1), (2, 2), layout="hwio"),
        "w3": WeightInput("w3", "Relu_1:0", "conv", (2, 1), (0, 0, 0, 0), (1, 1), layout="hwio"),
        "fc1": WeightInput("fc1", "Reshape:0", "matmul"),
        "fc2": WeightInput("fc2", "Relu_3:0", "linear"),
    }  # fmt: skip


def test_every_weight_gets_its_input_correlation(net):
    *_, hessians = net
    assert {n: h.shape for n, (_, h) in hessians.items()} == {
        "w1": (27, 27), "w2": (72, 72), "w3": (72, 72), "fc1": (72, 72), "fc2": (16, 16),
    }  # fmt: skip


def test_activations_are_the_layer_inputs_as_tensorflow_has_them(net):
    _, calib, model, fmt, *_ = net
    x = np.load(calib)["x"][:2]
    values = fmt.activations(model, {"x": x}, ["x:0", "Relu:0", "Reshape:0"])
    np.testing.assert_array_equal(values["x:0"], x)
    assert values["Relu:0"].shape == (2, 8, 8, 8) and values["Reshape:0"].shape == (2, 72)
    with pytest.raises(UnsupportedError):
        fmt.activations(model, {"x": x}, ["no_such_node:0"])


@pytest.mark.parametrize("name", ["w1", "w2", "w3", "fc1", "fc2"])
def test_hessian_predicts_the_session_output_change_exactly(net, name):
    """Σ over samples ||ΔW·x||² = tr(ΔW H ΔWᵀ): the windows (SAME split, explicit pads, stride,
    dilation, NHWC/HWIO order) are those TensorFlow convolves with."""
    _, calib, model, fmt, tensors, hessians = net
    use, hessian = hessians[name]
    delta = np.random.default_rng(3).standard_normal(tensors[name].shape).astype(np.float32) * 1e-2
    feed = {"x": np.load(calib)["x"]}
    layer_out = {"w1": "c1:0", "w2": "c2:0", "w3": "c3:0", "fc1": "m1:0", "fc2": "m2:0"}[name]
    before = fmt.activations(model, feed, [layer_out])[layer_out].astype(np.float64)
    probe = OutputProbe(fmt, model, [feed], margins=False)
    changed = probe.with_tensors({name: tensors[name] + delta})
    after = fmt.activations(changed, feed, [layer_out])[layer_out].astype(np.float64)
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
    assert set(found) == {"dynamic_valid"}  # VALID needs no spatial size
    assert found["dynamic_valid"] == WeightInput("dynamic_valid", "free:0", "conv", (2, 2), layout="hwio")


def test_savedmodels_have_no_weight_inputs_yet(tmp_path):
    from tests.plugins.tensorflow import _models

    model = nnrconv.load(_models.saved_model("mlp", tmp_path / "mlp_savedmodel"))
    assert _api._plugin("tensorflow").weight_inputs(model) == []


@pytest.mark.slow
def test_output_target_with_calibration_compensates_and_holds(net, tmp_path):
    path, calib, model, fmt, *_ = net
    out = tmp_path / "net.nnr"
    result = nnrconv.convert(path, out, options=nnc.CodingOptions(output_snr_db=30.0), calibration=calib)
    assert result.allocation is not None
    decoded = nnrconv.load(out)
    feeds, _ = calibration_feeds(calib, fmt.input_specs(model))
    probe = OutputProbe(fmt, model, feeds, margins=False)
    assert snr_of(probe.compare([fmt.run(decoded, f) for f in probe.feeds])) >= 30.0
    allocator, _ = prepare(nnrconv.load(path), fmt, calibration=calib)
    assert allocator.compensated is not None
    allocation = allocator.compensated.for_output_snr(30.0)
    assert set(allocation.replaced) <= {"w1", "w2", "w3", "fc1", "fc2"} and allocation.replaced
    if "error-compensated layers" in result.allocation:  # compensation won: the decoder returns its values
        for name, values in allocation.replaced.items():
            assert np.array_equal(decoded.tensors[name].numpy(), values), name
