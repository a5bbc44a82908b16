# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Chains of updates (`--base base.nnr --base u1.nnr`) and updates bound to their exact base
(parents named by payload SHA-256), checked against numpy and NNCodec 2.1.3's decoder."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")

from nnrconv import _api, nnc
from nnrconv.core import BaseMismatchError
from tests.test_incremental import SHAPES, _initializers, _mlp, _weights, _without_topology, run


def _tuned(weights: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Fine-tuning noise on every tensor but fc2.bias (so every update NDU has a parent)."""
    rng = np.random.default_rng(seed)
    out = {n: w + (rng.standard_normal(w.shape) * 0.002).astype(np.float32) for n, w in weights.items()}
    out["fc2.bias"] = weights["fc2.bias"]
    return out


@pytest.fixture
def chain(tmp_path, capsys):
    """base.nnr, u1.nnr (against base), u2.nnr (against base + u1), and the fine-tuned weights."""
    w0 = _weights()
    w1 = _tuned(w0, 1)
    w2 = _tuned(w1, 2)
    paths = {}
    for name, weights in (("m0", w0), ("m1", w1), ("m2", w2)):
        paths[name] = _mlp(tmp_path / f"{name}.onnx", weights)
    assert run(capsys, "convert", paths["m0"], tmp_path / "base.nnr", "-q")[0] == 0
    assert run(capsys, "convert", paths["m1"], tmp_path / "u1.nnr", "--base", tmp_path / "base.nnr", "-q")[0] == 0
    code, _, err = run(
        capsys, "convert", paths["m2"], tmp_path / "u2.nnr", "--base", tmp_path / "base.nnr",
        "--base", tmp_path / "u1.nnr", "-q",
    )  # fmt: skip
    assert code == 0, err
    return tmp_path, (w0, w1, w2)


def test_chain_restores_each_step(chain, capsys):
    folder, (_, w1, w2) = chain
    base, u1, u2 = folder / "base.nnr", folder / "u1.nnr", folder / "u2.nnr"
    assert run(capsys, "convert", u1, folder / "r1.onnx", "--base", base, "-q")[0] == 0
    assert run(capsys, "convert", u2, folder / "r2.onnx", "--base", base, "--base", u1, "-q")[0] == 0
    r1, r2 = _initializers(folder / "r1.onnx"), _initializers(folder / "r2.onnx")
    for name in SHAPES:
        # each restored model is as close to its fine-tuned weights as a full coding would be
        for restored, wanted in ((r1, w1), (r2, w2)):
            assert nnc.snr_db(wanted[name], restored[name]) > nnc.DEFAULT_SNR_DB - 1, name
    # the second update refers to what the chain decodes to: its parents are the first update's NDUs
    chain_model = nnc.read_chain([(base.read_bytes(), "base"), (u1.read_bytes(), "u1")])
    expected = nnc.decode_model(u2.read_bytes(), base=chain_model).tensors
    for name in SHAPES:
        np.testing.assert_array_equal(r2[name], expected[name].reshape(r2[name].shape))
    assert chain_model.links == 2


def test_chain_update_is_smaller_than_full_coding(chain, capsys):
    folder, _ = chain
    assert run(capsys, "convert", folder / "m2.onnx", folder / "full2.nnr", "-q")[0] == 0
    assert (folder / "u2.nnr").stat().st_size < 0.6 * (folder / "full2.nnr").stat().st_size


def test_python_api_takes_a_chain(chain):
    folder, _ = chain
    result = _api.convert(folder / "u2.nnr", folder / "r2.onnx", base=[folder / "base.nnr", folder / "u1.nnr"])
    assert result.target.exists()


def test_inspect_shows_parents(chain, capsys):
    folder, _ = chain
    code, out, _ = run(capsys, "inspect", folder / "u2.nnr")
    assert code == 0
    line = next(x for x in out.splitlines() if "fc1.weight" in x)
    assert "node 0/0/2" in line and "parent sha256:" in line
    u1_units = {u.tensor: u for u in nnc.inspect_units((folder / "u1.nnr").read_bytes())}
    assert u1_units["fc1.weight"].node == "0/0/1"
    code, out, _ = run(capsys, "inspect", "--json", folder / "u2.nnr")
    assert '"parent": "sha256:' in out


@pytest.mark.parametrize(
    ("links", "message"),
    [
        (["base.nnr"], "u2.nnr does not follow base.nnr: tensor 'fc"),  # a link missing
        (["base.nnr", "u2.nnr"], "does not follow base.nnr: tensor 'fc"),  # wrong order
        (["u1.nnr", "base.nnr"], "u1.nnr is an incremental update"),  # starts with an update
        (["base.nnr", "base.nnr"], "is a full model, not an update"),
    ],
)
def test_a_chain_that_does_not_fit_fails_with_one_line(chain, capsys, links, message):
    folder, _ = chain
    args = [a for link in links for a in ("--base", folder / link)]
    code, _, err = run(capsys, "convert", folder / "u2.nnr", folder / "out.onnx", *args)
    err = err.replace(f"{folder}/", "")
    assert code == 3
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (folder / "out.onnx").exists()


def test_another_base_with_the_same_names_and_shapes_is_refused(chain, capsys):
    """Bound parents: the update names its parents' payload digests, so a base with other
    values is refused before decoding, naming the first tensor that differs."""
    folder, _ = chain
    other = _mlp(folder / "other.onnx", _weights(seed=5))
    assert run(capsys, "convert", other, folder / "other.nnr", "-q")[0] == 0
    code, _, err = run(capsys, "convert", folder / "u1.nnr", folder / "out.onnx", "--base", folder / "other.nnr")
    err = err.replace(f"{folder}/", "")
    assert code == 3
    first = next(p.unit.header.topology_elem_id for p in nnc.read_units((folder / "u1.nnr").read_bytes())
                 if isinstance(p.unit, nnc.CompressedDataUnit))  # fmt: skip
    assert "u1.nnr does not follow" in err and f"tensor {first!r}" in err and "another model" in err


def test_unbound_updates_fall_back_to_node_ids(chain, capsys):
    folder, _ = chain
    u1 = folder / "u1id.nnr"
    args = ("--base", folder / "base.nnr", "--parent-ref", "id", "-q")
    assert run(capsys, "convert", folder / "m1.onnx", u1, *args)[0] == 0
    ndus = [p.unit for p in nnc.read_units(u1.read_bytes()) if isinstance(p.unit, nnc.CompressedDataUnit)]
    assert all(n.header.parent_node_id.parent_node_id_type == nnc.ParentNodeIdType.ICNN_NDU_ID for n in ndus)
    # same tensors as the bound update: only the way parents are named differs
    a = nnc.decode_model(u1.read_bytes(), base=nnc.read_base((folder / "base.nnr").read_bytes())).tensors
    b = nnc.decode_model(
        (folder / "u1.nnr").read_bytes(), base=nnc.read_base((folder / "base.nnr").read_bytes())
    ).tensors
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def _nncodec_chain(links: list[bytes]) -> dict[str, np.ndarray]:
    """NNCodec 2.1.3's decoder on a base then its updates (approx_param_base and an HdspTool
    carried along, the history growing with each decoded tensor, as its FL flow does)."""
    sys.path.insert(0, str(Path(__file__).parent / "nnc"))
    try:
        import _nncodec_ref
    finally:
        sys.path.pop(0)
    nnc_core = _nncodec_ref.import_nnc_core()
    from nncodec.nnc_core.hdsp.hdsp_tool import HdspTool

    state = {"parameters": {}, "put_node_depth": {}, "device_id": 0, "parameter_id": {}}
    tool = HdspTool(True)
    restored: dict[str, np.ndarray] = {}
    for step, data in enumerate(links):
        info = _nncodec_ref.empty_model_info()
        with contextlib.redirect_stdout(io.StringIO()):
            decoded = nnc_core.coder.decode(
                bytearray(data), info, hls_stats={}, oob_dict={}, approx_param_base=state,
                update_base_param=True, tool_if=tool,
            )  # fmt: skip
            levels = {k: v.copy() for k, v in decoded["parameters"].items()}
            rec = copy.copy(decoded)
            nnc_core.approximator.rec(rec)
        tool.add_data_to_hist(levels)
        if step == 0:
            for name in state["put_node_depth"]:  # the base's NDUs are at depth 0
                state["put_node_depth"][name] = 0
            restored = dict(rec["parameters"])
        else:  # a difference for NDUs with a parent; a tensor sent whole replaces the old one
            with_parent = {
                p.unit.header.topology_elem_id
                for p in nnc.read_units(data)
                if isinstance(p.unit, nnc.CompressedDataUnit) and p.unit.header.parent_node_id is not None
            }
            for name, value in rec["parameters"].items():
                restored[name] = (restored[name] + value).astype(np.float32) if name in with_parent else value
    return restored


@pytest.mark.conformance
@pytest.mark.parametrize("parent_ref", ["sha256", "id"])
def test_nncodec_decodes_a_chain(tmp_path, capsys, parent_ref):
    pytest.importorskip("nncodec")
    w0 = _weights()
    w1 = _tuned(w0, 1)
    w2 = _tuned(w1, 2)
    for name, weights in (("m0", w0), ("m1", w1), ("m2", w2)):
        _mlp(tmp_path / f"{name}.onnx", weights)
    base, u1, u2 = tmp_path / "base.nnr", tmp_path / "u1.nnr", tmp_path / "u2.nnr"
    ref = ("--parent-ref", parent_ref, "-q")
    assert run(capsys, "convert", tmp_path / "m0.onnx", base, "-q")[0] == 0
    assert run(capsys, "convert", tmp_path / "m1.onnx", u1, "--base", base, *ref)[0] == 0
    assert run(capsys, "convert", tmp_path / "m2.onnx", u2, "--base", base, "--base", u1, *ref)[0] == 0
    assert run(capsys, "convert", u2, tmp_path / "r2.onnx", "--base", base, "--base", u1, "-q")[0] == 0
    try:
        reference = _nncodec_chain([_without_topology(p.read_bytes()) for p in (base, u1, u2)])
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
        pytest.skip(f"NNCodec not importable: {exc}")
    got = _initializers(tmp_path / "r2.onnx")
    for name in SHAPES:
        np.testing.assert_array_equal(got[name], reference[name].reshape(got[name].shape))


@pytest.mark.conformance
def test_a_tensor_sent_whole_is_the_next_node_and_nncodec_follows(tmp_path, capsys):
    """u1 is lossless (tensors sent whole, no parent); they still sit one level below the base's,
    so u2's differences name depth 2 and NNCodec's depth bookkeeping agrees."""
    pytest.importorskip("nncodec")
    w0 = _weights()
    w1 = _tuned(w0, 1)
    w2 = _tuned(w1, 2)
    for name, weights in (("m0", w0), ("m1", w1), ("m2", w2)):
        _mlp(tmp_path / f"{name}.onnx", weights)
    base, u1, u2 = tmp_path / "base.nnr", tmp_path / "u1.nnr", tmp_path / "u2.nnr"
    assert run(capsys, "convert", tmp_path / "m0.onnx", base, "-q")[0] == 0
    assert run(capsys, "convert", tmp_path / "m1.onnx", u1, "--base", base, "--lossless", "-q")[0] == 0
    assert run(capsys, "convert", tmp_path / "m2.onnx", u2, "--base", base, "--base", u1, "-q")[0] == 0
    u1_units = [p.unit.header for p in nnc.read_units(u1.read_bytes()) if isinstance(p.unit, nnc.CompressedDataUnit)]
    assert u1_units and all(h.parent_node_id is None and h.node_id.put_node_depth == 1 for h in u1_units)
    u2_units = [p.unit.header for p in nnc.read_units(u2.read_bytes()) if isinstance(p.unit, nnc.CompressedDataUnit)]
    assert all(h.node_id.put_node_depth == 2 for h in u2_units if h.parent_node_id is not None)
    assert run(capsys, "convert", u2, tmp_path / "r2.onnx", "--base", base, "--base", u1, "-q")[0] == 0
    reference = _nncodec_chain([_without_topology(p.read_bytes()) for p in (base, u1, u2)])
    got = _initializers(tmp_path / "r2.onnx")
    for name in SHAPES:
        np.testing.assert_array_equal(got[name], reference[name].reshape(got[name].shape))


def test_a_sha512_parent_is_matched_too(chain):
    """Another encoder may name parents by SHA-512 (parent_node_id_type 2): matched the same way."""
    folder, _ = chain
    base = nnc.read_base((folder / "base.nnr").read_bytes())
    data = nnc.strip_record((folder / "u1.nnr").read_bytes())  # rewritten below: no record to keep
    units = nnc.read_units(data)
    rewritten = []
    ctx = nnc.UnitContext()
    for parsed in units:
        unit = parsed.unit
        if isinstance(unit, nnc.CompressedDataUnit) and unit.header.parent_node_id is not None:
            name = unit.header.topology_elem_id
            parent = dataclasses.replace(
                unit.header.parent_node_id,
                parent_node_id_type=nnc.ParentNodeIdType.ICNN_NDU_PL_SHA512,
                parent_node_payload_sha256=None,
                parent_node_payload_sha512=base.tensors[name].payload_sha512,
            )
            unit = dataclasses.replace(unit, header=dataclasses.replace(unit.header, parent_node_id=parent))
        rewritten.append(nnc.encode_unit(unit, ctx))
        ctx = nnc.advance_context(ctx, unit)
    again = b"".join(rewritten)
    expected = nnc.decode_model(data, base=base).tensors
    got = nnc.decode_model(again, base=base).tensors
    for name in SHAPES:
        np.testing.assert_array_equal(got[name], expected[name])
    other = nnc.BaseModel(
        {n: dataclasses.replace(t, payload_sha512=bytes(64)) for n, t in base.tensors.items()}, "other.nnr"
    )
    with pytest.raises(BaseMismatchError, match="payload SHA-512"):
        nnc.decode_model(again, base=other)
