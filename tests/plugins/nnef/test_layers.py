# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Error compensation on NNEF: which weights meet which activation, H as nnef-tools' interpreter
convolves (explicit, asymmetric and 'same' padding, stride 2, dilation 2), and an output target
met end to end with compensated layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nnrconv
from nnrconv import _api
from nnrconv._rate import OutputProbe, calibration_feeds
from nnrconv._rate._hessian import layer_hessians
from nnrconv.core import WeightInput
from tests.plugins.nnef._models import write_dat
from tests.rate._checks import compensated_target_holds, every_layer_compensated  # noqa: F401 (autouse)
from tests.rate._models import smooth_images

pytest.importorskip("nnef_tools")
pytest.importorskip("torch")


# c1: explicit symmetric padding; c2: stride 2, asymmetric padding; c3: dilation 2, 'same'
# padding (stride 1); c4: stride 2, 'same' padding that depends on the input size (8 -> (0, 1));
# fc: linear; m1: matmul (d, C_out); m2: matmul with transposeB (C_out, d).
NET_GRAPH = """version 1.0;

graph net( x ) -> ( y )
{
    x = external<scalar>(shape = [1, 3, 16, 16]);
    c1 = variable<scalar>(shape = [6, 3, 3, 3], label = 'c1');
    b1 = variable<scalar>(shape = [1, 6], label = 'b1');
    c2 = variable<scalar>(shape = [8, 6, 3, 3], label = 'blk/c2');
    c3 = variable<scalar>(shape = [8, 8, 3, 3], label = 'blk/c3');
    c4 = variable<scalar>(shape = [8, 8, 3, 3], label = 'c4');
    fc = variable<scalar>(shape = [10, 128], label = 'fc');
    fb = variable<scalar>(shape = [1, 10], label = 'fb');
    m1 = variable<scalar>(shape = [10, 6], label = 'm1');
    m2 = variable<scalar>(shape = [5, 6], label = 'm2');
    h1 = conv(x, c1, b1, padding = [(1, 1), (1, 1)]);
    a1 = relu(h1);
    h2 = conv(a1, c2, 0.0, padding = [(0, 1), (1, 0)], stride = [2, 2]);
    a2 = relu(h2);
    h3 = conv(a2, c3, 0.0, padding = [], dilation = [2, 2]);
    a3 = relu(h3);
    h4 = conv(a3, c4, 0.0, padding = [], stride = [2, 2]);
    flat = reshape(relu(h4), shape = [0, -1]);
    f = linear(flat, fc, fb);
    r = relu(f);
    g = matmul(r, m1);
    y = matmul(g, m2, transposeB = true);
}
"""
LAYER_OUTPUTS = {"c1": "h1", "blk/c2": "h2", "blk/c3": "h3", "c4": "h4", "fc": "f", "m1": "g", "m2": "y"}
SHAPES = {
    "c1": (6, 3, 3, 3), "b1": (1, 6), "blk/c2": (8, 6, 3, 3), "blk/c3": (8, 8, 3, 3), "c4": (8, 8, 3, 3),
    "fc": (10, 128), "fb": (1, 10), "m1": (10, 6), "m2": (5, 6),
}  # fmt: skip

# Left out: depthwise (groups 0) and grouped convolutions, a reflected border, 1-D, a weight
# reached through a transpose, transposeA, and a weight the interpreter would dequantize.
LEFT_OUT_GRAPH = """version 1.0;

graph left_out( x, v ) -> ( y1, y2, y3, y4, y5, y6, y7 )
{
    x = external<scalar>(shape = [1, 4, 6, 6]);
    v = external<scalar>(shape = [1, 4, 6]);
    dw = variable<scalar>(shape = [4, 1, 3, 3], label = 'dw');
    gw = variable<scalar>(shape = [4, 2, 3, 3], label = 'gw');
    rw = variable<scalar>(shape = [4, 4, 3, 3], label = 'rw');
    w1d = variable<scalar>(shape = [4, 4, 3], label = 'w1d');
    tw = variable<scalar>(shape = [4, 6], label = 'tw');
    aw = variable<scalar>(shape = [4, 4], label = 'aw');
    qw = variable<scalar>(shape = [6, 6], label = 'qw');
    y1 = conv(x, dw, 0.0, groups = 0);
    y2 = conv(x, gw, 0.0, groups = 2);
    y3 = conv(x, rw, 0.0, padding = [(1, 1), (1, 1)], border = 'reflect');
    y4 = conv(v, w1d, 0.0);
    y5 = linear(v, transpose(tw, axes = [1, 0]), 0.0);
    y6 = matmul(v, aw, transposeA = true);
    y7 = linear(v, qw, 0.0);
}
"""
LEFT_OUT_QUANT = (
    '"qw": zero_point_linear_quantize(zero_point = 0, scale = 0.5, bits = 8, signed = true, symmetric = true);\n'
)

STRIDED_SAME_GRAPH = """version 1.0;

graph strided( x ) -> ( y )
{
    x = external<scalar>(shape = [1, 2, 7, 7]);
    w = variable<scalar>(shape = [3, 2, 3, 3], label = 'w');
    y = conv(x, w, 0.0, padding = [], stride = [2, 2]);
}
"""


