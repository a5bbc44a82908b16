# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Partial updates: data units ordered by importance (measured output improvement when the model
runs, else difference energy), and a cut update applied with --salvage --base (or --partial)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")

import nnrconv
from nnrconv import nnc
from nnrconv.core import UnsupportedError
from tests.test_incremental import SHAPES, _initializers, _mlp, _weights, run

SCALE = {"fc1.weight": 0.001, "fc1.bias": 0.05, "fc2.weight": 0.02, "fc2.bias": 0.003}


def _tuned(w0: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {n: w + (rng.standard_normal(w.shape) * SCALE[n]).astype(np.float32) for n, w in w0.items()}


@pytest.fixture
def update(tmp_path, capsys):
    """base.nnr and u.nnr, an update whose tensors change by very different amounts, its units
    ordered on calibration inputs calib/*.npz."""
    w0 = _weights()
    _mlp(tmp_path / "base.onnx", w0)
    assert run(capsys, "convert", tmp_path / "base.onnx", tmp_path / "base.nnr", "-q")[0] == 0
    w1 = _tuned(w0)
    _mlp(tmp_path / "tuned.onnx", w1)
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(5)
    for i in range(6):
        np.savez(calib / f"{i}.npz", x=rng.standard_normal((1, 40)).astype(np.float32))
    args = ("--base", tmp_path / "base.nnr", "--calibration", calib, "-q")
    assert run(capsys, "convert", tmp_path / "tuned.onnx", tmp_path / "u.nnr", *args)[0] == 0
    return tmp_path, w0, w1


def _ndu_spans(data: bytes) -> list[tuple[str, int]]:
    return [
        (p.unit.header.topology_elem_id, p.byte_offset + p.size)
        for p in nnc.read_units(data)
        if isinstance(p.unit, nnc.CompressedDataUnit)
    ]


def _sizes(data: bytes) -> dict[str, int]:
    return {
        p.unit.header.topology_elem_id: p.size
        for p in nnc.read_units(data)
        if isinstance(p.unit, nnc.CompressedDataUnit)
    }


def _forward(w: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    h = np.maximum(x.astype(np.float64) @ w["fc1.weight"].T.astype(np.float64) + w["fc1.bias"], 0)
    return h @ w["fc2.weight"].T.astype(np.float64) + w["fc2.bias"]


def test_units_come_largest_measured_output_improvement_per_byte_first(update):
    folder, _, w1 = update
    data = (folder / "u.nnr").read_bytes()
    order = [name for name, _ in _ndu_spans(data)]
    size = _sizes(data)
    base = {
        n: t.values.reshape(SHAPES[n])
        for n, t in nnc.read_base((folder / "base.nnr").read_bytes()).tensors.items()
        if n in SHAPES
    }
    x = np.concatenate([np.load(folder / "calib" / f"{i}.npz")["x"] for i in range(6)])
    target = _forward(w1, x)

    def noise(w: dict[str, np.ndarray]) -> float:
        return float(((_forward(w, x) - target) ** 2).sum() / (target**2).sum())

    gain = {n: noise({**w1, n: base[n]}) / size[n] for n in SHAPES}  # the error it alone leaves
    assert order == sorted(gain, key=gain.get, reverse=True)


def test_a_tensor_the_outputs_cannot_see_goes_last(tmp_path, capsys):
    """fc2.weight moves most (relatively) but only in the columns of dead hidden units: the
    difference energy would send it first, the measured output improvement sends it last."""
    w0 = _weights()
    w0["fc1.bias"][:48] = -100.0  # hidden units 0..47 never fire
    _mlp(tmp_path / "base.onnx", w0)
    assert run(capsys, "convert", tmp_path / "base.onnx", tmp_path / "base.nnr", "--lossless", "-q")[0] == 0
    rng = np.random.default_rng(4)
    w1 = {n: a.copy() for n, a in w0.items()}
    w1["fc2.weight"][:, :48] += rng.standard_normal((10, 48)).astype(np.float32)  # unseen, large
    w1["fc1.weight"][48:] += (rng.standard_normal((16, 40)) * 0.01).astype(np.float32)  # seen, small
    _mlp(tmp_path / "tuned.onnx", w1)
    args = ("--base", tmp_path / "base.nnr", "-q")
    assert run(capsys, "convert", tmp_path / "tuned.onnx", tmp_path / "u.nnr", *args)[0] == 0
    assert [name for name, _ in _ndu_spans((tmp_path / "u.nnr").read_bytes())] == ["fc1.weight", "fc2.weight"]
    base = nnc.read_base((tmp_path / "base.nnr").read_bytes())
    by_energy = nnc.encode_update(w1.items(), b"", int(nnc.TopologyStorageFormat.NNR_TPL_UNREC), base)
    assert [name for name, _ in _ndu_spans(by_energy)] == ["fc2.weight", "fc1.weight"]


def test_without_a_runner_units_come_largest_relative_difference_energy_per_byte_first(update):
    folder, _, w1 = update
    base = nnc.read_base((folder / "base.nnr").read_bytes())
    data = nnc.encode_update(w1.items(), b"", int(nnc.TopologyStorageFormat.NNR_TPL_UNREC), base)
    order = [name for name, _ in _ndu_spans(data)]
    size = _sizes(data)
    gain = {}
    for n in SHAPES:
        old = base.tensors[n].values.astype(np.float64).ravel()
        gain[n] = float(((w1[n].ravel() - old) ** 2).sum() / (old**2).sum()) / size[n]
    assert order == sorted(gain, key=gain.get, reverse=True)
    assert order != list(SHAPES)  # not the model's order


@pytest.mark.parametrize("flag", ["--salvage", "--partial"])
def test_a_cut_update_applies_its_complete_units(update, capsys, flag):
    folder, _, _ = update
    data = (folder / "u.nnr").read_bytes()
    full = folder / "full.onnx"
    assert run(capsys, "convert", folder / "u.nnr", full, "--base", folder / "base.nnr", "-q")[0] == 0
    assert run(capsys, "convert", folder / "base.nnr", folder / "decoded_base.onnx", "-q")[0] == 0
    restored, base = _initializers(full), _initializers(folder / "decoded_base.onnx")
    spans = _ndu_spans(data)
    for count, (_, end) in enumerate(spans[:-1], start=1):
        cut = folder / f"cut{count}.nnr"
        cut.write_bytes(data[: end + 5])  # the next unit arrives only in part
        out = folder / f"cut{count}.onnx"
        code, _, err = run(capsys, "convert", cut, out, "--base", folder / "base.nnr", flag)
        assert code == 0, err
        assert f"{cut}: the stream is cut short at byte {end + 5}: its {count} complete data units are decoded" in err
        got = _initializers(out)
        applied = {name for name, _ in spans[:count]}
        for name in SHAPES:
            np.testing.assert_array_equal(got[name], (restored if name in applied else base)[name], err_msg=name)
    # without --salvage a cut update is a truncated bitstream
    code, _, err = run(capsys, "convert", folder / "cut1.nnr", folder / "x.onnx", "--base", folder / "base.nnr")
    assert code == 4 and "runs past the end" in err


def test_salvage_of_a_whole_update_with_its_base_applies_it_all(update, capsys):
    folder, _, _ = update
    args = ("--base", folder / "base.nnr", "-q")
    assert run(capsys, "convert", folder / "u.nnr", folder / "a.onnx", *args)[0] == 0
    code, _, err = run(capsys, "convert", folder / "u.nnr", folder / "b.onnx", *args, "--salvage")
    assert code == 0 and "cut" not in err
    a, b = _initializers(folder / "a.onnx"), _initializers(folder / "b.onnx")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_a_cut_needs_a_base_and_the_topology(update, capsys):
    folder, _, _ = update
    data = (folder / "u.nnr").read_bytes()
    (folder / "head.nnr").write_bytes(data[:14])
    for flag in ("--salvage", "--partial"):
        code, _, err = run(
            capsys, "convert", folder / "head.nnr", folder / "x.onnx", "--base", folder / "base.nnr", flag
        )
        assert code == 4 and "before its topology or first data unit" in err
    code, _, err = run(capsys, "convert", folder / "u.nnr", folder / "x.onnx", "--partial")
    assert code == 5 and "give --base" in err
    assert not (folder / "x.onnx").exists()


def test_calibration_needs_a_runner_to_order_an_update(update):
    folder, _, _ = update
    model = nnrconv.load(folder / "tuned.onnx")
    from nnrconv._update_order import measured_importance

    base = nnc.read_base((folder / "base.nnr").read_bytes())
    assert measured_importance(model, base, None) is None  # no runner: difference energy
    with pytest.raises(UnsupportedError, match="no runner"):
        measured_importance(model, base, None, calibration=folder / "calib")
