# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`compare` / `nnrconv diff`: pairing by name, then by content when a converter renamed tensors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import nnrconv
from nnrconv._compare import compare, render
from nnrconv.cli import main
from nnrconv.core import ArrayTensor, Graph, Model

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tiny_cnn.onnx"


def _model(**arrays: np.ndarray) -> Model:
    return Model(Graph(), {name: ArrayTensor(name, array) for name, array in arrays.items()})


def test_same_names_pair_by_name_with_error_columns() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 4)).astype(np.float32)
    noisy = (w + 1e-3 * rng.standard_normal(w.shape)).astype(np.float32)
    result = compare(_model(w=w, b=np.arange(3, dtype=np.int64)), _model(w=noisy, b=np.arange(3, dtype=np.int64)))
    assert (result.matched_by_name, result.matched_by_content) == (2, 0)
    weight, bias = result.differences
    assert not weight.bit_identical and bias.bit_identical and bias.snr_db == math.inf
    expected_abs = float(np.max(np.abs(w.astype(np.float64) - noisy)))
    assert weight.max_abs == pytest.approx(expected_abs)
    assert weight.max_rel == pytest.approx(expected_abs / float(np.max(np.abs(w))))
    assert 50 < weight.snr_db < 70  # noise at 1e-3 of unit weights: about 60 dB
    assert not result.identical


def test_renamed_tensors_pair_by_content_closest_first() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 16)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    first = _model(**{"layer.a": a, "layer.b": b, "bias": bias, "shape": np.array([1, 16], np.int64)})
    # Renamed, reordered, the bias reshaped to [1, 5] (as NNEF stores it), `b` slightly perturbed.
    second = _model(v1=bias.reshape(1, 5), v2=(b + 1e-4).astype(np.float32), v3=a, other=np.ones(7, np.float32))
    result = compare(first, second)
    pairs = {d.name: (d.other_name, d.matched_by) for d in result.differences}
    assert pairs == {"layer.a": ("v3", "content"), "layer.b": ("v2", "content"), "bias": ("v1", "content")}
    by_name = {d.name: d for d in result.differences}
    assert by_name["bias"].bit_identical and by_name["bias"].other_shape == (1, 5)
    assert not by_name["layer.b"].bit_identical and by_name["layer.b"].max_abs == pytest.approx(1e-4, rel=1e-2)
    assert result.only_in_first == ["shape"] and result.only_in_second == ["other"]


def test_a_different_tensor_of_the_same_shape_is_not_paired() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((2, 32)).astype(np.float32)
    result = compare(_model(x=x), _model(y=y))
    assert not result.differences and result.only_in_first == ["x"] and result.only_in_second == ["y"]


def test_render_summarises_how_tensors_matched() -> None:
    w = np.linspace(-1, 1, 12, dtype=np.float32)
    lines = render(compare(_model(w=w, k=w * 2), _model(w=w, renamed=w * 2)), "A", "B", show_all=True)
    assert lines[0].split()[:7] == ["tensor", "dtype", "shape", "max|diff|", "rel.err", "SNR", "dB"]
    assert "content: renamed" in lines[2]
    assert lines[-1].endswith("matched 1 by name, 1 by content, 0 unmatched")


def test_diff_after_onnx_to_nnef_pairs_every_weight(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("nnef_tools")
    pytest.importorskip("onnxslim")
    nnef_path = tmp_path / "m.nnef"
    nnrconv.convert(EXAMPLE, nnef_path)
    result = compare(nnrconv.load(EXAMPLE), nnrconv.load(nnef_path))
    assert result.matched_by_content == 9 and all(d.bit_identical for d in result.differences)
    assert result.only_in_first == ["flatten_shape"]  # folded into the NNEF reshape
    assert main(["diff", str(EXAMPLE), str(nnef_path)]) == 1
    assert "matched 0 by name, 9 by content, 1 unmatched" in capsys.readouterr().out