def _folder(path: Path, graph: str, shapes: dict[str, tuple[int, ...]], quant: str | None = None) -> Path:
    rng = np.random.default_rng(11)
    path.mkdir(parents=True)
    (path / "graph.nnef").write_text(graph)
    if quant is not None:
        (path / "graph.quant").write_text(quant)
    for label, shape in shapes.items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 and shape[0] > 1 else 1
        write_dat(path / f"{label}.dat", (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnef_layers")
    path = _folder(root / "net.nnef", NET_GRAPH, SHAPES)
    calib = root / "calib.npz"
    np.savez(calib, x=smooth_images(12, seed=1))
    model = nnrconv.load(path)
    fmt = _api._plugin("nnef")
    tensors = {n: t.numpy() for n, t in model.tensors.items()}
    feeds, _ = calibration_feeds(calib, fmt.input_specs(model))
    return path, calib, model, fmt, tensors, layer_hessians(fmt, model, feeds, tensors)


def test_weight_inputs_resolve_padding_stride_dilation_and_matmul_sides(net):
    _, _, model, fmt, *_ = net
    assert fmt.weight_inputs(model) == [
        WeightInput("c1", "x", "conv", (1, 1), (1, 1, 1, 1), (1, 1)),
        WeightInput("blk/c2", "a1", "conv", (2, 2), (0, 1, 1, 0), (1, 1)),
        WeightInput("blk/c3", "a2", "conv", (1, 1), (2, 2, 2, 2), (2, 2)),
        WeightInput("c4", "a3", "conv", (2, 2), (0, 0, 1, 1), (1, 1)),
        WeightInput("fc", "flat", "linear"),
        WeightInput("m1", "r", "matmul"),
        WeightInput("m2", "g", "linear"),
    ]


def test_every_conv_linear_and_matmul_weight_gets_its_input_correlation(net):
    *_, hessians = net
    assert {n: h.shape for n, (_, h) in hessians.items()} == {
        "c1": (27, 27), "blk/c2": (54, 54), "blk/c3": (72, 72), "c4": (72, 72),
        "fc": (128, 128), "m1": (10, 10), "m2": (6, 6),
    }  # fmt: skip


@pytest.mark.parametrize("name", list(LAYER_OUTPUTS))
def test_hessian_predicts_the_interpreter_output_change_exactly(net, name):
    """Σ over samples ||ΔW·x||² = tr(ΔW H ΔWᵀ): the windows (padding, stride, dilation, order)
    are those nnef-tools' interpreter convolves with, and the matmul sides are right."""
    _, calib, model, fmt, tensors, hessians = net
    use, hessian = hessians[name]
    delta = np.random.default_rng(3).standard_normal(tensors[name].shape).astype(np.float32) * 1e-2
    feed = {"x": np.load(calib)["x"]}
    out = LAYER_OUTPUTS[name]
    before = fmt.activations(model, feed, [out])[out].astype(np.float64)
    changed = OutputProbe(fmt, model, [feed], margins=False).with_tensors({name: tensors[name] + delta})
    after = fmt.activations(changed, feed, [out])[out].astype(np.float64)
    matrix = delta.T if use.kind == "matmul" else delta.reshape(delta.shape[0], -1)
    predicted = float(np.trace(matrix.astype(np.float64) @ hessian @ matrix.T.astype(np.float64)))
    assert predicted > 0
    assert np.sum((after - before) ** 2) == pytest.approx(predicted, rel=1e-3)


def test_activations_are_the_interpreters_intermediate_tensors(net):
    _, calib, model, fmt, *_ = net
    feed = {"x": np.load(calib)["x"][:2]}
    values = fmt.activations(model, feed, ["x", "a2", "y"])
    assert sorted(values) == ["a2", "x", "y"]
    assert values["a2"].shape == (2, 8, 8, 8) and np.all(values["a2"] >= 0)
    np.testing.assert_array_equal(values["x"], feed["x"])
    np.testing.assert_array_equal(values["y"], fmt.run(model, feed)["y"])


def test_weights_the_interpreter_does_not_apply_plainly_are_left_out(tmp_path):
    shapes = {"dw": (4, 1, 3, 3), "gw": (4, 2, 3, 3), "rw": (4, 4, 3, 3), "w1d": (4, 4, 3), "tw": (4, 6)}
    shapes |= {"aw": (4, 4), "qw": (6, 6)}
    model = nnrconv.load(_folder(tmp_path / "m.nnef", LEFT_OUT_GRAPH, shapes, LEFT_OUT_QUANT))
    assert _api._plugin("nnef").weight_inputs(model) == []


def test_strided_same_padding_input_of_another_size_is_not_returned(tmp_path):
    """Padding computed for 7x7 would be wrong for 8x8: the run's input is dropped, not misused."""
    model = nnrconv.load(_folder(tmp_path / "s.nnef", STRIDED_SAME_GRAPH, {"w": (3, 2, 3, 3)}))
    fmt = _api._plugin("nnef")
    assert fmt.weight_inputs(model) == [WeightInput("w", "x", "conv", (2, 2), (1, 1, 1, 1), (1, 1))]
    declared = np.ones((1, 2, 7, 7), np.float32)
    assert list(fmt.activations(model, {"x": declared}, ["x"])) == ["x"]
    assert fmt.activations(model, {"x": np.ones((1, 2, 8, 8), np.float32)}, ["x"]) == {}


def test_output_target_with_calibration_codes_compensated_layers_and_holds(net, tmp_path):
    path, calib, model, fmt, *_ = net
    summary, allocation, _ = compensated_target_holds(path, calib, fmt, model, tmp_path / "c.nnr")
    assert "7 error-compensated layers" in summary
    assert set(allocation.replaced) == set(LAYER_OUTPUTS)
