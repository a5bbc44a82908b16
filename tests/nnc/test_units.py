# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Unit syntax: NNCodec's real bytes, write/read round trips of every unit type, framing, order."""

from __future__ import annotations

import dataclasses
import random

import pytest

from nnrconv.core._errors import BitstreamError, NNRConvError, UnsupportedError
from nnrconv.nnc import (
    AggregateUnit,
    BitReader,
    BitWriter,
    Codebook,
    CompressedDataUnit,
    CompressedParameterTypes,
    DecompositionPerformanceEntry,
    DecompressedDataFormat,
    EntryPoint,
    LayerParameterSet,
    ModelParameterSet,
    NduHeader,
    NnrUnitHeader,
    NodeId,
    ParentNodeId,
    ParentNodeIdType,
    PayloadType,
    PruningPerformanceEntry,
    QuantizationMethod,
    QuantizationUnit,
    SparsificationPerformanceEntry,
    StartUnit,
    TopologyCompressionFormat,
    TopologyStorageFormat,
    TopologyUnit,
    UnificationPerformanceEntry,
    Unit,
    UnitContext,
    advance_context,
    decode_reference_list,
    encode_reference_list,
    encode_unit,
    read_units,
    write_units,
)

CTX1 = UnitContext(general_profile_idc=1)
CTX0 = UnitContext(general_profile_idc=0)
FLOAT = PayloadType.NNR_PT_FLOAT
BLOCK = PayloadType.NNR_PT_BLOCK
DC = CompressedParameterTypes.NNR_CPT_DC


def stream(*units: Unit, profile: int = 1, mps: ModelParameterSet | None = None) -> bytes:
    """A complete bitstream: start unit, an MPS, then `units`."""
    return write_units([StartUnit(profile), mps or ModelParameterSet(), *units])


def round_trip(unit: Unit, *, profile: int = 1, mps: ModelParameterSet | None = None) -> Unit:
    parsed = read_units(stream(unit, profile=profile, mps=mps))
    return parsed[2].unit


# -- real NNCodec bytes (fact sheet §1.3, §1.4, §1.12) ------------------------------------------


def test_start_unit_bytes() -> None:
    assert encode_unit(StartUnit(1), CTX1) == bytes.fromhex("00040201")
    assert encode_unit(StartUnit(0), CTX0) == bytes.fromhex("00040200")


def test_mps_bytes_both_profiles() -> None:
    expected = bytes.fromhex("0008068100400080")
    assert encode_unit(ModelParameterSet(), CTX1) == expected
    assert encode_unit(ModelParameterSet(), CTX0) == expected


def test_mps_parent_signalling_sets_bit() -> None:
    data = encode_unit(ModelParameterSet(mps_parent_signalling_enabled_flag=True), CTX1)
    assert data[3:5] == bytes.fromhex("8108")


def test_tpl_bytes() -> None:
    assert encode_unit(TopologyUnit(), CTX1) == bytes.fromhex("00060e000000")


def _layer_weight_header(profile: int) -> NduHeader:
    return NduHeader(
        FLOAT,
        topology_elem_id="layer.weight",
        node_id=NodeId(0, 0, 0) if profile == 1 else None,
        dq_flag=True,
        tensor_dimensions=(2, 3),
        cabac_unary_length_minus1=10,
    )


@pytest.mark.parametrize(
    ("profile", "tail"),
    [(1, "d0 41 c1 20 a0 c2 a0 80"), (0, "70 48 28 30 a0 80")],
)
def test_ndu_header_bytes(profile: int, tail: str) -> None:
    ctx = UnitContext(general_profile_idc=profile)
    w = BitWriter()
    CompressedDataUnit(_layer_weight_header(profile), b"").write(w, ctx)
    assert w.getvalue() == bytes.fromhex("16 09") + b"layer.weight\0" + bytes.fromhex(tail)
    # and the unit as a whole, with a stand-in CABAC payload of 21 bytes, is NNCodec's size 0x2e
    if profile == 1:
        assert encode_unit(CompressedDataUnit(_layer_weight_header(1), b"\x55" * 21), ctx)[:2] == b"\x00\x2e"


