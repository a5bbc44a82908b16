# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Whole-model encode/decode, inspection, the public API, and corrupt-stream behaviour."""

from __future__ import annotations

import contextlib
import random
import types
import zlib

import numpy as np
import pytest

import nnrconv.nnc as nnc
from nnrconv.core._errors import BitstreamError, NNRConvError, UnsupportedError
from nnrconv.nnc import (
    AggregateUnit,
    CompressedDataUnit,
    ModelParameterSet,
    NduHeader,
    PayloadType,
    StartUnit,
    TopologyCompressionFormat,
    TopologyStorageFormat,
    TopologyUnit,
    cabac,
    decode_model,
    encode_model,
    encode_reference_list,
    inspect_units,
    read_units,
    write_units,
)
from nnrconv.nnc._integrity import strip_record

ONNX = TopologyStorageFormat.NNR_TPL_ONNX
LOSSLESS = nnc.CodingOptions(lossless=True)


def sample_tensors() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    return [
        ("conv.weight", rng.standard_normal((4, 3, 2, 2)).astype(np.float32)),
        ("conv.bias", rng.standard_normal(4).astype(np.float32)),
        ("scale", np.array(1.5, dtype=np.float32)),
        ("gewicht.ä€😀", rng.standard_normal((2, 5)).astype(np.float32)),
        ("empty", np.zeros((0, 3), dtype=np.float32)),
    ]


def assert_bit_exact(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == np.float32 and b.dtype == np.float32
    assert a.shape == b.shape
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("profile", [0, 1])
@pytest.mark.parametrize("compress", [True, False])
def test_model_round_trip(profile: int, compress: bool) -> None:
    tensors = sample_tensors()
    topology = b"\x08\x07graph\x00\x00" + b"node " * 50
    data = encode_model(
        tensors, topology, ONNX, compress_topology=compress, general_profile_idc=profile, options=LOSSLESS
    )
    model = decode_model(data)
    assert list(model.tensors) == [name for name, _ in tensors]
    for name, array in tensors:
        expected = array.reshape(1) if array.ndim == 0 else array
        assert_bit_exact(model.tensors[name], expected)
    assert model.topology == topology
    assert model.topology_storage_format == ONNX
    assert model.topology_compression_format == (
        TopologyCompressionFormat.NNR_DFL if compress else TopologyCompressionFormat.NNR_PT_RAW
    )
    assert model.general_profile_idc == profile
    assert model.mps.mps_qp_density == ModelParameterSet().mps_qp_density


def test_special_values_are_bit_exact() -> None:
    bits = np.array([0x7FC00001, 0xFF800000, 0x7F800000, 0x80000000, 0x00000001, 0x7F7FFFFF], dtype=np.uint32)
    array = bits.view(np.float32)
    model = decode_model(encode_model([("x", array)], b"", 0, options=LOSSLESS))
    assert np.array_equal(model.tensors["x"].view(np.uint32), bits)


def test_byte_order_and_layout_of_inputs() -> None:
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    tensors = [("big", base.astype(">f4")), ("strided", base.T), ("fortran", np.asfortranarray(base))]
    model = decode_model(encode_model(tensors, b"", 0, options=LOSSLESS))
    assert_bit_exact(model.tensors["big"], base)
    assert_bit_exact(model.tensors["strided"], np.ascontiguousarray(base.T))
    assert_bit_exact(model.tensors["fortran"], base)
    assert model.tensors["big"].flags.writeable


def test_empty_model_is_nncodec_bytes() -> None:
    data = encode_model([], b"", TopologyStorageFormat.NNR_TPL_UNREC)
    assert strip_record(data) == bytes.fromhex("00040201 0008068100400080 00060e000000")
    model = decode_model(data)
    assert model.tensors == {} and model.topology == b""
    assert encode_model([], b"", 0, general_profile_idc=0)[:4] == bytes.fromhex("00040200")


def test_first_ndu_matches_nncodec_layout() -> None:
    weights = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)  # on no QP grid: raw
    data = strip_record(encode_model([("layer.weight", weights)], b"", 0, options=LOSSLESS))
    ndu = data[18:]
    # header as in fact sheet §1.12 but payload type RAW_FLOAT (0x11) and dq_flag absent
    assert ndu[2:4] == bytes.fromhex("16 11")
    assert ndu[4:17] == b"layer.weight\0"
    assert int.from_bytes(ndu[:2], "big") == len(ndu)
    assert ndu[-24:] == weights.tobytes()


