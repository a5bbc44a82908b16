# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Rate targets: met on the decoded model, never worse than one global QP, deterministic."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

import nnrconv
from nnrconv import _api, nnc
from nnrconv._rate import OutputProbe, calibration_feeds, prepare, snr_of
from nnrconv.core import UnsupportedError
from tests.rate._models import calibration, classifier, gated

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("rate")
    return classifier(root / "clf.onnx"), calibration(root / "calib.npz")


def _decoded_snr(model_path, nnr_path, calib) -> float:
    """Output SNR of the decoded bitstream against the original, on the calibration inputs."""
    model = nnrconv.load(model_path)
    fmt = _api._plugin("onnx")
    feeds, _ = calibration_feeds(calib, fmt.input_specs(model))
    probe = OutputProbe(fmt, model, feeds, margins=False)
    decoded = nnrconv.load(nnr_path)
    return snr_of(probe.compare([fmt.run(decoded, f) for f in probe.feeds]))


def test_output_snr_target_holds_on_the_decoded_model_with_fewer_bytes_than_one_global_qp(files, tmp_path):
    model, calib = files
    out = tmp_path / "m.nnr"
    result = nnrconv.convert(model, out, options=nnc.CodingOptions(output_snr_db=30.0), calibration=calib)
    assert result.allocation is not None and result.allocation.startswith("per-tensor allocation")
    assert _decoded_snr(model, out, calib) >= 30.0
    # the global-QP candidate the allocator measured: coarsest single QP meeting 30 dB
    allocator, _ = prepare(nnrconv.load(model), _api._plugin("onnx"), calibration=calib)
    q, snr = allocator.global_for_snr(30.0)
    global_out = tmp_path / "g.nnr"
    nnrconv.convert(model, global_out, options=nnc.CodingOptions(qp=q))
    assert snr >= 30.0 and out.stat().st_size < 0.9 * global_out.stat().st_size


def test_same_model_options_and_inputs_give_the_same_bytes(files, tmp_path):
    model, _ = files
    options = nnc.CodingOptions(output_snr_db=25.0)
    shapes = {"x": (4, 32)}
    nnrconv.convert(model, tmp_path / "a.nnr", options=options, input_shapes=shapes)
    nnrconv.convert(model, tmp_path / "b.nnr", options=options, input_shapes=shapes)
    assert (tmp_path / "a.nnr").read_bytes() == (tmp_path / "b.nnr").read_bytes()


def test_bits_per_param_is_met_within_two_percent(files, tmp_path):
    model, calib = files
    out = tmp_path / "m.nnr"
    result = nnrconv.convert(model, out, options=nnc.CodingOptions(bits_per_param=4.0), calibration=calib)
    loaded = nnrconv.load(model)
    lossy = {t.name for t in loaded if t.size >= 16}
    plan, coded = _plan_of(loaded, calib)  # the model coded: error-compensated tensors included
    _, ndus = nnc.encode_parts(
        {n: coded.tensors[n].numpy() for n in lossy},
        nnc.CodingOptions(plan={n: c for n, c in plan.items() if n in lossy}),
    )
    bits = 8 * sum(len(u) for u in ndus.values()) / sum(loaded.tensors[n].size for n in lossy)
    assert abs(bits - 4.0) <= 0.08, bits
    assert "per-tensor allocation" in result.allocation or "one global QP" in result.allocation


def _plan_of(model, calib):
    from nnrconv._rate import resolve

    resolved = resolve(
        model,
        _api._plugin("onnx"),
        nnc.CodingOptions(bits_per_param=4.0),
        measure_size=lambda o: len(_api.encode(model, options=o)),
        calibration=calib,
    )
    return resolved.options.plan, resolved.model


def test_size_budget_bounds_the_whole_file(files, tmp_path):
    model, calib = files
    out = tmp_path / "m.nnr"
    nnrconv.convert(model, out, options=nnc.CodingOptions(size_bytes=9000), calibration=calib)
    assert 8500 <= out.stat().st_size <= 9000


def test_unreachable_targets_name_the_closest_reachable_value(files, tmp_path):
    model, calib = files
    with pytest.raises(UnsupportedError, match=r"out of reach: the smallest coding needs [\d.]+ bits per parameter"):
        nnrconv.convert(model, tmp_path / "a.nnr", options=nnc.CodingOptions(bits_per_param=0.01), calibration=calib)
    with pytest.raises(UnsupportedError, match=r"out of reach: the finest QP gives [\d.]+ dB"):
        nnrconv.convert(model, tmp_path / "b.nnr", options=nnc.CodingOptions(output_snr_db=190.0), calibration=calib)
    assert not (tmp_path / "a.nnr").exists() and not (tmp_path / "b.nnr").exists()