def test_real_stream_prefix_parses() -> None:
    data = bytes.fromhex("00040201 0008068100400080 00060e000000")
    units = [p.unit for p in read_units(data)]
    assert units == [StartUnit(1), ModelParameterSet(), TopologyUnit()]


# -- round trips --------------------------------------------------------------------------------

SPM = (
    SparsificationPerformanceEntry(0.5, 0.25, 0.75, 3, (0.5, 1.0)),
    SparsificationPerformanceEntry(0.125, 1.0, 0.0),
)
PPM = (PruningPerformanceEntry(0.5, 0.875, 1, (0.25,)),)
UPM = (
    UnificationPerformanceEntry(3, (4, 5), 2, (8,), 1, (), 0.5, 0.25, 2, (1.0, 0.5)),
    UnificationPerformanceEntry(0, (), 0, (), 3, (2, 2), 0.0, 1.0),
)
DPM = (DecompositionPerformanceEntry(0.5, 0.75, 0.125, tuple(float(i) for i in range(300))),)

MPS_CASES = {
    "default": (ModelParameterSet(), 1),
    "profile0": (ModelParameterSet(), 0),
    "no-quantization": (
        ModelParameterSet(
            mps_quantization_method_flags=QuantizationMethod(0), mps_qp_density=None, mps_quantization_parameter=None
        ),
        1,
    ),
    "codebook-qp": (
        ModelParameterSet(
            mps_quantization_method_flags=QuantizationMethod.NNR_QCB | QuantizationMethod.NNR_QSU,
            mps_qp_density=7,
            mps_quantization_parameter=-4096,
        ),
        0,
    ),
    "indexed-no-carriage": (
        ModelParameterSet(topology_carriage_flag=False, mps_topology_indexed_reference_flag=True),
        1,
    ),
    "base-model": (ModelParameterSet(base_model_id="resnet-ä"), 1),
    "validation": (ModelParameterSet(validation_set_performance=0.75, performance_metric_type="top-1"), 1),
    "metric-valid": (
        ModelParameterSet(metric_type_performance_map_valid_flag=True, performance_metric_type=""),
        1,
    ),
    "parent": (ModelParameterSet(mps_parent_signalling_enabled_flag=True, nnr_pre_flag=True), 1),
    "all-maps": (
        ModelParameterSet(
            sparsification_performance_map=SPM,
            pruning_performance_map=PPM,
            unification_performance_map=UPM,
            decomposition_performance_map=DPM,
            base_model_id="b",
            validation_set_performance=-1.5,
            performance_metric_type="mse",
        ),
        1,
    ),
    "empty-maps": (
        ModelParameterSet(
            sparsification_performance_map=(),
            pruning_performance_map=(),
            unification_performance_map=(),
            decomposition_performance_map=(),
        ),
        0,
    ),
    "header-flags": (ModelParameterSet(independently_decodable_flag=False, partial_data_counter=200), 1),
}


@pytest.mark.parametrize("case", MPS_CASES)
def test_mps_round_trip(case: str) -> None:
    mps, profile = MPS_CASES[case]
    units = read_units(write_units([StartUnit(profile), mps]))
    assert units[1].unit == mps


