# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Error compensation on PyTorch programs and TorchScript: which weights multiply which activation
(convolutions with padding, stride, dilation, 'valid' and 'same'; linear; matmul), H predicting
torch's own layer-output change exactly, and an output target met with compensated layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import nnrconv
from nnrconv import _api
from nnrconv._rate import OutputProbe, calibration_feeds
from nnrconv._rate._hessian import layer_hessians
from nnrconv.core import UnsupportedError
from tests.plugins.pytorch._models import save
from tests.rate._checks import compensated_target_holds
from tests.rate._models import smooth_images


class Layers(nn.Module):
    """Every geometry the plugin covers, a weight transposed on its way to a matmul (a linear
    layer), plus what it must leave out: a grouped convolution, a weight scaled on the way; and a
    weight used twice (listed for its first use)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, stride=2, padding=(1, 2))
        self.c3 = nn.Conv2d(8, 6, 3, dilation=2, padding=2)
        self.c4 = nn.Conv2d(6, 6, 2, padding="same")  # ATen pads the odd pixel bottom and right
        self.c5 = nn.Conv2d(6, 6, 3, padding="valid")
        self.grouped = nn.Conv2d(6, 6, 1, groups=2)
        self.fc = nn.Linear(6, 5)
        self.w = nn.Parameter(torch.randn(5, 4) / 2)
        self.transposed = nn.Parameter(torch.randn(4, 5) / 2)
        self.scaled = nn.Parameter(torch.randn(5, 4) / 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.c1(x))
        h = torch.relu(self.c2(h))
        h = torch.relu(self.c3(h))
        h = self.grouped(torch.relu(self.c5(torch.relu(self.c4(h)))))
        f = torch.tanh(self.fc(h.mean((2, 3))))
        return f @ self.w + f @ self.transposed.t() + f @ (self.scaled * 2) + self.fc(h.amax((2, 3)))[:, :4]


EXPECTED = {  # weight -> (input dim of H, stride, pads, dilation)
    "c1.weight": (27, (1, 1), (1, 1, 1, 1), (1, 1)),
    "c2.weight": (72, (2, 2), (1, 2, 1, 2), (1, 1)),
    "c3.weight": (72, (1, 1), (2, 2, 2, 2), (2, 2)),
    "c4.weight": (24, (1, 1), (0, 0, 1, 1), (1, 1)),
    "c5.weight": (54, (1, 1), (0, 0, 0, 0), (1, 1)),
    "fc.weight": (6, (1, 1), (0, 0, 0, 0), (1, 1)),
    "w": (5, (1, 1), (0, 0, 0, 0), (1, 1)),
    "transposed": (5, (1, 1), (0, 0, 0, 0), (1, 1)),
}
KINDS = {"fc.weight": "linear", "w": "matmul", "transposed": "linear"}
CONTAINERS = ("pt2", "decomposed", "traced", "scripted")  # decomposed: ATen's core IR (addmm, explicit 'same' pad)


def _write(container: str, folder) -> tuple:
    torch.manual_seed(5)
    module, example = Layers().eval(), torch.from_numpy(smooth_images(2, seed=0))
    if container in ("pt2", "decomposed"):
        path = folder / f"layers.{container}.pt2"
        batch = {"x": {0: torch.export.Dim("batch", min=1)}}  # the rate layer runs one sample at a time
        program = torch.export.export(module, (example,), dynamic_shapes=batch)
        torch.export.save(program.run_decompositions() if container == "decomposed" else program, path)
    else:
        path = folder / f"layers.{container}.pt"
        scripted = torch.jit.trace(module, (example,)) if container == "traced" else torch.jit.script(module)
        torch.jit.save(scripted, path)
    return path, module


@pytest.fixture(scope="module", params=CONTAINERS)
def net(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"layers_{request.param}")
    path, module = _write(request.param, root)
    model = nnrconv.load(path)
    fmt = _api._plugin("pytorch")
    name = fmt.input_specs(model)[0].name
    calib = root / "calib.npz"
    np.savez(calib, **{name: smooth_images(16, seed=1)})
    tensors = {n: t.numpy() for n, t in model.tensors.items()}
    feeds, _ = calibration_feeds(calib, fmt.input_specs(model))
    return path, calib, model, fmt, tensors, module, layer_hessians(fmt, model, feeds, tensors)


SCRIPT_LAYERS = ("aten::conv2d", "aten::_convolution", "aten::_convolution_mode", "aten::linear", "aten::matmul")


def _layer_output(model, weight: str) -> str:
    """The graph's name for the output of the layer `weight` is first used in."""
    native = model.native
    if native.kind == "program":
        keys = {v: k for k, v in native.module.graph_signature.inputs_to_parameters.items()}
        node = next(n for n in native.module.graph.nodes if n.name == keys[weight])
        node = next(iter(node.users))
        transpose = str(node.target) in ("aten.t.default", "aten.permute.default")
        return next(iter(node.users)).name if transpose else node.name
    graph = native.module.inlined_graph
    for node in graph.nodes():
        inputs = list(node.inputs())
        if node.kind() in SCRIPT_LAYERS:
            path, value = [], inputs[1]
            value = next(iter(value.node().inputs())) if value.node().kind() == "aten::t" else value
            while value.node().kind() == "prim::GetAttr":
                path.append(value.node().s("name"))
                value = next(iter(value.node().inputs()))
            if ".".join(reversed(path)) == weight:
                return node.output().debugName()
    raise AssertionError(weight)


