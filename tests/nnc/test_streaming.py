# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Streaming: `encode_model_to` writes `encode_model`'s bytes (integrity record, fitted QP window
and rate plans included); `open_lazily` verifies the record and the memory budget as
`decode_model` does, decodes what it decodes, tensor by tensor, and names the unit of a corrupt
payload."""

from __future__ import annotations

import io

import numpy as np
import pytest

from nnrconv import nnc
from nnrconv.core import BitstreamError
from nnrconv.nnc._coding import TensorChoice
from nnrconv.nnc._integrity import strip_record
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
        nnc.CodingOptions(
            plan={
                "big.weight": TensorChoice(qp=-30, lambda_scale=0.5),
                "small.weight": TensorChoice(qp=-40, dq=False, codebook=True),
                "bias": TensorChoice(exact=True),
            }
        ),
    ],
    ids=["snr", "qp", "lossless", "blocks", "rate-plan"],
)
def test_streamed_bytes_equal_encode_model(options: nnc.CodingOptions) -> None:
    tensors = _tensors()
    expected = nnc.encode_model(tensors.items(), b"topology", 2, options=options)
    sources = {n: _Counting(a) for n, a in tensors.items()}
    out = io.BytesIO()
    written = encode_model_to(out, list(sources.items()), b"topology", 2, options=options)
    assert out.getvalue() == expected and written == len(expected)
    assert all(s.reads == 2 and s.releases == 2 for s in sources.values())  # planned, then coded
    assert nnc.decode_model(out.getvalue()).verified  # the record, patched in last, covers all units


def test_a_window_refitted_model_streams_the_same_bytes() -> None:
    """QPs too far apart for one MPS window (a mask constant next to small weights): fit_plans
    moves the window and sends a tensor raw; the streamed bytes follow the same decisions."""
    rng = np.random.default_rng(3)
    tensors = {
        "weight": (rng.standard_normal((64, 64)) * 1e-3).astype(np.float32),
        "mask": np.full((32, 32), -3.4e38, dtype=np.float32),
        "tiny": (rng.standard_normal((40, 40)) * 1e-30).astype(np.float32),
    }
    expected = nnc.encode_model(tensors.items(), b"", 0)
    out = io.BytesIO(b"prefix")  # written after what the file already holds
    out.seek(0, io.SEEK_END)
    written = encode_model_to(out, [(n, (lambda a=a: a)) for n, a in tensors.items()], b"", 0)
    assert out.getvalue()[6:] == expected and written == len(expected)


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


def test_a_flipped_bit_is_found_before_any_tensor_is_decoded() -> None:
    data = bytearray(nnc.encode_model(_tensors().items(), b"", 0))
    unit = next(u for u in nnc.inspect_units(bytes(data)) if u.tensor == "small.weight")
    data[unit.byte_offset + unit.size - 2] ^= 0x10
    with pytest.raises(BitstreamError) as caught:
        open_lazily(memoryview(bytes(data)), source="m.nnr")
    error = caught.value
    assert error.unit_index == unit.index and error.byte_offset == unit.byte_offset
    assert "m.nnr" in str(error) and "integrity check" in str(error)
    with pytest.raises(BitstreamError) as whole:  # the same message as decoding whole
        nnc.decode_model(bytes(data), source="m.nnr")
    assert str(whole.value) == str(error)


def test_the_record_is_skipped_and_unverified_streams_still_open() -> None:
    data = nnc.encode_model(_tensors().items(), b"topology", 2)
    verified = open_lazily(memoryview(data))
    plain = open_lazily(memoryview(strip_record(data)))
    assert verified is not None and plain is not None
    assert verified.head.verified and not plain.head.verified
    assert [u.name for u in verified.units] == [u.name for u in plain.units] == list(_tensors())
    assert verified.head.topology == plain.head.topology == b"topology"


def test_declared_sizes_over_the_budget_are_refused_when_opened() -> None:
    data = nnc.encode_model(_tensors().items(), b"", 0)
    with nnc.memory_budget(100_000), pytest.raises(BitstreamError) as caught:  # big.weight: 240 KB
        open_lazily(memoryview(data), source="m.nnr")
    assert caught.value.tensor == "big.weight" and "--max-memory" in str(caught.value)
    with nnc.memory_budget("1M"):
        assert open_lazily(memoryview(data)) is not None


def test_a_corrupt_payload_is_named_when_its_tensor_is_decoded() -> None:
    data = bytearray(strip_record(nnc.encode_model(_tensors().items(), b"", 0)))  # unverified
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