def test_mps_profile_0_refuses_profile_1_fields() -> None:
    with pytest.raises(ValueError, match="profile 1"):
        encode_unit(ModelParameterSet(base_model_id="x"), CTX0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mps_qp_density": None},
        {"mps_quantization_method_flags": QuantizationMethod(0)},
        {"nnr_pre_flag": True},
        {"validation_set_performance": 1.0},
        {"performance_metric_type": "x"},
    ],
)
def test_mps_rejects_inconsistent_fields(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ModelParameterSet(**kwargs)  # type: ignore[arg-type]


LPS_CASES = [
    LayerParameterSet(),
    LayerParameterSet(lps_self_contained_flag=False, lps_qp_density=3, lps_quantization_parameter=-38),
    LayerParameterSet(
        lps_quantization_method_flags=QuantizationMethod(0), lps_qp_density=None, lps_quantization_parameter=None
    ),
    LayerParameterSet(sparsification_performance_map=SPM, pruning_performance_map=PPM, unification_performance_map=UPM),
    LayerParameterSet(partial_data_counter=7),
]


@pytest.mark.parametrize("lps", LPS_CASES)
def test_lps_round_trip(lps: LayerParameterSet) -> None:
    assert round_trip(lps) == lps


TPL_CASES = [
    TopologyUnit(),
    TopologyUnit(TopologyStorageFormat.NNR_TPL_ONNX, TopologyCompressionFormat.NNR_PT_RAW, b"\x08\x00binary\x00"),
    TopologyUnit(TopologyStorageFormat.NNR_TPL_NNEF, TopologyCompressionFormat.NNR_DFL, b"x\x9c\x00\x01"),
    TopologyUnit(TopologyStorageFormat.NNR_TPL_PRUN, TopologyCompressionFormat.NNR_PT_RAW, b"\x01\x02"),
    TopologyUnit(TopologyStorageFormat.NNR_TPL_PRUN, TopologyCompressionFormat.NNR_PT_RAW, b""),
    TopologyUnit(200, 77, b"reserved codes are carried verbatim"),
    TopologyUnit(TopologyStorageFormat.NNR_TPL_REFLIST, topology_data=encode_reference_list(["a", "b.ü", ""])),
]


@pytest.mark.parametrize("tpl", TPL_CASES)
def test_tpl_round_trip(tpl: TopologyUnit) -> None:
    assert round_trip(tpl) == tpl


def test_tpl_requires_terminator() -> None:
    good = stream(TopologyUnit(TopologyStorageFormat.NNR_TPL_ONNX, topology_data=b"abc"))
    bad = good[:-1] + b"x"
    with pytest.raises(BitstreamError, match="terminator") as info:
        read_units(bad, source="model.nnr")
    assert info.value.unit_index == 2
    assert str(info.value).startswith("model.nnr: unit 2")


@pytest.mark.parametrize(
    "qnt",
    [QuantizationUnit(), QuantizationUnit(3, 1, b"codebook\x00data"), QuantizationUnit(partial_data_counter=0)],
)
def test_qnt_round_trip(qnt: QuantizationUnit) -> None:
    assert round_trip(qnt) == qnt


def test_reference_list_helpers() -> None:
    names = ("conv.weight", "conv.bias", "ß")
    data = encode_reference_list(names)
    assert decode_reference_list(data) == names
    with pytest.raises(ValueError, match="at least 2"):
        encode_reference_list(["only"])
    with pytest.raises(BitstreamError):
        decode_reference_list(data[:-3])


# -- NDU header ---------------------------------------------------------------------------------

CB = Codebook(3, (-7, -2, 0, 5, 100), 2)
CB_H = Codebook(0, (1,), 0)
BASE = {"topology_elem_id": "t", "tensor_dimensions": (4, 3), "cabac_unary_length_minus1": 10}

NDU_CASES: dict[str, tuple[NduHeader, UnitContext]] = {
    "raw-1d": (NduHeader(PayloadType.NNR_PT_RAW_FLOAT, topology_elem_id="b", tensor_dimensions=(7,)), CTX1),
    "raw-4d-profile0": (
        NduHeader(PayloadType.NNR_PT_RAW_FLOAT, topology_elem_id="w", tensor_dimensions=(2, 3, 4, 5)),
        CTX0,
    ),
    "int-dq": (NduHeader(PayloadType.NNR_PT_INT, dq_flag=True, **BASE), CTX1),  # type: ignore[arg-type]
    "float-codebook": (NduHeader(FLOAT, codebook=CB, **BASE), CTX0),  # type: ignore[arg-type]
    "float-unicode-name": (NduHeader(FLOAT, topology_elem_id="Ä€😀", tensor_dimensions=(1,)), CTX1),
    "node-id": (NduHeader(FLOAT, node_id=NodeId(3, 40, 2), **BASE), CTX1),  # type: ignore[arg-type]
    "decompressed-format": (
        NduHeader(FLOAT, nnr_decompressed_data_format=DecompressedDataFormat.TENSOR_FLOAT16, **BASE),  # type: ignore[arg-type]
        CTX1,
    ),
    "no-unary": (NduHeader(FLOAT, topology_elem_id="t", tensor_dimensions=(4, 3)), CTX1),
    "zero-dims": (NduHeader(FLOAT, topology_elem_id="t", tensor_dimensions=()), CTX1),
    "shift": (NduHeader(FLOAT, first_tensor_dimension_shift=2, **BASE), CTX1),  # type: ignore[arg-type]
    "indexed": (
        NduHeader(FLOAT, topology_elem_id_index=300, tensor_dimensions=(5, 5)),
        UnitContext(1, mps_topology_indexed_reference_flag=True),
    ),
    "block-list": (
        NduHeader(
            BLOCK,
            topology_elem_id_list=("c.weight", "c.bias"),
            compressed_parameter_types=CompressedParameterTypes.NNR_CPT_BI | CompressedParameterTypes.NNR_CPT_LS,
            tensor_dimensions=(8, 3, 3, 3),
            dq_flag=True,
        ),
        CTX1,
    ),
    "block-index-list": (
        NduHeader(BLOCK, topology_elem_id_index_list=(0, 5, 9), tensor_dimensions=(2, 2)),
        UnitContext(0, mps_topology_indexed_reference_flag=True),
    ),
    "block-dc-codebooks": (
        NduHeader(
            BLOCK,
            topology_elem_id_list=("g", "h"),
            codebook=CB,
            codebook_h=CB_H,
            compressed_parameter_types=DC,
            decomposition_rank=4,
            g_number_of_rows=16,
            tensor_dimensions=(16, 32),
        ),
        CTX1,
    ),
    "parent-id-with-node": (
        NduHeader(FLOAT, node_id=NodeId(1, 2, 3), parent_node_id=ParentNodeId(parent_device_id=5), **BASE),  # type: ignore[arg-type]
        UnitContext(1, mps_parent_signalling_enabled_flag=True),
    ),
    "parent-id-without-node": (
        NduHeader(
            FLOAT,
            parent_node_id=ParentNodeId(
                temporal_context_modeling_flag=True, parent_device_id=0, parameter_id=9, put_node_depth=1
            ),
            **BASE,  # type: ignore[arg-type]
        ),
        UnitContext(1, mps_parent_signalling_enabled_flag=True),
    ),
    "parent-sha256": (
        NduHeader(
            FLOAT,
            parent_node_id=ParentNodeId(
                ParentNodeIdType.ICNN_NDU_PL_SHA256, parent_device_id=None, parent_node_payload_sha256=bytes(range(32))
            ),
            **BASE,  # type: ignore[arg-type]
        ),
        UnitContext(1, mps_parent_signalling_enabled_flag=True),
    ),
    "parent-sha512": (
        NduHeader(
            PayloadType.NNR_PT_INT,
            parent_node_id=ParentNodeId(
                ParentNodeIdType.ICNN_NDU_PL_SHA512, True, None, parent_node_payload_sha512=bytes(range(64))
            ),
            **BASE,  # type: ignore[arg-type]
        ),
        UnitContext(1, mps_parent_signalling_enabled_flag=True),
    ),
    "parent-signalling-but-absent": (
        NduHeader(FLOAT, **BASE),  # type: ignore[arg-type]
        UnitContext(1, mps_parent_signalling_enabled_flag=True),
    ),
    "entry-points": (
        NduHeader(
            FLOAT,
            topology_elem_id="t",
            tensor_dimensions=(40, 9),
            scan_order=1,
            cabac_entry_point_list=(EntryPoint(100, 7), EntryPoint(180, 255), EntryPoint(181, 0), EntryPoint(400, 1)),
        ),
        CTX1,
    ),
    "entry-points-dq": (
        NduHeader(
            FLOAT,
            topology_elem_id="t",
            dq_flag=True,
            tensor_dimensions=(33, 2),
            scan_order=4,
            cabac_entry_point_list=(),
        ),
        CTX0,
    ),
    "entry-points-dq-many": (
        NduHeader(
            PayloadType.NNR_PT_INT,
            topology_elem_id="t",
            dq_flag=True,
            tensor_dimensions=(100, 2),
            scan_order=2,
            cabac_entry_point_list=tuple(EntryPoint(50 * j * j, j, j % 8) for j in range(1, 7)),
        ),
        CTX0,
    ),
    "entry-points-block-dc": (
        NduHeader(
            BLOCK,
            topology_elem_id_list=("g", "h"),
            compressed_parameter_types=DC,
            decomposition_rank=9,
            g_number_of_rows=20,
            tensor_dimensions=(20, 6),
            scan_order=1,
            cabac_entry_point_list=(EntryPoint(1, 1), EntryPoint(2, 2), EntryPoint(3, 3)),
        ),
        CTX1,
    ),
}


@pytest.mark.parametrize("case", NDU_CASES)
def test_ndu_round_trip(case: str) -> None:
    header, ctx = NDU_CASES[case]
    unit = CompressedDataUnit(header, b"\x01\x02payload", partial_data_counter=None)
    w = BitWriter()
    unit.write(w, ctx)
    data = w.getvalue()
    r = BitReader(data)
    common = NnrUnitHeader.read(r)
    back = CompressedDataUnit.read(r, ctx, common)
    assert back == unit
    assert bytes(back.payload) == b"\x01\x02payload"


def test_ndu_round_trip_through_stream() -> None:
    mps = ModelParameterSet(mps_parent_signalling_enabled_flag=True)
    header, _ = NDU_CASES["parent-id-without-node"]
    unit = CompressedDataUnit(header, b"\xaa" * 3, independently_decodable_flag=False, partial_data_counter=1)
    assert round_trip(unit, mps=mps) == unit


def test_entry_point_offsets_are_second_differences() -> None:
    header = NduHeader(
        FLOAT,
        topology_elem_id="",
        tensor_dimensions=(24, 2),
        scan_order=1,  # blocks of 8 rows: 3 block rows, 2 entry points
        cabac_entry_point_list=(EntryPoint(10, 0), EntryPoint(30, 0)),
    )
    w = BitWriter()
    header.write(w, CTX0)
    r = BitReader(w.getvalue())
    r.u(8), r.st(), r.u(1), r.u(1), r.u(1), r.u(1), r.u(4)  # type, name, codebook, dq, dims, unary, CPT
    r.ue(1), r.ue(7), r.ue(7), r.u(4)  # dims, scan order
    assert (r.u(8), r.ue(11)) == (0, 10)  # first: distance 10
    assert (r.u(8), r.ie(7)) == (0, 10)  # second: distance 20, coded as 20 - 10


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"cabac_entry_point_list": (EntryPoint(1, 0),)}, "needs 2 entry points"),
        ({"cabac_entry_point_list": (EntryPoint(5, 0), EntryPoint(4, 0))}, "must not decrease"),
        ({"cabac_entry_point_list": (EntryPoint(5, 0, 3), EntryPoint(6, 0))}, "dq_state"),
    ],
)
def test_entry_point_validation(changes: dict[str, object], error: str) -> None:
    header = NduHeader(FLOAT, topology_elem_id="t", tensor_dimensions=(24, 2), scan_order=1)
    with pytest.raises(ValueError, match=error):
        dataclasses.replace(header, **changes).write(BitWriter(), CTX0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("header", "ctx", "error"),
    [
        (NduHeader(FLOAT, topology_elem_id_index=1, tensor_dimensions=(1,)), CTX1, "by index"),
        (NduHeader(FLOAT, topology_elem_id="x", tensor_dimensions=(1,)), UnitContext(1, True), "by index"),
        (NduHeader(FLOAT, topology_elem_id="x", node_id=NodeId(), tensor_dimensions=(1,)), CTX0, "profile 1"),
        (
            NduHeader(FLOAT, topology_elem_id="x", parent_node_id=ParentNodeId(), tensor_dimensions=(1,)),
            CTX1,
            "parent",
        ),
    ],
)
def test_ndu_header_checks_context(header: NduHeader, ctx: UnitContext, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        header.write(BitWriter(), ctx)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"topology_elem_id": "a", "topology_elem_id_index": 1},
        {"topology_elem_id": "a", "codebook": CB, "nnr_compressed_data_unit_payload_type": PayloadType.NNR_PT_INT},
        {
            "topology_elem_id": "a",
            "dq_flag": True,
            "nnr_compressed_data_unit_payload_type": PayloadType.NNR_PT_RAW_FLOAT,
        },
        {"topology_elem_id": "a", "compressed_parameter_types": DC},
        {"topology_elem_id": "a", "input_parameters_present_flag": False, "tensor_dimensions": (1,)},
        {"topology_elem_id": "a", "tensor_dimensions": (3,), "scan_order": 1},
        {"topology_elem_id": "a", "tensor_dimensions": (3, 3), "cabac_entry_point_list": (EntryPoint(1, 1),)},
    ],
)
def test_ndu_header_rejects_inconsistent_fields(kwargs: dict[str, object]) -> None:
    kwargs.setdefault("nnr_compressed_data_unit_payload_type", FLOAT)
    with pytest.raises(ValueError):
        NduHeader(**kwargs)  # type: ignore[arg-type]


