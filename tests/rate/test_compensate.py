# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Error-compensating quantization: correct layer-input correlations, values on the grid coded
level for level, less output error than rounding, and an output target met with fewer bytes."""

from __future__ import annotations

import numpy as np
import pytest

import nnrconv
from nnrconv import _api, nnc
from nnrconv._rate import OutputProbe, calibration_feeds, prepare
from nnrconv._rate._compensate import Compensation, compensate
from nnrconv._rate._hessian import layer_hessians
from nnrconv.nnc._quantization import step_size
from tests.nnc import _nncodec_ref as ref
from tests.rate._checks import compensated_target_holds
from tests.rate._models import convnet, smooth_images

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    root = tmp_path_factory.mktemp("compensate")
    path = convnet(root / "net.onnx")
    calib = root / "calib.npz"
    np.savez(calib, x=smooth_images(16, seed=1))
    model = nnrconv.load(path)
    fmt = _api._plugin("onnx")
    tensors = {n: t.numpy() for n, t in model.tensors.items()}
    feeds, _ = calibration_feeds(calib, fmt.input_specs(model))
    return path, calib, model, fmt, tensors, layer_hessians(fmt, model, feeds, tensors)


def test_every_conv_and_matmul_weight_gets_its_input_correlation(net):
    *_, hessians = net
    assert {n: h.shape for n, (_, h) in hessians.items()} == {
        "c1": (27, 27), "c2": (72, 72), "c3": (144, 144), "fc": (16, 16),
    }  # fmt: skip


def test_layers_with_fewer_calibration_rows_than_inputs_are_not_compensated(net):
    """fc sees one row per sample for 16 inputs: 8 samples leave its H rank-deficient."""
    _, _, model, fmt, tensors, _ = net
    hessians = layer_hessians(fmt, model, [{"x": smooth_images(8, seed=2)}], tensors)
    assert set(hessians) == {"c1", "c2", "c3"}


@pytest.mark.parametrize("name", ["c1", "c2", "c3", "fc"])
def test_hessian_predicts_the_runtime_output_change_exactly(net, name):
    """Σ over samples ||ΔW·x||² = tr(ΔW H ΔWᵀ): the windows (padding, stride, dilation, order)
    are those onnxruntime convolves with."""
    _, calib, model, fmt, tensors, hessians = net
    use, hessian = hessians[name]
    delta = np.random.default_rng(3).standard_normal(tensors[name].shape).astype(np.float32) * 1e-2
    feed = {"x": np.load(calib)["x"]}
    layer_out = {"c1": "h1", "c2": "h2", "c3": "h3", "fc": "logits"}[name]
    before = fmt.activations(model, feed, [layer_out])[layer_out].astype(np.float64)
    probe = OutputProbe(fmt, model, [feed], margins=False)
    changed = probe.with_tensors({name: tensors[name] + delta})
    after = fmt.activations(changed, feed, [layer_out])[layer_out].astype(np.float64)
    matrix = delta.reshape(delta.shape[0], -1) if use.kind == "conv" else delta.T
    predicted = float(np.trace(matrix.astype(np.float64) @ hessian @ matrix.T.astype(np.float64)))
    assert np.sum((after - before) ** 2) == pytest.approx(predicted, rel=1e-3)


@pytest.mark.parametrize("qp", [-40, -28, -20])
def test_compensated_weights_lie_on_the_grid_and_decode_exactly(net, qp):
    *_, tensors, hessians = net
    use, hessian = hessians["c2"]
    values = compensate(tensors["c2"], use, hessian, qp)
    levels = values.astype(np.float64) / step_size(qp)
    assert np.array_equal(levels, np.round(levels))
    rate = nnc.tensor_rate(values, qp, dq=False)
    assert rate.sse == 0.0 and np.array_equal(rate.reconstruction, values)


@pytest.mark.parametrize("name", ["c1", "c2", "c3"])
def test_compensation_leaves_less_output_error_than_rounding(net, name):
    *_, tensors, hessians = net
    use, hessian = hessians[name]
    qp = -24
    weights = tensors[name]
    rounded = np.round(weights / step_size(qp)) * step_size(qp)
    compensated = compensate(weights, use, hessian, qp)

    def output_error(values: np.ndarray) -> float:
        d = (values - weights).reshape(weights.shape[0], -1).astype(np.float64)
        return float(np.trace(d @ hessian @ d.T))

    assert output_error(compensated) < 0.6 * output_error(rounded)


def test_output_target_with_calibration_codes_compensated_layers_and_holds(net, tmp_path):
    path, calib, model, fmt, *_ = net
    out = tmp_path / "c.nnr"
    _, allocation, allocator = compensated_target_holds(path, calib, fmt, model, out)
    decoded = nnrconv.load(out)
    assert set(allocation.replaced) == {"c1", "c2", "c3", "fc"}
    assert allocation.payload_bytes < allocator.for_output_snr(30.0).payload_bytes
    # NNCodec 2.1.3 reads the same units (DQ off) alike (it reads no ONNX topology: no topology here)
    coded = {n: t.numpy() for n, t in decoded.tensors.items() if n in allocation.plan}
    options = nnc.CodingOptions(plan=allocation.plan)
    theirs = ref.decompress(nnc.encode_model(list(coded.items()), b"", 0, options=options))
    for name, values in allocation.replaced.items():
        assert np.array_equal(decoded.tensors[name].numpy(), values), name
        assert np.array_equal(np.asarray(theirs[name], dtype=np.float32).reshape(values.shape), values), name
    again = tmp_path / "d.nnr"
    nnrconv.convert(path, again, options=nnc.CodingOptions(output_snr_db=30.0), calibration=calib)
    assert again.read_bytes() == out.read_bytes()


def test_a_plan_may_compensate_some_units_and_code_the_others_with_dependent_quantization(net, tmp_path):
    """The search's codes: a unit's QP, plus VARIANT_STRIDE when it is compensated. What the
    allocator measures for such a mixed plan is what the decoder returns."""
    from nnrconv._rate._mixed import VARIANT_STRIDE

    path, calib, _, fmt, *_ = net
    allocator, _ = prepare(nnrconv.load(path), fmt, calibration=calib)
    mixed = allocator.compensated
    assert mixed is not None
    codes = {u: -24 + (VARIANT_STRIDE if u.names == ("c2",) else 0) for u in mixed.units}
    allocation = mixed._result(codes, "per-tensor", mixed.size(codes), 0.0, -24, 0, 0.0)
    assert set(allocation.replaced) == {"c2"} and allocation.plan["c2"] == Compensation.choice(-24)
    assert allocation.plan["c3"] == nnc.TensorChoice(qp=-24)  # DQ on, NNCodec's way
    expected = mixed.curves.reconstruction(codes)
    coded = allocator.probe.with_tensors(allocation.replaced)
    tensors = {n: coded.tensors[n].numpy() for n in allocation.plan}
    _, ndus = nnc.encode_parts(tensors, nnc.CodingOptions(plan=allocation.plan))
    plain = mixed.uniform(-24)
    plain_plan = nnc.CodingOptions(plan=mixed._result(plain, "", 0, 0, 0, 0, 0).plan)
    _, plain_ndus = nnc.encode_parts({n: mixed.curves.tensors[n] for n in tensors}, plain_plan)
    headers = [sum(len(u) for u in n.values()) - mixed.size(c) for n, c in ((ndus, codes), (plain_ndus, plain))]
    assert abs(headers[0] - headers[1]) <= 4  # the payloads are the sizes the search used
    decoded = _api.decode(
        nnc.encode_model(list(tensors.items()), b"", 0, options=nnc.CodingOptions(plan=allocation.plan))
    )
    for name, values in expected.items():
        assert np.array_equal(decoded.tensors[name].numpy().reshape(values.shape), values), name


def test_a_runtime_that_cannot_return_layer_inputs_codes_without_compensation(net, tmp_path, monkeypatch):
    from nnrconv.core import UnsupportedError

    path, calib, _, fmt, *_ = net

    def refuse(*args, **kwargs):
        raise UnsupportedError("no intermediate tensors here")

    monkeypatch.setattr(type(fmt), "activations", refuse)
    result = nnrconv.convert(path, tmp_path / "p.nnr", options=nnc.CodingOptions(output_snr_db=30.0), calibration=calib)
    assert result.allocation is not None and "error-compensated" not in result.allocation


def test_compensation_keeps_about_one_model_in_memory_whatever_the_qps_measured(net):
    *_, tensors, hessians = net
    compensation = Compensation(tensors, hessians)
    sizes = [compensation.measure("c3", qp)[0] for qp in range(-40, -10, 3)]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]  # coarser codes smaller
    kept = sum(values.nbytes for _, values in compensation._latest.values())
    assert kept == tensors["c3"].nbytes


class _Layers:
    """A format stand-in: one weight, its use, and the activation it multiplies."""

    def __init__(self, use, activation: np.ndarray) -> None:
        self.use, self.activation = use, activation

    def weight_inputs(self, model):
        return [self.use]

    def activations(self, model, inputs, names):
        return {self.use.activation: self.activation}


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_tensorflow_and_pytorch_layouts_compensate_like_their_onnx_equivalents(kind):
    """HWIO convolutions on NHWC inputs (TensorFlow) and (C_out, d) linear weights (PyTorch,
    NNEF) get the same H and the same compensated values as the OIHW / (d, C_out) forms."""
    from nnrconv.core import WeightInput

    rng = np.random.default_rng(9)
    if kind == "conv":
        weight = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)  # OIHW
        x = smooth_images(2, seed=4)[:, :3].repeat(2, axis=1)[:, :4]  # NCHW, 4 channels
        ours = WeightInput("w", "x", "conv", (2, 1), (1, 0, 1, 2), (1, 2), layout="hwio")
        theirs = WeightInput("w", "x", "conv", (2, 1), (1, 0, 1, 2), (1, 2))
        native, native_x = weight.transpose(2, 3, 1, 0), x.transpose(0, 2, 3, 1)
        back = lambda a: a.transpose(3, 2, 0, 1)  # noqa: E731
    else:
        weight = rng.standard_normal((12, 7)).astype(np.float32)  # (d, C_out): ONNX MatMul
        x = rng.standard_normal((5, 3, 12)).astype(np.float32)
        ours, theirs = WeightInput("w", "x", "linear"), WeightInput("w", "x", "matmul")
        native, native_x = weight.T.copy(), x
        back = lambda a: a.T  # noqa: E731
    feeds = [{"x": np.zeros(1, np.float32)}]
    mine = layer_hessians(_Layers(ours, native_x), None, feeds, {"w": native})["w"][1]
    reference = layer_hessians(_Layers(theirs, x), None, feeds, {"w": weight})["w"][1]
    np.testing.assert_array_equal(mine, reference)
    assert np.any(mine)
    compensated = compensate(native, ours, mine, -20)
    assert compensated.shape == native.shape
    np.testing.assert_array_equal(back(compensated), compensate(weight, theirs, reference, -20))