def test_topology_is_deflated_only_when_smaller() -> None:
    compressible = b"a" * 1000
    units = read_units(encode_model([], compressible, ONNX))
    tpl = units[3].unit  # after the integrity record
    assert isinstance(tpl, TopologyUnit)
    assert tpl.topology_compression_format == TopologyCompressionFormat.NNR_DFL
    assert zlib.decompress(tpl.topology_data) == compressible
    random_bytes = random.Random(3).randbytes(64)
    tpl = read_units(encode_model([], random_bytes, ONNX))[3].unit
    assert isinstance(tpl, TopologyUnit)
    assert tpl.topology_compression_format == TopologyCompressionFormat.NNR_PT_RAW
    assert tpl.topology_data == random_bytes


def test_can_carry() -> None:
    for dtype in (np.float32, ">f4", np.float64, np.float16, np.int8, np.int16, np.int32, np.int64, np.uint8):
        assert nnc.can_carry(dtype)
    assert not nnc.can_carry(np.bool_)
    assert not nnc.can_carry(np.complex64)
    assert not nnc.can_carry("not a dtype")
    assert nnc.can_carry(np.arange(3, dtype=np.int64))
    assert not nnc.can_carry(np.array([1 << 40], dtype=np.int64))
    off_grid = np.random.default_rng(0).standard_normal(40)
    assert nnc.can_carry(off_grid, nnc.CodingOptions())  # lossy float64
    assert not nnc.can_carry(off_grid, LOSSLESS)  # float64 on no grid stays in the topology
    assert nnc.can_carry(off_grid.astype(np.float32), LOSSLESS)  # raw float32


@pytest.mark.parametrize("array", [np.zeros(3, np.bool_), np.zeros(3, np.complex64), np.array([1 << 40])])
def test_other_dtypes_are_refused_naming_the_tensor(array: np.ndarray) -> None:
    with pytest.raises(UnsupportedError, match=r"'w'.*float32"):
        encode_model([("w", array)], b"", 0)


def test_bad_names() -> None:
    with pytest.raises(UnsupportedError, match="NUL"):
        encode_model([("a\0b", np.zeros(1, np.float32))], b"", 0)
    with pytest.raises(ValueError, match="two tensors"):
        encode_model([("a", np.zeros(1, np.float32)), ("a", np.zeros(1, np.float32))], b"", 0)
    with pytest.raises(ValueError, match="general_profile_idc"):
        encode_model([], b"", 0, general_profile_idc=2)


def test_oversized_tensor_is_refused_before_allocating() -> None:
    huge = np.broadcast_to(np.float32(0.1), (1 << 29,))  # 2 GiB view of one element, on no grid: raw
    with pytest.raises(UnsupportedError, match=r"'huge'.*does not fit"):
        encode_model([("huge", huge)], b"", 0, options=LOSSLESS)


def _ndu(name: str, dims: tuple[int, ...], payload: bytes, payload_type: PayloadType = PayloadType.NNR_PT_RAW_FLOAT):
    return CompressedDataUnit(NduHeader(payload_type, topology_elem_id=name, tensor_dimensions=dims), payload)


def test_raw_payload_length_is_checked() -> None:
    data = write_units([StartUnit(), ModelParameterSet(), _ndu("ok", (1,), bytes(4)), _ndu("w", (2, 3), bytes(20))])
    with pytest.raises(BitstreamError, match=r"20 bytes.*need 24") as info:
        decode_model(data, source="m.nnr")
    offset = read_units(data)[3].byte_offset
    assert (info.value.tensor, info.value.unit_index, info.value.byte_offset) == ("w", 3, offset)
    assert str(info.value).startswith(f"m.nnr: unit 3, byte offset {offset}, tensor 'w'")


def test_huge_declared_dimensions_do_not_allocate() -> None:
    data = write_units([StartUnit(), ModelParameterSet(), _ndu("w", (1 << 30, 1 << 30), bytes(8))])
    with pytest.raises(BitstreamError, match="need"):
        decode_model(data)
    data = write_units([StartUnit(), ModelParameterSet(), _ndu("w", (0, 1 << 35, 1 << 35), b"")])
    with pytest.raises(BitstreamError, match="cannot be represented"):
        decode_model(data)


def test_block_ndus_are_unsupported_for_now() -> None:
    names = ("fc.weight", "fc.bias")
    header = NduHeader(PayloadType.NNR_PT_BLOCK, topology_elem_id_list=names, tensor_dimensions=(2, 2))
    data = write_units([StartUnit(), ModelParameterSet(), CompressedDataUnit(header, b"\x00")])
    with pytest.raises(UnsupportedError, match=r"unit 2.*fc\.weight.*NNR_PT_BLOCK"):
        decode_model(data, source="x.nnr")


