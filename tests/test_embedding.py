# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The embedding seam (`nnrconv._embedding`): units stay coded until a tensor is used, sizes are
checked against the container's declaration, and errors name the file and tensor."""

from pathlib import Path

import numpy as np
import pytest

import nnrconv
from nnrconv import _embedding, nnc
from nnrconv.core import BitstreamError, CodedTensor, CodedUnit, DType, EmbeddedModel, Graph, Model, TensorRole
from nnrconv.testing import assert_corrupt_unit_refused, assert_embedded_round_trip

EXAMPLE = Path(__file__).parents[1] / "examples" / "tiny_cnn.onnx"


def _parts(shape: tuple[int, ...] = (4, 3), dtype: DType = DType.FLOAT) -> tuple[EmbeddedModel, np.ndarray]:
    array = np.arange(12, dtype=np.float32).reshape(4, 3) / 8
    parameter_sets, ndus = nnc.encode_parts({"w": array}, nnc.CodingOptions(lossless=True))
    unit = CodedUnit(ndus["w"], dtype, shape, TensorRole.WEIGHT)
    return EmbeddedModel(Model(Graph(name="toy"), {}), parameter_sets, {"w": unit}), array


def test_a_coded_tensor_is_not_decoded_until_accessed(monkeypatch):
    calls: list[str] = []
    real = nnc.PartsDecoder.decode

    def counting(self, ndus, **kwargs):
        calls.extend(ndus)
        return real(self, ndus, **kwargs)

    monkeypatch.setattr(nnc.PartsDecoder, "decode", counting)
    parts, array = _parts()
    model = _embedding.lazy_model(parts, "toy.nnr.x")
    tensor = model.tensors["w"]
    assert isinstance(tensor, CodedTensor) and not tensor.is_decoded
    assert (tensor.dtype, tensor.shape, tensor.role, calls) == (DType.FLOAT, (4, 3), TensorRole.WEIGHT, [])
    assert np.array_equal(tensor.numpy(), array) and tensor.is_decoded
    tensor.numpy()
    assert calls == ["w"]  # decoded once, then kept


def test_reading_an_embedded_onnx_decodes_nothing(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    embedded = tmp_path / "m.nnr.onnx"
    nnrconv.convert(EXAMPLE, embedded, options=nnc.CodingOptions(lossless=True))
    monkeypatch.setattr(nnc.PartsDecoder, "decode", lambda *a, **k: pytest.fail("decoded while reading"))
    model = nnrconv.load(embedded)
    coded = [t for t in model if isinstance(t, CodedTensor)]
    assert coded and not any(t.is_decoded for t in coded)


def test_a_unit_that_does_not_fit_its_declared_shape_is_refused_on_access():
    parts, _ = _parts(shape=(5, 3))
    tensor = _embedding.lazy_model(parts, "toy.nnr.x").tensors["w"]
    with pytest.raises(BitstreamError, match=r"toy\.nnr\.x: tensor 'w': .*12 elements.*15") as caught:
        tensor.numpy()
    assert isinstance(caught.value.__cause__, ValueError)  # chained, not swallowed


def test_values_that_do_not_fit_the_declared_type_are_refused():
    parts, _ = _parts(dtype=DType.INT8)
    with pytest.raises(BitstreamError, match="do not fit INT8"):
        _embedding.lazy_model(parts, "toy.nnr.x").tensors["w"].numpy()


def test_a_damaged_unit_is_refused_on_reading_naming_file_and_tensor():
    parts, _ = _parts()
    damaged = bytearray(parts.units["w"].ndu)
    damaged[-1] ^= 1
    unit = parts.units["w"]
    parts.units = {"w": CodedUnit(bytes(damaged), unit.dtype, unit.shape)}
    with pytest.raises(BitstreamError, match=r"toy\.nnr\.x: .*tensor 'w'.*integrity") as caught:
        _embedding.lazy_model(parts, "toy.nnr.x")
    assert caught.value.tensor == "w" and caught.value.__cause__ is not None


def test_the_plugin_kit_checks_embedding_for_onnx(tmp_path):
    pytest.importorskip("onnx")
    embedded = tmp_path / "m.nnr.onnx"
    assert_embedded_round_trip(EXAMPLE, embedded)
    assert_corrupt_unit_refused(embedded)