def test_codebook_validation_and_fields() -> None:
    assert CB.codebook_size == 5 and CB.codebook_center_offset == 0
    assert Codebook(0, (1, 2, 3, 4), 0).codebook_center_offset == -2
    with pytest.raises(ValueError):
        Codebook(0, (1, 1), 0)
    with pytest.raises(ValueError):
        Codebook(0, (1, 2), 2)
    with pytest.raises(ValueError):
        Codebook(16, (1,), 0)


def test_out_of_band_dimensions_are_unsupported() -> None:
    header = NduHeader(FLOAT, topology_elem_id="t", input_parameters_present_flag=False)
    with pytest.raises(UnsupportedError, match="tensor_dimensions"):
        header.write(BitWriter(), CTX1)
    # a hand-made stream with input_parameters_present_flag = 0
    w = BitWriter()
    w.u(8, 0x16)
    w.u(5, FLOAT)
    w.u(3, 0)
    w.st("t")
    w.u(1, 0)  # node_id_present_flag
    w.u(2, 0)  # codebook_present_flag, dq_flag
    w.byte_alignment()
    body = w.getvalue()
    data = stream() + (len(body) + 2).to_bytes(2, "big") + body
    with pytest.raises(UnsupportedError, match="unit 2"):
        read_units(data)