@pytest.mark.parametrize("payload_type", [PayloadType.NNR_PT_INT, PayloadType.NNR_PT_FLOAT])
def test_bad_cabac_payloads_are_located(payload_type: PayloadType) -> None:
    data = write_units([StartUnit(), ModelParameterSet(), _ndu("fc.weight", (2, 2), b"\x00\x01", payload_type)])
    with pytest.raises(BitstreamError, match=r"x.nnr: unit 2.*fc.weight") as info:
        decode_model(data, source="x.nnr")
    assert info.value.unit_index == 2 and info.value.tensor == "fc.weight"


def test_duplicate_tensor_in_stream() -> None:
    data = write_units([StartUnit(), ModelParameterSet(), _ndu("a", (1,), bytes(4)), _ndu("a", (1,), bytes(4))])
    with pytest.raises(BitstreamError, match="more than one NDU"):
        decode_model(data)


def test_stream_without_mps_or_with_two() -> None:
    with pytest.raises(BitstreamError, match=r"unit 1, byte offset 4: .*without a model parameter set"):
        decode_model(write_units([StartUnit()]))
    with pytest.raises(UnsupportedError, match="second model parameter set"):
        decode_model(write_units([StartUnit(), ModelParameterSet(), ModelParameterSet()]))
    with pytest.raises(UnsupportedError, match="second topology"):
        decode_model(write_units([StartUnit(), ModelParameterSet(), TopologyUnit(), TopologyUnit()]))


def test_indexed_names_resolve_through_reflist() -> None:
    mps = ModelParameterSet(mps_topology_indexed_reference_flag=True)
    tpl = TopologyUnit(TopologyStorageFormat.NNR_TPL_REFLIST, topology_data=encode_reference_list(["a", "b"]))
    ndu = CompressedDataUnit(
        NduHeader(PayloadType.NNR_PT_RAW_FLOAT, topology_elem_id_index=1, tensor_dimensions=(1,)),
        np.float32(2).tobytes(),
    )
    data = write_units([StartUnit(), mps, tpl, AggregateUnit((ndu,))])
    model = decode_model(data)
    assert list(model.tensors) == ["b"] and model.tensors["b"][0] == 2
    infos = inspect_units(data)
    assert [(i.unit_type, i.tensor, i.member) for i in infos[3:]] == [("NNR_AGG", None, None), ("NNR_NDU", "b", 0)]
    bad = write_units([StartUnit(), mps, AggregateUnit((ndu,))])
    with pytest.raises(BitstreamError, match="no valid REFLIST"):
        decode_model(bad)
    assert inspect_units(bad)[-1].tensor == "#1"


def test_inspect_units() -> None:
    data = encode_model(sample_tensors()[:2], b"topology", ONNX)
    infos = inspect_units(data, source="m.nnr")
    assert [i.unit_type for i in infos] == ["NNR_STR", "NNR_MPS", "NNR_TPL", "NNR_TPL", "NNR_NDU", "NNR_NDU"]
    assert [i.byte_offset for i in infos[:3]] == [0, 4, 12]
    assert infos[2].topology_storage_format == "integrity record"
    assert infos[3].topology_storage_format == "NNR_TPL_ONNX"
    ndu = infos[4]
    assert (ndu.tensor, ndu.shape, ndu.payload_type) == ("conv.weight", (4, 3, 2, 2), "NNR_PT_FLOAT")
    assert ndu.qp is not None and ndu.step == cabac.step_size(ndu.qp)
    assert ndu.bits_per_parameter == 8 * ndu.size / 48
    assert ndu.dq_flag is True and ndu.scan_order == 0
    assert [i.integrity for i in infos] == ["verified", "verified", "record", "verified", "verified", "verified"]
    assert sum(i.size for i in infos) == len(data)
    assert nnc.UnitInfo.__module__ == "nnrconv.nnc"
    reserved = write_units([StartUnit(), ModelParameterSet(), TopologyUnit(99, 0, b"?")])
    assert inspect_units(reserved)[2].topology_storage_format == "reserved (99)"
    assert {i.integrity for i in inspect_units(reserved)} == {"unverified"}


def test_looks_like_nnr() -> None:
    assert nnc.looks_like_nnr(encode_model([], b"", 0)[:4])
    assert nnc.looks_like_nnr(bytes.fromhex("80000006 0201"))
    assert not nnc.looks_like_nnr(b"\x08\x01\x12\x00")  # an ONNX protobuf
    assert not nnc.looks_like_nnr(b"")
    assert not nnc.looks_like_nnr(bytes.fromhex("00040601"))


