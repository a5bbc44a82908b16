# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Streaming: `encode_model_to` writes `encode_model`'s bytes; `open_lazily` decodes what
`decode_model` decodes, tensor by tensor, and names the unit of a corrupt payload."""

from __future__ import annotations

import io

import numpy as np
import pytest

from nnrconv import nnc
from nnrconv.core import BitstreamError
from nnrconv.nnc._streaming import Prefetcher, encode_model_to, iter_decoded, open_lazily


def _tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "big.weight": (rng.standard_normal((300, 200)) * 0.05).astype(np.float32),
        "small.weight": (rng.standard_normal((20, 30)) * 0.1).astype(np.float32),
        "bias": rng.standard_normal(300).astype(np.float32),
        "steps": np.arange(12, dtype=np.int64),
        "half": rng.standard_normal((40, 40)).astype(np.float16),
    }


class _Counting:
    """A source that records how often it is read and released."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.reads, self.releases = array, 0, 0

    def __call__(self) -> np.ndarray:
        self.reads += 1
        return self.array

    def release(self) -> None:
        self.releases += 1


@pytest.mark.parametrize(
    "options",
    [
        nnc.CodingOptions(),
        nnc.CodingOptions(qp=-36, jobs=1),
        nnc.CodingOptions(lossless=True),
        nnc.CodingOptions(scan_order=2, jobs=2),
    ],
    ids=["snr", "qp", "lossless", "blocks"],
)
def test_streamed_bytes_equal_encode_model(options: nnc.CodingOptions) -> None:
    tensors = _tensors()
    expected = nnc.encode_model(tensors.items(), b"topology", 2, options=options)
    sources = {n: _Counting(a) for n, a in tensors.items()}
    out = io.BytesIO()
    written = encode_model_to(out, list(sources.items()), b"topology", 2, options=options)
    assert out.getvalue() == expected and written == len(expected)
    assert all(s.reads == 2 and s.releases == 2 for s in sources.values())  # planned, then coded


def test_arrays_sent_to_the_executor_give_the_same_bytes() -> None:
    tensors = _tensors()
    expected = nnc.encode_model(tensors.items(), b"", 0)
    out = io.BytesIO()
    encode_model_to(out, [(n, (lambda a=a: a)) for n, a in tensors.items()], b"", 0, send_arrays=True)
    assert out.getvalue() == expected


def test_lazy_decoding_matches_decode_model() -> None:
    tensors = _tensors()
    data = nnc.encode_model(tensors.items(), b"topology", 2)
    whole = nnc.decode_model(data)
    streamed = open_lazily(memoryview(data))
    assert streamed is not None and streamed.head.topology == b"topology"
    assert [u.name for u in streamed.units] == list(tensors)
    assert streamed.head.unit_count == whole.unit_count
    decoded = dict(iter_decoded(streamed, jobs=2))
    for name, array in whole.tensors.items():
        assert decoded[name].dtype == array.dtype and np.array_equal(decoded[name], array)
    prefetcher = Prefetcher(streamed, jobs=2)
    try:  # out of order: decoded on the spot
        assert np.array_equal(prefetcher.get("half"), whole.tensors["half"])
        assert np.array_equal(prefetcher.get("big.weight"), whole.tensors["big.weight"])
    finally:
        prefetcher.close()


def test_a_corrupt_payload_is_named_when_its_tensor_is_decoded() -> None:
    data = bytearray(nnc.encode_model(_tensors().items(), b"", 0))
    unit = next(u for u in nnc.inspect_units(bytes(data)) if u.tensor == "small.weight")
    data[unit.byte_offset + unit.size - 3 : unit.byte_offset + unit.size] = b"\xff\xff\xff"
    streamed = open_lazily(memoryview(bytes(data)), source="m.nnr")
    assert streamed is not None  # headers are fine: the damage shows when the tensor is decoded
    target = next(u for u in streamed.units if u.name == "small.weight")
    with pytest.raises(BitstreamError) as caught:
        streamed.decode(target)
    error = caught.value
    assert error.unit_index == unit.index and error.tensor == "small.weight" and "m.nnr" in str(error)
    assert error.byte_offset is not None and error.byte_offset >= unit.byte_offset


def test_updates_are_not_opened_lazily() -> None:
    tensors = _tensors()
    base_data = nnc.encode_model(tensors.items(), b"", 0)
    changed = {**tensors, "big.weight": tensors["big.weight"] + 0.01}
    update = nnc.encode_update(changed.items(), b"", 0, nnc.read_base(base_data))
    assert open_lazily(memoryview(update)) is None