def test_dimension_mapping_is_unsupported() -> None:
    header = NduHeader(FLOAT, topology_elem_id_list=("a", "b"), tensor_dimensions=(2,))
    with pytest.raises(UnsupportedError, match="topology_tensor_dimension_mapping"):
        header.write(BitWriter(), CTX1)


def test_non_block_dc_entry_points_are_unsupported() -> None:
    header = NduHeader(
        FLOAT,
        topology_elem_id="g",
        compressed_parameter_types=DC,
        decomposition_rank=2,
        g_number_of_rows=8,
        tensor_dimensions=(8, 8),
        scan_order=1,
    )
    with pytest.raises(UnsupportedError, match="G or H"):
        header.write(BitWriter(), CTX1)


# -- framing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "long_form"), [(32765, False), (32766, True), (40000, True), (10, False)])
def test_size_field_switches_at_32768(body: int, long_form: bool) -> None:
    # TPL body = 1 (unit header) + 2 (formats) + data + 1 (terminator)
    tpl = TopologyUnit(TopologyStorageFormat.NNR_TPL_ONNX, topology_data=b"\x07" * (body - 4))
    unit_bytes = encode_unit(tpl, CTX1)
    assert bool(unit_bytes[0] & 0x80) == long_form
    field = 4 if long_form else 2
    assert len(unit_bytes) == body + field
    assert int.from_bytes(unit_bytes[:field], "big") & 0x7FFFFFFF == body + field
    parsed = read_units(stream(tpl))
    assert parsed[2].unit == tpl and parsed[2].size == body + field