def test_a_unit_silent_at_the_probe_is_probed_again_where_the_plan_puts_it(tmp_path):
    """A saturated gate's weights move no output at the global QP (sensitivity 0); planned on
    that alone they go to the coarsest QP and the output SNR falls far below the prediction."""
    model = gated(tmp_path / "gated.onnx")
    allocator, _ = prepare(nnrconv.load(model), _api._plugin("onnx"), calibration=calibration(tmp_path / "c.npz"))
    q, _ = allocator.global_for_snr(30.0)
    allocator.probe_sensitivities(q)
    gate = next(i for i, u in enumerate(allocator.units) if u.names == ("G",))
    assert allocator.sensitivity(gate, q).sum() == 0.0  # silent where probed
    qps = allocator.plan_for_noise(1e-4)  # predicted 40 dB
    assert qps[allocator.units[gate]] < q + 20  # not sent to the coarsest QP (q + 24)
    assert snr_of(allocator.measure(qps)) >= 39.0
    coarse = max(allocator._probes[gate])  # probed again where the first plan put it: not silent
    assert coarse > q and allocator.sensitivity(gate, coarse).sum() > 0.0


def test_an_error_no_qp_removes_does_not_drown_its_units_other_tensors():
    """A batch-norm variance of 1e8 keeps a float32 rounding error at every QP (PP-OCR det); in a
    unit with other tensors, the allocator must see their error fall with the QP, not the floor."""
    from nnrconv._rate import Allocator, RateCurves
    from nnrconv._rate._curves import Unit

    rng = np.random.default_rng(3)
    tensors = {
        "var": rng.uniform(1e7, 1e8, 24).astype(np.float32),
        "w": rng.standard_normal((64, 64)).astype(np.float32),
    }
    unit = Unit(("var", "w"), 24 + 64 * 64)
    allocator = Allocator([unit], RateCurves(tensors), None)
    allocator.probe_sensitivities(-30)
    raw = [allocator.curves.unit(unit, q)[1] for q in (-50, -30)]
    assert raw[0] > 0.5 * raw[1]  # the floor dominates the raw error
    assert allocator._error(unit, -50) < 0.01 * allocator._error(unit, -30)  # 20 QP: ~1/1000


def test_weights_without_a_runner_are_allocated_in_the_weight_domain(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "big": (rng.standard_normal((256, 256)) * 0.05).astype(np.float32),
        "small": (rng.laplace(size=(64, 64)) * 1.0).astype(np.float32),
        "bias": rng.standard_normal(64).astype(np.float32),
    }
    src = _safetensors(tmp_path / "w.safetensors", tensors)
    result = nnrconv.convert(src, tmp_path / "w.nnr", options=nnc.CodingOptions(bits_per_param=3.0))
    assert "weight SNR" in result.allocation and "no runner" in result.allocation
    decoded = nnrconv.load(tmp_path / "w.nnr")
    ours = sum(float(np.sum((decoded.tensors[n].numpy() - a) ** 2)) for n, a in tensors.items())
    # one global QP at no more bytes: the allocation's squared error is no larger
    allocator, _ = prepare(nnrconv.load(src), None)
    budget = allocator.size({u: q for u, q in zip(allocator.units, [0] * len(allocator.units), strict=True)})
    assert budget > 0
    for q in range(-40, -10):
        qps = allocator.uniform(q)
        if allocator.size(qps) <= 3.0 * sum(a.size for a in tensors.values()) / 8 - 60:
            theirs = sum(allocator.curves.unit(u, q)[1] for u in allocator.units)
            assert ours <= theirs * 1.001
            break
    else:
        pytest.fail("no global QP fits the budget")


def test_output_target_without_a_runner_is_refused(tmp_path):
    src = _safetensors(
        tmp_path / "w.safetensors", {"w": np.ones((32, 32), np.float32) * np.arange(32, dtype=np.float32)}
    )
    with pytest.raises(UnsupportedError, match="no runner"):
        nnrconv.convert(src, tmp_path / "w.nnr", options=nnc.CodingOptions(output_snr_db=30.0))


def _safetensors(path, tensors):
    """A weights-only file (safetensors layout: u64 header length, JSON header, raw data)."""
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    return path