def test_inflate_limits() -> None:
    bomb = zlib.compress(bytes(10_000))
    assert nnc.inflate_topology(bomb, limit=10_000) == bytes(10_000)
    with pytest.raises(BitstreamError, match="limit"):
        nnc.inflate_topology(bomb, limit=9_999)
    with pytest.raises(BitstreamError, match="truncated"):
        nnc.inflate_topology(bomb[:-3])
    with pytest.raises(BitstreamError, match="follow"):
        nnc.inflate_topology(bomb + b"x")
    tpl = TopologyUnit(ONNX, TopologyCompressionFormat.NNR_DFL, b"not zlib")
    with pytest.raises(BitstreamError, match="zlib") as info:
        decode_model(write_units([StartUnit(), ModelParameterSet(), tpl]), source="t.nnr")
    assert info.value.unit_index == 2 and str(info.value).startswith("t.nnr: unit 2")
    tpl = TopologyUnit(ONNX, 9, b"")
    with pytest.raises(UnsupportedError, match="compression_format 9"):
        decode_model(write_units([StartUnit(), ModelParameterSet(), tpl]))


def test_public_api() -> None:
    for name in nnc.__all__:
        obj = getattr(nnc, name)
        if isinstance(obj, type) or callable(obj):
            assert getattr(obj, "__module__", "nnrconv.nnc") == "nnrconv.nnc", name
    # public submodules (such as `cabac`) are not re-exported names
    public = {n for n in dir(nnc) if not n.startswith("_") and not isinstance(getattr(nnc, n), types.ModuleType)}
    assert public - set(nnc.__all__) == set(), "names leak from nnrconv.nnc"
    assert int(nnc.NnrUnitType.NNR_AGG) == 6 and int(TopologyStorageFormat.NNR_TPL_REFLIST) == 6
    assert int(nnc.DecompressedDataFormat.TENSOR_FLOAT64) == 9
    assert int(nnc.CompressedParameterTypes.NNR_CPT_BI) == 8


# -- corrupt streams ----------------------------------------------------------------------------


def small_stream() -> tuple[bytes, set[int]]:
    """A small valid stream and the offsets of its unit boundaries."""
    tensors = [("w", np.arange(6, dtype=np.float32).reshape(2, 3) + 1), ("b", np.array([0.5, -2.0], np.float32))]
    data = encode_model(tensors, b"topology text", ONNX, compress_topology=False)
    boundaries = {p.byte_offset + p.size for p in read_units(data)}
    return data, boundaries


def test_every_truncation_raises_bitstream_error() -> None:
    data, _ = small_stream()
    for cut in range(len(data)):
        prefix = data[:cut]
        if cut == 12:  # STR + MPS: a shorter but valid stream, which carries no record
            decode_model(prefix)
            continue
        with pytest.raises(BitstreamError):  # the integrity record counts the units: any cut shows
            decode_model(prefix)
    unverified = strip_record(data)
    for parsed in read_units(unverified)[1:]:  # without record, a cut at a unit boundary goes unnoticed
        decode_model(unverified[: parsed.byte_offset + parsed.size])


def test_random_bytes_raise_bitstream_error() -> None:
    rng = random.Random(2024)
    for _ in range(300):
        data = rng.randbytes(rng.randint(0, 80))
        with pytest.raises(BitstreamError):
            decode_model(data)


def test_random_bodies_after_a_valid_header_never_crash() -> None:
    head = encode_model([], b"", 0)
    rng = random.Random(99)
    for _ in range(500):
        body = rng.randbytes(rng.randint(1, 60))
        size = rng.choice([len(body) + 2, rng.randint(0, 80)])
        data = head + (size & 0x7FFF).to_bytes(2, "big") + body
        with contextlib.suppress(NNRConvError):
            decode_model(data)


def test_flipped_size_fields_raise_bitstream_error() -> None:
    data, _ = small_stream()
    offsets = [p.byte_offset for p in read_units(data)]
    for offset in offsets:
        for bit in range(16):
            corrupt = bytearray(data)
            corrupt[offset + bit // 8] ^= 0x80 >> (bit % 8)
            with pytest.raises(BitstreamError):
                decode_model(bytes(corrupt))


def test_random_mutations_raise_only_nnrconv_errors() -> None:
    data, _ = small_stream()
    rng = random.Random(5)
    for _ in range(1000):
        corrupt = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            corrupt[rng.randrange(len(corrupt))] = rng.randrange(256)
        with contextlib.suppress(NNRConvError):
            decode_model(bytes(corrupt))