def test_every_covered_weight_gets_its_input_correlation_and_geometry(net):
    path, *_, model, fmt, _tensors, _module, hessians = net
    assert {n: h.shape for n, (_, h) in hessians.items()} == {n: (d, d) for n, (d, *_) in EXPECTED.items()}
    for name, (_, strides, pads, dilations) in EXPECTED.items():
        use = hessians[name][0]
        if name == "c4.weight" and "decomposed" in path.name:
            pads = (0, 0, 0, 0)  # the decomposition pads the input with an explicit constant_pad_nd
        assert use.kind == KINDS.get(name, "conv"), name
        if use.kind == "conv":
            assert (use.strides, use.pads, use.dilations, use.layout) == (strides, pads, dilations, "oihw"), name
    uses = fmt.weight_inputs(model)
    assert [u.weight for u in uses].count("fc.weight") == 1  # used twice, listed once
    assert not {"grouped.weight", "scaled"} & {u.weight for u in uses}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_hessian_predicts_torchs_own_layer_output_change_exactly(net, name):
    """Σ over samples ||ΔW·x||² = tr(ΔW H ΔWᵀ): the windows (padding, stride, dilation, 'same',
    order) and the matrix sides are those torch computes with."""
    _, calib, model, fmt, tensors, _module, hessians = net
    use, hessian = hessians[name]
    delta = np.random.default_rng(3).standard_normal(tensors[name].shape).astype(np.float32) * 1e-2
    feed = dict(np.load(calib))
    layer_out = _layer_output(model, name)
    before = fmt.activations(model, feed, [layer_out])[layer_out].astype(np.float64)
    probe = OutputProbe(fmt, model, [feed], margins=False)
    changed = probe.with_tensors({name: tensors[name] + delta})
    after = fmt.activations(changed, feed, [layer_out])[layer_out].astype(np.float64)
    again = fmt.activations(model, feed, [layer_out])[layer_out].astype(np.float64)
    np.testing.assert_array_equal(again, before)  # the model's own values are copied back in
    matrix = delta.reshape(delta.shape[0], -1) if use.kind in ("conv", "linear") else delta.T
    predicted = float(np.trace(matrix.astype(np.float64) @ hessian @ matrix.T.astype(np.float64)))
    assert predicted > 0
    assert np.sum((after - before) ** 2) == pytest.approx(predicted, rel=1e-3)


