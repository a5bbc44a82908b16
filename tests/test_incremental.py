# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Incremental updates end to end: `nnrconv convert finetuned.onnx update.nnr --base base.nnr`
and back, with the restored tensors checked against NNCodec 2.1.3's decoder and numpy."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from nnrconv import _api, nnc  # noqa: E402
from nnrconv.cli import main  # noqa: E402

SHAPES = {"fc1.weight": (64, 40), "fc1.bias": (64,), "fc2.weight": (10, 64), "fc2.bias": (10,)}


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: (rng.standard_normal(shape) * 0.1).astype(np.float32) for name, shape in SHAPES.items()}


def _mlp(path: Path, weights: dict[str, np.ndarray], order: list[str] | None = None) -> Path:
    """x[1, 40] -> Gemm -> Relu -> Gemm -> Reshape (an int64 shape initializer that never changes)."""
    nodes = [
        helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "fc2.weight", "fc2.bias"], ["z"], transB=1),
        helper.make_node("Reshape", ["z", "shape"], ["y"]),
    ]
    inits = {name: numpy_helper.from_array(array, name) for name, array in weights.items()}
    inits["shape"] = numpy_helper.from_array(np.array([10], np.int64), "shape")
    names = order or list(inits)
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 40])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [10])],
        [inits[n] for n in names],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _initializers(path: Path) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def models(tmp_path, capsys):
    """base.onnx, base.nnr, finetuned.onnx (base + small noise on the weights, one bias unchanged)."""
    base_weights = _weights()
    base_onnx = _mlp(tmp_path / "base.onnx", base_weights)
    base_nnr = tmp_path / "base.nnr"
    code, _, err = run(capsys, "convert", base_onnx, base_nnr, "-q")
    assert code == 0, err
    rng = np.random.default_rng(1)
    tuned = {name: w + (rng.standard_normal(w.shape) * 0.001).astype(np.float32) for name, w in base_weights.items()}
    tuned["fc2.bias"] = base_weights["fc2.bias"]
    finetuned = _mlp(tmp_path / "finetuned.onnx", tuned)
    return tmp_path, base_nnr, finetuned, tuned


def test_update_is_small_and_restores_the_finetuned_model(models, capsys):
    folder, base_nnr, finetuned, tuned = models
    update = folder / "update.nnr"
    full = folder / "full.nnr"
    assert run(capsys, "convert", finetuned, update, "--base", base_nnr, "-q")[0] == 0
    assert run(capsys, "convert", finetuned, full, "-q")[0] == 0
    assert update.stat().st_size < 0.5 * full.stat().st_size

    restored = folder / "restored.onnx"
    code, _, err = run(capsys, "convert", update, restored, "--base", base_nnr, "-q")
    assert code == 0, err
    got = _initializers(restored)
    base = nnc.decode_model(base_nnr.read_bytes()).tensors
    direct = nnc.decode_model(full.read_bytes()).tensors
    for name, target in tuned.items():
        if name == "fc2.bias":  # unchanged: no NDU, the base tensor comes back as it is
            np.testing.assert_array_equal(got[name], base[name])
            continue
        # as close to the fine-tuned tensor as a full coding at the same QP (within one DQ step)
        step = float(np.abs(direct[name] - target).max())
        assert np.abs(got[name] - target).max() <= 2 * step + 1e-7
        assert not np.array_equal(got[name], base[name])
    np.testing.assert_array_equal(got["shape"], [10])


def test_update_units_name_their_parents(models, capsys):
    folder, base_nnr, finetuned, _ = models
    update = folder / "update.nnr"
    assert run(capsys, "convert", finetuned, update, "--base", base_nnr, "-q")[0] == 0
    units = [p.unit for p in nnc.read_units(update.read_bytes())]
    mps = next(u for u in units if isinstance(u, nnc.ModelParameterSet))
    assert mps.mps_parent_signalling_enabled_flag
    ndus = {u.header.topology_elem_id: u.header for u in units if isinstance(u, nnc.CompressedDataUnit)}
    assert set(ndus) == {"fc1.weight", "fc1.bias", "fc2.weight"}  # unchanged tensors send nothing
    base_units = {
        u.header.topology_elem_id: u
        for u in (p.unit for p in nnc.read_units(base_nnr.read_bytes()))
        if isinstance(u, nnc.CompressedDataUnit)
    }
    for name, header in ndus.items():
        parent = base_units[name].header.node_id
        assert header.node_id == nnc.NodeId(parent.device_id, parent.parameter_id, parent.put_node_depth + 1)
        assert header.parent_node_id.temporal_context_modeling_flag
        # bound by default: named by the SHA-256 of the base NDU's payload
        assert header.parent_node_id.parent_node_id_type == nnc.ParentNodeIdType.ICNN_NDU_PL_SHA256
        assert header.parent_node_id.parent_node_payload_sha256 == hashlib.sha256(base_units[name].payload).digest()