def test_long_form_of_a_small_unit_is_accepted() -> None:
    body = bytes.fromhex("0e 00 00 00")
    data = bytes.fromhex("00040201 0008068100400080") + (0x80000000 | (len(body) + 4)).to_bytes(4, "big") + body
    assert read_units(data)[2].unit == TopologyUnit()


def test_aggregate_nesting_round_trip() -> None:
    ndu = CompressedDataUnit(
        NduHeader(PayloadType.NNR_PT_RAW_FLOAT, topology_elem_id="x", tensor_dimensions=(1,)), b"\0" * 4
    )
    inner = AggregateUnit((ndu, QuantizationUnit()))
    outer = AggregateUnit((TopologyUnit(), inner, ndu), independently_decodable_flag=False)
    data = stream(outer, LayerParameterSet())
    parsed = read_units(data)
    assert parsed[2].unit == outer
    assert parsed[3].unit == LayerParameterSet()
    members = parsed[2].members
    assert [m.index for m in members] == [0, 1, 2]
    assert members[0].byte_offset == parsed[2].byte_offset + 3
    assert [m.unit for m in members[1].members] == [ndu, QuantizationUnit()]
    assert sum(m.size for m in members) == parsed[2].size - 3


def test_aggregate_carries_the_mps_context() -> None:
    mps = ModelParameterSet(mps_topology_indexed_reference_flag=True)
    ndu = CompressedDataUnit(NduHeader(FLOAT, topology_elem_id_index=2, tensor_dimensions=(1,)), b"")
    data = write_units([StartUnit(0), AggregateUnit((mps, ndu))])
    assert read_units(data)[1].unit == AggregateUnit((mps, ndu))
    assert advance_context(CTX1, AggregateUnit((mps,))).mps_topology_indexed_reference_flag


