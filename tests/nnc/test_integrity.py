# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Integrity records: every single-bit flip of a stream nnrconv writes is refused, naming where.

The real-model version (1,000+ random flips across `.nnr` and `.nnr.onnx`) is
tests/test_bitflips.py; here small streams are flipped exhaustively, bit by bit.
"""

from __future__ import annotations

import numpy as np
import pytest

from nnrconv import nnc
from nnrconv.core import BitstreamError
from nnrconv.nnc._integrity import MAGIC, IntegrityRecord, check_stream, scan_frames, split_record

LOSSLESS = nnc.CodingOptions(lossless=True)


def _tensors() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    return [
        ("w", (rng.standard_normal((3, 4)) * 0.1).astype(np.float32)),  # DeepCABAC, or raw when lossless
        ("b", np.array([0.5, -2.0, 0.25], np.float32)),
        ("i", np.arange(-3, 4, dtype=np.int32)),  # NNR_PT_INT
    ]


def _flips(data: bytes):  # type: ignore[no-untyped-def]
    for bit in range(len(data) * 8):
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        yield bit // 8, bytes(damaged)


@pytest.mark.parametrize("options", [nnc.CodingOptions(), LOSSLESS], ids=["lossy", "lossless"])
def test_every_bit_flip_of_a_stream_is_refused(options: nnc.CodingOptions) -> None:
    data = nnc.encode_model(_tensors(), b"a topology the plugin owns", 2, options=options)
    assert nnc.decode_model(data).verified
    frames, _ = scan_frames(memoryview(data))
    starts = [offset for offset, _ in frames]
    for offset, damaged in _flips(data):
        with pytest.raises(BitstreamError) as caught:
            nnc.decode_model(damaged)
        error = caught.value
        # Located: the unit holding the flipped byte (or, for a damaged size field, where the
        # framing is first seen to go wrong: never before the flipped unit).
        assert error.byte_offset is not None, str(error)
        holder = max(i for i, s in enumerate(starts) if s <= offset)
        if error.unit_index is not None and "signature" not in str(error):
            assert error.unit_index >= min(holder, 2), (offset, str(error))


def test_every_bit_flip_of_embedded_parts_is_refused() -> None:
    parameter_sets, ndus = nnc.encode_parts(_tensors(), LOSSLESS)
    assert nnc.decode_parts(parameter_sets, ndus).keys() == ndus.keys()
    for _, damaged in _flips(parameter_sets):
        with pytest.raises(BitstreamError):
            nnc.decode_parts(damaged, ndus)
    for name, ndu in ndus.items():
        for _, damaged in _flips(ndu):
            with pytest.raises(BitstreamError, match=f"tensor '{name}'"):
                nnc.decode_parts(parameter_sets, {**ndus, name: damaged})


def test_a_missing_or_foreign_data_unit_is_refused() -> None:
    parameter_sets, ndus = nnc.encode_parts(_tensors(), LOSSLESS)
    with pytest.raises(BitstreamError, match="1 of them are missing"):
        nnc.decode_parts(parameter_sets, {k: v for k, v in ndus.items() if k != "b"})
    _, other = nnc.encode_parts([("b", np.array([1.0, 2.0, 3.0], np.float32))], LOSSLESS)
    with pytest.raises(BitstreamError, match=r"tensor 'b'.*integrity check"):
        nnc.decode_parts(parameter_sets, {**ndus, "b": other["b"]})
    # A container that keeps only some units reseals: the record then covers exactly those.
    kept = {k: v for k, v in ndus.items() if k != "b"}
    resealed = nnc.seal_parts(parameter_sets, kept.values())
    assert nnc.decode_parts(resealed, kept).keys() == kept.keys()
    with pytest.raises(BitstreamError, match="not in the integrity record"):
        nnc.seal_parts(parameter_sets, [other["b"]])


def test_truncated_appended_and_reordered_streams_are_refused() -> None:
    data = nnc.encode_model(_tensors(), b"", 0, options=LOSSLESS)
    frames, _ = scan_frames(memoryview(data))
    last = frames[-1][0]
    with pytest.raises(BitstreamError, match=r"unit 6, byte offset \d+: the stream ends after 6 units.*truncated"):
        nnc.decode_model(data[:last])
    with pytest.raises(BitstreamError, match="were added"):
        nnc.decode_model(data + data[frames[-1][0] :])
    a, b = frames[-2], frames[-1]
    swapped = data[: a[0]] + data[b[0] :] + data[a[0] : b[0]]
    with pytest.raises(BitstreamError, match=r"unit 5.*integrity check"):
        nnc.decode_model(swapped)


def test_record_layout_and_nncodec_view() -> None:
    data = nnc.encode_model(_tensors(), b"", 3)
    units = nnc.read_units(data)
    record = units[2].unit
    assert isinstance(record, nnc.TopologyUnit)
    assert record.topology_storage_format == nnc.TopologyStorageFormat.NNR_TPL_UNREC
    assert record.topology_compression_format == nnc.TopologyCompressionFormat.NNR_PT_RAW
    assert record.topology_data.startswith(MAGIC + b" stream ") and b"\0" not in record.topology_data
    record.topology_data.decode("ascii")  # NNCodec reads it as a UTF-8 st(v)
    parsed = IntegrityRecord.from_unit(memoryview(data)[units[2].byte_offset : units[3].byte_offset])
    assert len(parsed.crcs) == len(units) - 1 and len(parsed.digest) == 16
    # The model's own topology unit follows the record, so it is the one a decoder keeps.
    decoded = nnc.decode_model(data)
    assert decoded.topology_storage_format == 3 and decoded.topology == b""
    # What is left without the record is the plain NNCodec layout, decoded the same, unverified.
    plain = nnc.strip_record(data)
    assert len(plain) == len(data) - units[2].size
    assert not nnc.decode_model(plain).verified
    assert [i.integrity for i in nnc.inspect_units(plain)] == ["unverified"] * (len(units) - 1)
    again = nnc.decode_model(plain)
    assert all(np.array_equal(again.tensors[k], decoded.tensors[k]) for k in decoded.tensors)


def test_decoded_units_move_with_a_parts_record() -> None:
    data = nnc.encode_model(_tensors(), b"", 0)
    decoded = nnc.decode_model(data)
    assert decoded.parameter_sets is not None and decoded.coded is not None
    _, record = split_record(decoded.parameter_sets)
    assert record is not None and record.form == "parts" and len(record.crcs) == 2 + len(decoded.coded)
    assert nnc.decode_parts(decoded.parameter_sets, decoded.coded).keys() == decoded.coded.keys()
    # ... and back into one stream, byte for byte.
    assert nnc.assemble_model(decoded.parameter_sets, b"", 0, decoded.coded.values(), compress_topology=False) == data
    # NNCodec's streams are sealed as decoded, so what nnrconv writes from them is checked.
    unverified = nnc.decode_model(nnc.strip_record(data))
    assert unverified.parameter_sets == decoded.parameter_sets


def test_a_damaged_record_is_not_mistaken_for_no_record() -> None:
    data = nnc.encode_model(_tensors(), b"topology", 2)
    check = check_stream(memoryview(data))
    offset = check.frames[2][0]
    magic_at = data.index(MAGIC)
    for where in (magic_at, magic_at + 5, offset + 2, offset + 3):  # signature, header, storage format
        damaged = bytearray(data)
        damaged[where] ^= 0x04
        with pytest.raises(BitstreamError, match="integrity record"):
            nnc.decode_model(bytes(damaged))