def _without_topology(data: bytes) -> bytes:
    """The bitstream without its TPL unit: NNCodec reads topology_data as a UTF-8 string and
    fails on a binary ONNX graph; the data units do not depend on it."""
    return b"".join(
        data[p.byte_offset : p.byte_offset + p.size]
        for p in nnc.read_units(data)
        if not isinstance(p.unit, nnc.TopologyUnit)
    )


def _nncodec_restore(base_bytes: bytes, update_bytes: bytes) -> dict[str, np.ndarray]:
    """NNCodec 2.1.3's decoder on the base then the update (approx_param_base and an HdspTool
    carried between them, as its tensor/FL flows do), restored = base + decoded differences."""
    sys.path.insert(0, str(Path(__file__).parent / "nnc"))
    try:
        import _nncodec_ref
    finally:
        sys.path.pop(0)
    nnc_core = _nncodec_ref.import_nnc_core()
    from nncodec.nnc_core.hdsp.hdsp_tool import HdspTool

    state = {"parameters": {}, "put_node_depth": {}, "device_id": 0, "parameter_id": {}}
    tool = HdspTool(True)

    def decode(data: bytes) -> tuple[dict, dict]:
        info = _nncodec_ref.empty_model_info()
        with contextlib.redirect_stdout(io.StringIO()):
            data_ = nnc_core.coder.decode(
                bytearray(data), info, hls_stats={}, oob_dict={}, approx_param_base=state,
                update_base_param=True, tool_if=tool,
            )  # fmt: skip
            levels = {k: v.copy() for k, v in data_["parameters"].items()}
            rec = copy.copy(data_)
            nnc_core.approximator.rec(rec)
        return levels, dict(rec["parameters"])

    base_levels, base_rec = decode(base_bytes)
    tool.add_data_to_hist(base_levels)
    # NNCodec's bookkeeping counts decoded updates from 1; take the depths the base's NDUs carry
    for name in state["put_node_depth"]:
        state["put_node_depth"][name] = 0
    _, diffs = decode(update_bytes)
    return {name: (base_rec[name] + diff).astype(np.float32) for name, diff in diffs.items()}


@pytest.mark.conformance
def test_restored_tensors_equal_nncodec_decoder(models, capsys):
    pytest.importorskip("nncodec")
    folder, base_nnr, finetuned, _ = models
    update = folder / "update.nnr"
    restored = folder / "restored.onnx"
    assert run(capsys, "convert", finetuned, update, "--base", base_nnr, "-q")[0] == 0
    assert run(capsys, "convert", update, restored, "--base", base_nnr, "-q")[0] == 0
    try:
        reference = _nncodec_restore(_without_topology(base_nnr.read_bytes()), _without_topology(update.read_bytes()))
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
        pytest.skip(f"NNCodec not importable: {exc}")
    got = _initializers(restored)
    assert set(reference) == {"fc1.weight", "fc1.bias", "fc2.weight"}
    for name, array in reference.items():
        np.testing.assert_array_equal(got[name], array.reshape(got[name].shape))


def test_api_round_trip_matches_numpy(models):
    """restored = decoded base + dequantized difference levels, computed here with numpy."""
    folder, base_nnr, finetuned, _ = models
    update = folder / "api.nnr"
    _api.convert(finetuned, update, base=base_nnr)
    base = nnc.read_base(base_nnr.read_bytes())
    restored = nnc.decode_model(update.read_bytes(), base=base).tensors
    mps_qp = None
    for parsed in nnc.read_units(update.read_bytes()):
        unit = parsed.unit
        if isinstance(unit, nnc.ModelParameterSet):
            mps_qp = (unit.mps_qp_density, unit.mps_quantization_parameter)
        if not isinstance(unit, nnc.CompressedDataUnit):
            continue
        name = unit.header.topology_elem_id
        dec = nnc.cabac.PayloadDecoder(unit.payload)
        qp = mps_qp[1] + dec.decode_qp_offset(mps_qp[0])
        coding = nnc.cabac.TensorCoding(dq_flag=unit.header.dq_flag, parent_node_id_present_flag=True)
        levels = dec.decode_levels(
            unit.header.tensor_dimensions,
            coding,
            base=base.tensors[name].levels,
            history=base.tensors[name].history,
        )
        step = np.float32(nnc.cabac.step_size(qp, mps_qp[0]))
        expected = base.tensors[name].values + levels.astype(np.float32) * step
        np.testing.assert_array_equal(restored[name], expected.astype(np.float32))