def test_aggregate_member_running_past_its_aggregate() -> None:
    data = bytearray(stream(AggregateUnit((TopologyUnit(),))))
    agg = 12
    data[agg + 3 + 1] = 0x07  # member size 6 -> 7, one byte past the aggregate's end
    with pytest.raises(BitstreamError, match="aggregate") as info:
        read_units(bytes(data))
    assert info.value.unit_index == 2 and info.value.byte_offset == agg + 3


# -- order and unit errors ----------------------------------------------------------------------


def test_order_rules_on_read() -> None:
    str_ = encode_unit(StartUnit(1), CTX1)
    mps = encode_unit(ModelParameterSet(), CTX1)
    ndu = encode_unit(
        CompressedDataUnit(NduHeader(PayloadType.NNR_PT_RAW_FLOAT, topology_elem_id="x", tensor_dimensions=(0,))), CTX1
    )
    with pytest.raises(BitstreamError, match="start unit") as info:
        read_units(mps + str_)
    assert (info.value.unit_index, info.value.byte_offset) == (0, 0)
    with pytest.raises(BitstreamError, match="precedes") as info:
        read_units(str_ + ndu + mps)
    assert (info.value.unit_index, info.value.byte_offset) == (1, 4)
    with pytest.raises(BitstreamError, match="only be the first") as info:
        read_units(str_ + mps + str_)
    assert info.value.unit_index == 2
    with pytest.raises(BitstreamError, match="precedes"):
        read_units(str_ + encode_unit(AggregateUnit((CompressedDataUnit(NDU_CASES["raw-1d"][0], b"\0" * 28),)), CTX1))
    with pytest.raises(BitstreamError, match="empty"):
        read_units(b"")


