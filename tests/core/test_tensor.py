# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
import numpy as np
import pytest

from nnrconv.core import ArrayTensor, DType, LazyTensor, MappedTensor, TensorRole


def test_array_tensor_wraps_without_copy():
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = ArrayTensor("w", data, role=TensorRole.WEIGHT)
    assert t.numpy() is data
    assert (t.dtype, t.shape, t.size, t.nbytes) == (DType.FLOAT, (2, 3), 6, 24)
    assert t.tobytes() == data.tobytes()


def test_array_tensor_rejects_mismatched_storage():
    with pytest.raises(TypeError, match="cannot hold"):
        ArrayTensor("w", np.zeros(2, np.float32), dtype=DType.INT32)
    with pytest.raises(ValueError, match="elements"):
        ArrayTensor("w", np.zeros(5, np.float32), shape=(2, 3))


def test_bfloat16_tensor_keeps_raw_bits():
    bits = np.array([0x3F80, 0xC000], dtype=np.uint16)
    t = ArrayTensor("b", bits, dtype=DType.BFLOAT16)
    assert t.dtype is DType.BFLOAT16 and t.numpy().tobytes() == bits.tobytes()


def test_mapped_tensor_reads_nothing_until_asked(tmp_path):
    path = tmp_path / "blob.bin"
    payload = np.arange(12, dtype=np.int64)
    path.write_bytes(b"HEADER__" + payload.tobytes())
    t = MappedTensor("x", DType.INT64, (3, 4), path, offset=8)
    assert t._map is None and t.nbytes == 96  # metadata costs no IO
    np.testing.assert_array_equal(t.numpy(), payload.reshape(3, 4))
    assert t._map is not None
    t.release()
    assert t._map is None


def test_mapped_tensor_beyond_file_end_is_an_error(tmp_path):
    path = tmp_path / "short.bin"
    path.write_bytes(b"\0" * 10)
    with pytest.raises(ValueError, match="needs bytes"):
        MappedTensor("x", DType.FLOAT, (4,), path).numpy()


def test_lazy_tensor_calls_once_when_caching():
    calls = []

    def produce():
        calls.append(1)
        return np.ones(4, np.float32)

    t = LazyTensor("l", DType.FLOAT, (2, 2), produce, cache=True)
    assert not calls
    assert t.numpy().shape == (2, 2) and t.numpy().shape == (2, 2)
    assert len(calls) == 1


def test_lazy_tensor_checks_producer_dtype():
    t = LazyTensor("l", DType.FLOAT, (2,), lambda: np.ones(2, np.float64))
    with pytest.raises(TypeError, match="producer returned float64"):
        t.numpy()


def test_negative_dimension_is_rejected():
    with pytest.raises(ValueError, match="non-negative"):
        LazyTensor("l", DType.FLOAT, (2, -1), lambda: np.ones(2, np.float32))
