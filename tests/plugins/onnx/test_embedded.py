# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""NNR inside ONNX (`.nnr.onnx`): valid ONNX, same tensors as the `.nnr`, units moved unchanged."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import nnrconv
import nnrconv_onnx
from nnrconv import nnc
from nnrconv.core import CodedTensor
from nnrconv_onnx import _embed, _format
from tests.plugins.onnx import _models

EXAMPLE = Path(__file__).parents[3] / "examples" / "tiny_cnn.onnx"


def _models_under_test(tmp_path: Path) -> list[Path]:
    cnn, _ = _models.torch_model("cnn", tmp_path / "cnn.onnx")
    loop, _ = _models.loop_model(tmp_path / "loop.onnx")
    return [EXAMPLE, cnn, loop]


def _bytes(model: nnrconv.Model) -> dict[str, bytes]:
    return {name: t.tobytes() for name, t in model.tensors.items()}


@pytest.mark.parametrize("index", range(3), ids=["example", "torch-cnn", "loop"])
def test_embedded_model_is_valid_and_matches_nnr_decoding(tmp_path, index):
    source = _models_under_test(tmp_path)[index]
    nnr, embedded = tmp_path / "m.nnr", tmp_path / "m.nnr.onnx"
    nnrconv.convert(source, nnr)  # default: lossy, per-tensor SNR
    nnrconv.convert(nnr, embedded)  # units move as they are
    proto = onnx.load(embedded)
    onnx.checker.check_model(proto, full_check=True)
    assert any(op.domain == _embed.DOMAIN for op in proto.opset_import)
    loaded = nnrconv.load(embedded)
    assert _bytes(loaded) == _bytes(nnrconv.load(nnr))
    assert all(isinstance(t, CodedTensor) for t in loaded if t.dtype.name == "FLOAT")
    # Back to .nnr: the very same bitstream, nothing re-quantized.
    nnrconv.convert(embedded, tmp_path / "again.nnr")
    assert (tmp_path / "again.nnr").read_bytes() == nnr.read_bytes()
    # Not larger than the .nnr plus the ONNX graph held uncompressed and a few bytes per tensor.
    topology = len(nnrconv.load(source).native.SerializeToString()) - sum(t.nbytes for t in nnrconv.load(source))
    assert embedded.stat().st_size <= nnr.stat().st_size + max(topology, 0) + 64 * len(loaded.tensors) + 256


def test_lossless_embedding_restores_the_original_exactly(tmp_path):
    embedded = tmp_path / "m.nnr.onnx"
    nnrconv.convert(EXAMPLE, embedded, options=nnc.CodingOptions(lossless=True))
    nnrconv.convert(embedded, tmp_path / "plain.onnx")
    assert _bytes(nnrconv.load(tmp_path / "plain.onnx")) == _bytes(nnrconv.load(EXAMPLE))


def test_explicit_options_code_anew(tmp_path):
    nnr = tmp_path / "m.nnr"
    nnrconv.convert(EXAMPLE, nnr, options=nnc.CodingOptions(qp=-30))
    nnrconv.convert(nnr, tmp_path / "fine.nnr.onnx", options=nnc.CodingOptions(qp=-50))
    nnrconv.convert(nnr, tmp_path / "same.nnr.onnx")
    assert (tmp_path / "fine.nnr.onnx").stat().st_size > (tmp_path / "same.nnr.onnx").stat().st_size


def test_session_runs_the_embedded_model(tmp_path):
    embedded, plain = tmp_path / "m.nnr.onnx", tmp_path / "plain.onnx"
    nnrconv.convert(EXAMPLE, embedded)
    nnrconv.convert(embedded, plain)
    x = np.random.default_rng(5).standard_normal((1, 3, 32, 32)).astype(np.float32)
    expected = ort.InferenceSession(str(plain), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    got = nnrconv_onnx.inference_session(embedded).run(None, {"input": x})
    assert all(np.array_equal(a, b) for a, b in zip(expected, got, strict=True))


def test_large_embedded_model_uses_external_data(tmp_path, monkeypatch):
    monkeypatch.setattr(_format, "EXTERNAL_DATA_THRESHOLD", 1000)
    embedded = tmp_path / "m.nnr.onnx"
    nnrconv.convert(EXAMPLE, embedded, options=nnc.CodingOptions(lossless=True))
    assert (tmp_path / "m.nnr.onnx.data").exists()
    onnx.checker.check_model(str(embedded), full_check=True)
    assert _bytes(nnrconv.load(embedded)) == _bytes(nnrconv.load(EXAMPLE))


def test_corrupt_unit_inside_onnx_names_the_tensor(tmp_path):
    embedded = tmp_path / "m.nnr.onnx"
    nnrconv.convert(EXAMPLE, embedded)
    proto = onnx.load(embedded)
    node = next(n for n in proto.graph.node if n.op_type == _embed.OP_TYPE and n.output[0] == "conv2.weight")
    coded = next(a.t for a in node.attribute if a.name == "nnr")
    coded.raw_data = coded.raw_data[:-5]
    onnx.save(proto, embedded)
    with pytest.raises(nnrconv.NNRConvError, match=r"conv2\.weight"):
        nnrconv.load(embedded)