def test_order_rules_on_write() -> None:
    with pytest.raises(ValueError, match="start unit"):
        write_units([ModelParameterSet()])
    with pytest.raises(ValueError, match="precedes"):
        write_units([StartUnit(), AggregateUnit((CompressedDataUnit(NDU_CASES["raw-1d"][0]),))])
    with pytest.raises(ValueError, match="first"):
        write_units([StartUnit(), StartUnit()])


def test_reserved_unit_type() -> None:
    data = stream() + bytes([0x00, 0x03, 7 << 2])
    with pytest.raises(BitstreamError, match="reserved") as info:
        read_units(data)
    assert info.value.unit_index == 2 and info.value.byte_offset == 12


def test_unit_longer_than_its_syntax() -> None:
    # an MPS whose size says one byte more than its syntax uses
    data = bytes.fromhex("00040201 0009068100400080 00")
    with pytest.raises(BitstreamError, match="ends 1 bytes before") as info:
        read_units(data)
    assert info.value.unit_index == 1


def test_unit_shorter_than_its_syntax() -> None:
    data = bytes.fromhex("00040201 00070681004000")
    with pytest.raises(BitstreamError, match="end of data") as info:
        read_units(data)
    assert info.value.unit_index == 1


@pytest.mark.parametrize("size", [0, 1, 2])
def test_size_too_small_for_its_own_field(size: int) -> None:
    with pytest.raises(BitstreamError, match="cannot hold"):
        read_units(size.to_bytes(2, "big") + b"\x02\x01")


def test_size_past_the_end() -> None:
    with pytest.raises(BitstreamError, match="runs past") as info:
        read_units(bytes.fromhex("00050201"), source="f.nnr")
    expected = "f.nnr: unit 0, byte offset 0: nnr_unit_size 5 runs past the end of the data (4 bytes left)"
    assert str(info.value) == expected


def test_mutated_rich_stream_raises_only_nnrconv_errors() -> None:
    """Every syntax path (maps, parent ids, codebooks, entry points, aggregates) under mutation."""
    ndus = [
        CompressedDataUnit(NDU_CASES[key][0], b"\x01\x02\x03")
        for key in ("parent-id-with-node", "parent-id-without-node", "parent-sha256", "parent-sha512", "node-id")
    ]
    blocks = [
        CompressedDataUnit(NDU_CASES[key][0], b"\x04")
        for key in ("block-dc-codebooks", "entry-points", "entry-points-block-dc", "block-list", "float-codebook")
    ]
    mps = ModelParameterSet(
        sparsification_performance_map=SPM,
        unification_performance_map=UPM,
        decomposition_performance_map=(),
        mps_parent_signalling_enabled_flag=True,
        base_model_id="b",
        validation_set_performance=0.5,
        performance_metric_type="m",
    )
    lps = LPS_CASES[3]
    agg = AggregateUnit((TopologyUnit(2, 1, b"x\x9c"), QuantizationUnit(1, 2, b"q"), lps))
    data = write_units([StartUnit(1), mps, *ndus, lps, agg, *blocks])
    assert len(read_units(data)) == 14
    rng = random.Random(11)
    outcomes: set[str] = set()
    for _ in range(1500):
        corrupt = bytearray(data)
        if rng.random() < 0.5:
            for _ in range(rng.randint(1, 4)):
                corrupt[rng.randrange(len(corrupt))] ^= 1 << rng.randrange(8)
        else:
            start = rng.randrange(len(corrupt))
            del corrupt[start : start + rng.randint(1, 8)]
        try:
            read_units(bytes(corrupt))
            outcomes.add("ok")
        except NNRConvError as exc:
            outcomes.add(type(exc).__name__)
    assert "BitstreamError" in outcomes
