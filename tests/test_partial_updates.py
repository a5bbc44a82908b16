# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Partial updates: data units ordered by importance, and a cut update applied with --partial."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")

from nnrconv import nnc
from tests.test_incremental import SHAPES, _initializers, _mlp, _weights, run


@pytest.fixture
def update(tmp_path, capsys):
    """base.nnr and u.nnr, an update whose tensors change by very different amounts."""
    w0 = _weights()
    _mlp(tmp_path / "base.onnx", w0)
    assert run(capsys, "convert", tmp_path / "base.onnx", tmp_path / "base.nnr", "-q")[0] == 0
    rng = np.random.default_rng(3)
    scale = {"fc1.weight": 0.001, "fc1.bias": 0.05, "fc2.weight": 0.02, "fc2.bias": 0.003}
    w1 = {n: w + (rng.standard_normal(w.shape) * scale[n]).astype(np.float32) for n, w in w0.items()}
    _mlp(tmp_path / "tuned.onnx", w1)
    args = ("--base", tmp_path / "base.nnr", "-q")
    assert run(capsys, "convert", tmp_path / "tuned.onnx", tmp_path / "u.nnr", *args)[0] == 0
    return tmp_path, w0, w1


def _ndu_spans(data: bytes) -> list[tuple[str, int]]:
    return [
        (p.unit.header.topology_elem_id, p.byte_offset + p.size)
        for p in nnc.read_units(data)
        if isinstance(p.unit, nnc.CompressedDataUnit)
    ]


def test_units_come_largest_relative_difference_energy_per_byte_first(update):
    folder, _, w1 = update
    data = (folder / "u.nnr").read_bytes()
    units = [p for p in nnc.read_units(data) if isinstance(p.unit, nnc.CompressedDataUnit)]
    order = [p.unit.header.topology_elem_id for p in units]
    size = {p.unit.header.topology_elem_id: p.size for p in units}
    base = nnc.read_base((folder / "base.nnr").read_bytes()).tensors
    gain = {}
    for n in SHAPES:
        old = base[n].values.astype(np.float64).ravel()
        gain[n] = float(((w1[n].ravel() - old) ** 2).sum() / (old**2).sum()) / size[n]
    assert order == sorted(gain, key=gain.get, reverse=True)
    assert order != list(SHAPES)  # not the model's order


def test_a_cut_update_applies_its_complete_units(update, capsys):
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
        code, stdout, err = run(capsys, "convert", cut, out, "--base", folder / "base.nnr", "--partial")
        assert code == 0, err
        assert f"{count} complete data units applied" in stdout
        got = _initializers(out)
        applied = {name for name, _ in spans[:count]}
        for name in SHAPES:
            np.testing.assert_array_equal(got[name], (restored if name in applied else base)[name], err_msg=name)
    # without --partial a cut update is a truncated bitstream
    code, _, err = run(capsys, "convert", folder / "cut1.nnr", folder / "x.onnx", "--base", folder / "base.nnr")
    assert code == 4 and "runs past the end" in err


def test_partial_needs_a_base_and_the_topology(update, capsys):
    folder, _, _ = update
    data = (folder / "u.nnr").read_bytes()
    (folder / "head.nnr").write_bytes(data[:14])
    code, _, err = run(
        capsys, "convert", folder / "head.nnr", folder / "x.onnx", "--base", folder / "base.nnr", "--partial"
    )
    assert code == 4 and "before its topology or first data unit" in err
    code, _, err = run(capsys, "convert", folder / "u.nnr", folder / "x.onnx", "--partial")
    assert code == 5 and "give --base" in err
    assert not (folder / "x.onnx").exists()