def test_activations_are_those_of_the_eager_module(net):
    _, calib, model, fmt, _tensors, module, _ = net
    name = fmt.input_specs(model)[0].name
    x = np.load(calib)[name][:3]
    uses = {u.weight: u.activation for u in fmt.weight_inputs(model)}
    got = fmt.activations(model, {name: x}, [uses["c1.weight"], uses["c2.weight"]])
    np.testing.assert_array_equal(got[uses["c1.weight"]], x)  # the model's input itself
    with torch.no_grad():
        expected = torch.relu(module.c1(torch.from_numpy(x))).numpy()
    np.testing.assert_allclose(got[uses["c2.weight"]], expected, rtol=1e-5, atol=1e-6)


def test_unknown_activation_names_and_missing_inputs_are_refused(net):
    _, calib, model, fmt, *_ = net
    feed = dict(np.load(calib))
    with pytest.raises(UnsupportedError, match="no tensor named 'nope'"):
        fmt.activations(model, feed, ["nope"])
    with pytest.raises(UnsupportedError, match="missing"):
        fmt.activations(model, {}, [fmt.weight_inputs(model)[0].activation])


def test_a_state_dict_has_no_layers(tmp_path):
    path, *_ = save("cnn", "state_dict", tmp_path)
    assert _api._plugin("pytorch").weight_inputs(nnrconv.load(path)) == []


def test_the_plugins_own_models_list_their_convolutions_and_linear_layers(tmp_path):
    path, *_ = save("cnn", "script", tmp_path)
    uses = _api._plugin("pytorch").weight_inputs(nnrconv.load(path))
    assert {u.weight: u.kind for u in uses} == {"conv1.weight": "conv", "conv2.weight": "conv", "fc.weight": "linear"}
    assert [u.pads for u in uses if u.kind == "conv"] == [(1, 1, 1, 1), (0, 0, 0, 0)]


def test_a_program_exported_for_a_fixed_batch_of_two_lists_no_layer(tmp_path):
    """The rate layer runs one sample at a time, which its shape guards refuse: its weights are
    coded as before instead of the conversion failing."""
    path, *_ = save("cnn", "pt2", tmp_path)
    model = nnrconv.load(path)
    assert model.native.module.example_inputs[0][0].shape[0] == 2
    assert _api._plugin("pytorch").weight_inputs(model) == []


def test_output_target_with_calibration_codes_compensated_layers_and_holds(net, tmp_path):
    path, calib, model, fmt, *_ = net
    summary, allocation, allocator = compensated_target_holds(path, calib, fmt, model, tmp_path / "c.nnr")
    assert "8 error-compensated layers" in summary
    assert set(allocation.replaced) == set(EXPECTED)
    assert allocation.payload_bytes < allocator.for_output_snr(30.0).payload_bytes


@pytest.mark.parametrize("container", ["pt2", "script"])
def test_a_probe_with_other_tensors_leaves_the_loaded_models_own_values_alone(tmp_path, container):
    """The module holds the storage the loaded model's arrays view: a probe's values are swapped
    in as new storage, so the model (and what is coded from it) keeps its own."""
    path, _, example = save("cnn", container, tmp_path)
    model, fmt = nnrconv.load(path), _api._plugin("pytorch")
    feed = {fmt.input_specs(model)[0].name: example.numpy()}
    original = {n: t.numpy().copy() for n, t in model.tensors.items()}
    before = fmt.run(model, feed)
    probe = OutputProbe(fmt, model, [feed], margins=False)
    changed = probe.with_tensors({"conv1.weight": original["conv1.weight"] + 1})
    assert not np.array_equal(next(iter(fmt.run(changed, feed).values())), next(iter(before.values())))
    for name, values in original.items():
        assert np.array_equal(model.tensors[name].numpy(), values), name
    assert all(np.array_equal(fmt.run(model, feed)[k], v) for k, v in before.items())