def test_tca_and_hdsp_make_the_update_smaller(models):
    """The same update coded without the context tools is larger (sizes in the report)."""
    _, base_nnr, _, tuned = models
    base = nnc.read_base(base_nnr.read_bytes())
    plain = nnc.BaseModel(
        {n: nnc.BaseTensor(t.values, t.node_id, payload_sha256=t.payload_sha256) for n, t in base.tensors.items()},
        base.source,
    )
    items = list(tuned.items())
    with_tools = nnc.encode_update(items, b"", 0, base)
    without = nnc.encode_update(items, b"", 0, plain)
    assert len(with_tools) <= len(without)


# ---- mismatches: one line, non-zero exit, no output ------------------------------------------


def _fails(capsys, target, *args, message):
    code, out, err = run(capsys, "convert", *args, target)
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith("nnrconv: error: ") and message in err, err
    assert "Traceback" not in err and not Path(target).exists()


def test_decoding_an_update_without_base_fails(models, capsys):
    folder, base_nnr, finetuned, _ = models
    update = folder / "update.nnr"
    assert run(capsys, "convert", finetuned, update, "--base", base_nnr, "-q")[0] == 0
    _fails(capsys, folder / "out.onnx", update, message="--base")


def test_base_with_a_missing_tensor_fails(models, capsys):
    folder, _, finetuned, _ = models
    weights = _weights()
    weights["fc2.weight2"] = weights.pop("fc2.weight")  # the base names a tensor differently
    other = folder / "other.nnr"
    nodes = [
        helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h"], transB=1),
        helper.make_node("Gemm", ["h", "fc2.weight2", "fc2.bias"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 40])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(a, n) for n, a in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(folder / "other.onnx"))
    assert run(capsys, "convert", folder / "other.onnx", other, "-q")[0] == 0
    _fails(capsys, folder / "u.nnr", finetuned, "--base", other, message="'fc2.weight'")


def test_base_with_another_shape_fails(models, capsys):
    folder, _, finetuned, _ = models
    weights = _weights()
    weights["fc1.bias"] = weights["fc1.bias"][:32]
    path = folder / "small.onnx"
    inits = [numpy_helper.from_array(a, n) for n, a in weights.items()]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["fc1.bias"], ["y"])],
        "g",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [32])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert run(capsys, "convert", path, folder / "small.nnr", "-q")[0] == 0
    _fails(capsys, folder / "u.nnr", finetuned, "--base", folder / "small.nnr", message="shape")


def test_base_with_other_node_ids_fails_on_decoding(models, capsys):
    folder, base_nnr, finetuned, _ = models
    update = folder / "update.nnr"
    assert run(capsys, "convert", finetuned, update, "--base", base_nnr, "-q")[0] == 0
    # the same tensors in another order: other parameter ids
    shuffled = _mlp(
        folder / "shuffled.onnx", _weights(), order=["fc2.bias", "fc2.weight", "shape", "fc1.bias", "fc1.weight"]
    )
    assert run(capsys, "convert", shuffled, folder / "shuffled.nnr", "-q")[0] == 0
    _fails(capsys, folder / "out.onnx", update, "--base", folder / "shuffled.nnr", message="parent")


def test_an_update_is_no_base(models, capsys):
    folder, base_nnr, finetuned, _ = models
    update = folder / "update.nnr"
    assert run(capsys, "convert", finetuned, update, "--base", base_nnr, "-q")[0] == 0
    _fails(capsys, folder / "u2.nnr", finetuned, "--base", update, message="must be the full model")


def test_base_with_a_plain_bitstream_fails(models, capsys):
    folder, base_nnr, _, _ = models
    _fails(capsys, folder / "out.onnx", base_nnr, "--base", base_nnr, message="not an incremental update")
