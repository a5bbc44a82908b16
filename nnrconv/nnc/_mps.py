# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Model and layer parameter sets and their performance maps (ISO/IEC 15938-17 clause 7.3).

NOTE: NNCodec loops `count - 1` times over the entries of every performance map and bounds the
unification map's class-accuracy loop by the class *bitmask*; the fact sheet calls both quirks.
We follow the plain reading instead: a map's count field is the number of entries that follow, and
each entry carries one accuracy per class. NNCodec never writes a performance map, so no stream in
the wild depends on the difference. The inner `count - 1` dimension loops of the unification map
are kept as documented (the last dimension is implied), so those counts are stored explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self, TypeAlias, TypeVar

from nnrconv.nnc._bitio import BitReader, BitWriter
from nnrconv.nnc._enums import NnrUnitType, QuantizationMethod
from nnrconv.nnc._units import NnrUnit, NnrUnitHeader, UnitContext

__all__ = [
    "DecompositionPerformanceEntry",
    "LayerParameterSet",
    "ModelParameterSet",
    "PruningPerformanceEntry",
    "SparsificationPerformanceEntry",
    "UnificationPerformanceEntry",
]

_FLT_BITS = 32
# Shortest ue(7) code: every entry read from a count costs at least this many bits.
_MIN_UE7_BITS = 8


def _write_classes(w: BitWriter, count_bits: int, bitmask: int | None, accuracies: tuple[float, ...]) -> None:
    """Write `*_count_classes`, the optional `*_class_bitmask` ue(7) and one flt per class."""
    w.u(count_bits, len(accuracies))
    if bitmask is not None:
        w.ue(7, bitmask)
    for accuracy in accuracies:
        w.flt(accuracy)


def _read_classes(r: BitReader, count_bits: int, with_bitmask: bool) -> tuple[int | None, tuple[float, ...]]:
    count = r.u(count_bits)
    bitmask = r.ue(7) if with_bitmask else None
    r.require_bits(count * _FLT_BITS, f"{count} class accuracies")
    return bitmask, tuple(r.flt() for _ in range(count))


def _read_count(r: BitReader, what: str, min_bits_each: int) -> int:
    count = r.u(8)
    r.require_bits(count * min_bits_each, f"{count} {what}")
    return count


# ISO/IEC 15938-17, sparsification_performance_map(): one entry per threshold.
@dataclass(frozen=True, slots=True)
class SparsificationPerformanceEntry:
    """Accuracy of the model when sparsified with one threshold.

    Attributes:
        sparsification_threshold: flt(32).
        non_zero_ratio: flt(32), fraction of weights left non-zero.
        spm_nn_accuracy: flt(32), overall accuracy.
        spm_class_bitmask: ue(7).
        spm_nn_class_accuracy: flt(32) per class; its length is `spm_count_classes`, u(8).
    """

    sparsification_threshold: float
    non_zero_ratio: float
    spm_nn_accuracy: float
    spm_class_bitmask: int = 0
    spm_nn_class_accuracy: tuple[float, ...] = ()

    def write(self, w: BitWriter) -> None:
        """Write one entry."""
        w.flt(self.sparsification_threshold)
        w.flt(self.non_zero_ratio)
        w.flt(self.spm_nn_accuracy)
        _write_classes(w, 8, self.spm_class_bitmask, self.spm_nn_class_accuracy)

    @classmethod
    def read(cls, r: BitReader) -> Self:
        """Read one entry."""
        threshold, ratio, accuracy = r.flt(), r.flt(), r.flt()
        bitmask, classes = _read_classes(r, 8, True)
        return cls(threshold, ratio, accuracy, bitmask or 0, classes)


# ISO/IEC 15938-17, pruning_performance_map(): one entry per pruning ratio.
@dataclass(frozen=True, slots=True)
class PruningPerformanceEntry:
    """Accuracy of the model when pruned with one ratio.

    Attributes:
        pruning_ratio: flt(32).
        ppm_nn_accuracy: flt(32).
        ppm_class_bitmask: ue(7).
        ppm_nn_class_accuracy: flt(32) per class (`ppm_count_classes`, u(8)).
    """

    pruning_ratio: float
    ppm_nn_accuracy: float
    ppm_class_bitmask: int = 0
    ppm_nn_class_accuracy: tuple[float, ...] = ()

    def write(self, w: BitWriter) -> None:
        """Write one entry."""
        w.flt(self.pruning_ratio)
        w.flt(self.ppm_nn_accuracy)
        _write_classes(w, 8, self.ppm_class_bitmask, self.ppm_nn_class_accuracy)

    @classmethod
    def read(cls, r: BitReader) -> Self:
        """Read one entry."""
        ratio, accuracy = r.flt(), r.flt()
        bitmask, classes = _read_classes(r, 8, True)
        return cls(ratio, accuracy, bitmask or 0, classes)


def _write_dims(w: BitWriter, count: int, dims: tuple[int, ...], count_bits: int | None, dim_bits: int | None) -> None:
    """Write a dimension count and its `count - 1` explicit dimensions (ue codes when bits is None)."""
    if len(dims) != max(count - 1, 0):
        raise ValueError(f"a dimension count of {count} needs {max(count - 1, 0)} explicit dimensions, got {dims!r}")
    if count_bits is None:
        w.ue(1, count)
    else:
        w.u(count_bits, count)
    for dim in dims:
        if dim_bits is None:
            w.ue(7, dim)
        else:
            w.u(dim_bits, dim)


def _read_dims(r: BitReader, count_bits: int | None, dim_bits: int | None) -> tuple[int, tuple[int, ...]]:
    count = r.ue(1) if count_bits is None else r.u(count_bits)
    explicit = max(count - 1, 0)
    r.require_bits(explicit * (dim_bits or _MIN_UE7_BITS), f"{explicit} dimensions")
    if dim_bits is None:
        return count, tuple(r.ue(7) for _ in range(explicit))
    return count, tuple(r.u(dim_bits) for _ in range(explicit))


# ISO/IEC 15938-17, unification_performance_map(): one entry per unification threshold.
@dataclass(frozen=True, slots=True)
class UnificationPerformanceEntry:
    """Accuracy of the model when weights are unified with one threshold.

    The dimension lists hold the `count - 1` dimensions coded explicitly; the counts are stored
    because the number of coded dimensions is one less than the count.

    Attributes:
        count_reshaped_tensor_dimension: ue(1).
        reshaped_tensor_dimensions: ue(7) each, `count_reshaped_tensor_dimension - 1` of them.
        count_super_block_dimension: u(8).
        super_block_dimensions: u(8) each.
        count_block_dimension: u(8).
        block_dimensions: u(8) each.
        unification_threshold: flt(32).
        upm_nn_accuracy: flt(32).
        upm_class_bitmask: ue(7).
        upm_nn_class_accuracy: flt(32) per class (`upm_count_classes`, u(8)).
    """

    count_reshaped_tensor_dimension: int
    reshaped_tensor_dimensions: tuple[int, ...]
    count_super_block_dimension: int
    super_block_dimensions: tuple[int, ...]
    count_block_dimension: int
    block_dimensions: tuple[int, ...]
    unification_threshold: float
    upm_nn_accuracy: float
    upm_class_bitmask: int = 0
    upm_nn_class_accuracy: tuple[float, ...] = ()

    def write(self, w: BitWriter) -> None:
        """Write one entry."""
        _write_dims(w, self.count_reshaped_tensor_dimension, self.reshaped_tensor_dimensions, None, None)
        w.byte_alignment()
        _write_dims(w, self.count_super_block_dimension, self.super_block_dimensions, 8, 8)
        _write_dims(w, self.count_block_dimension, self.block_dimensions, 8, 8)
        w.flt(self.unification_threshold)
        w.flt(self.upm_nn_accuracy)
        _write_classes(w, 8, self.upm_class_bitmask, self.upm_nn_class_accuracy)

    @classmethod
    def read(cls, r: BitReader) -> Self:
        """Read one entry."""
        reshaped = _read_dims(r, None, None)
        r.byte_alignment()
        super_block = _read_dims(r, 8, 8)
        block = _read_dims(r, 8, 8)
        threshold, accuracy = r.flt(), r.flt()
        bitmask, classes = _read_classes(r, 8, True)
        return cls(*reshaped, *super_block, *block, threshold, accuracy, bitmask or 0, classes)


# ISO/IEC 15938-17, decomposition_performance_map(): one entry per MSE threshold.
@dataclass(frozen=True, slots=True)
class DecompositionPerformanceEntry:
    """Accuracy of the model when low-rank decomposed with one MSE threshold.

    Attributes:
        mse_threshold: flt(32).
        dpm_nn_accuracy: flt(32).
        nn_reduction_ratio: flt(32).
        dpm_nn_class_accuracy: flt(32) per class (`dpm_count_classes`, u(16); no bitmask).
    """

    mse_threshold: float
    dpm_nn_accuracy: float
    nn_reduction_ratio: float
    dpm_nn_class_accuracy: tuple[float, ...] = ()

    def write(self, w: BitWriter) -> None:
        """Write one entry."""
        w.flt(self.mse_threshold)
        w.flt(self.dpm_nn_accuracy)
        w.flt(self.nn_reduction_ratio)
        _write_classes(w, 16, None, self.dpm_nn_class_accuracy)

    @classmethod
    def read(cls, r: BitReader) -> Self:
        """Read one entry."""
        mse, accuracy, ratio = r.flt(), r.flt(), r.flt()
        _, classes = _read_classes(r, 16, False)
        return cls(mse, accuracy, ratio, classes)


_Entry: TypeAlias = (
    SparsificationPerformanceEntry
    | PruningPerformanceEntry
    | UnificationPerformanceEntry
    | DecompositionPerformanceEntry
)
_E = TypeVar("_E", bound=_Entry)


def _write_map(w: BitWriter, entries: tuple[_Entry, ...] | None) -> None:
    """Write a performance map's u(8) entry count and its entries (nothing when absent)."""
    if entries is None:
        return
    w.u(8, len(entries))
    for entry in entries:
        entry.write(w)


def _read_map(r: BitReader, present: bool, entry_type: type[_E], min_bits: int) -> tuple[_E, ...] | None:
    """Read a performance map's count and entries; `None` when its flag was 0."""
    if not present:
        return None
    count = _read_count(r, "performance map entries", min_bits)
    return tuple(entry_type.read(r) for _ in range(count))


def _check_quantization(flags: int, qp_density: int | None, qp: int | None, prefix: str) -> None:
    has_qp = bool(flags & (QuantizationMethod.NNR_QSU | QuantizationMethod.NNR_QCB))
    if has_qp != (qp_density is not None) or has_qp != (qp is not None):
        raise ValueError(
            f"{prefix}_qp_density and {prefix}_quantization_parameter must be given exactly when "
            f"{prefix}_quantization_method_flags has NNR_QSU or NNR_QCB (flags={flags})"
        )


# ISO/IEC 15938-17, nnr_model_parameter_set_unit_header() / nnr_model_parameter_set_unit_payload().
@dataclass(frozen=True, slots=True)
class ModelParameterSet(NnrUnit):
    """NNR_MPS: parameters that apply to the whole model.

    Presence flags are properties derived from the optional values (`mps_sparsification_flag` is
    `sparsification_performance_map is not None`, and so on).

    Attributes:
        topology_carriage_flag: u(1), the bitstream carries a TPL unit.
        mps_quantization_method_flags: u(3), a `QuantizationMethod` mask.
        mps_topology_indexed_reference_flag: u(1), NDUs reference tensors by index.
        base_model_id: st(v), profile 1 only.
        validation_set_performance: flt(32), profile 1 only.
        metric_type_performance_map_valid_flag: u(1), profile 1 only.
        mps_parent_signalling_enabled_flag: u(1), profile 1 only.
        nnr_pre_flag: u(1), profile 1 with parent signalling only.
        performance_metric_type: st(v), present (profile 1) when either performance flag is set.
        mps_qp_density: u(3), present when the flags contain NNR_QSU or NNR_QCB.
        mps_quantization_parameter: i(13), likewise.
        sparsification_performance_map: entries, `None` when `mps_sparsification_flag` is 0.
        pruning_performance_map: entries, `None` when `mps_pruning_flag` is 0.
        unification_performance_map: entries, `None` when `mps_unification_flag` is 0.
        decomposition_performance_map: entries, `None` when
            `mps_decomposition_performance_map_flag` is 0.
    """

    nnr_unit_type: ClassVar[NnrUnitType] = NnrUnitType.NNR_MPS

    topology_carriage_flag: bool = True
    mps_quantization_method_flags: QuantizationMethod = QuantizationMethod.NNR_QSU
    mps_topology_indexed_reference_flag: bool = False
    base_model_id: str | None = None
    validation_set_performance: float | None = None
    metric_type_performance_map_valid_flag: bool = False
    mps_parent_signalling_enabled_flag: bool = False
    nnr_pre_flag: bool = False
    performance_metric_type: str | None = None
    mps_qp_density: int | None = 2
    mps_quantization_parameter: int | None = 0
    sparsification_performance_map: tuple[SparsificationPerformanceEntry, ...] | None = None
    pruning_performance_map: tuple[PruningPerformanceEntry, ...] | None = None
    unification_performance_map: tuple[UnificationPerformanceEntry, ...] | None = None
    decomposition_performance_map: tuple[DecompositionPerformanceEntry, ...] | None = None

    def __post_init__(self) -> None:
        _check_quantization(
            self.mps_quantization_method_flags, self.mps_qp_density, self.mps_quantization_parameter, "mps"
        )
        if self.nnr_pre_flag and not self.mps_parent_signalling_enabled_flag:
            raise ValueError("nnr_pre_flag needs mps_parent_signalling_enabled_flag")
        wants_metric = self.validation_set_performance is not None or self.metric_type_performance_map_valid_flag
        if wants_metric != (self.performance_metric_type is not None):
            raise ValueError(
                "performance_metric_type must be given exactly when validation_set_performance or "
                "metric_type_performance_map_valid_flag is set"
            )

    @property
    def mps_sparsification_flag(self) -> bool:
        """u(1): a sparsification performance map follows."""
        return self.sparsification_performance_map is not None

    @property
    def mps_pruning_flag(self) -> bool:
        """u(1): a pruning performance map follows."""
        return self.pruning_performance_map is not None

    @property
    def mps_unification_flag(self) -> bool:
        """u(1): a unification performance map follows."""
        return self.unification_performance_map is not None

    @property
    def mps_decomposition_performance_map_flag(self) -> bool:
        """u(1): a decomposition performance map follows."""
        return self.decomposition_performance_map is not None

    @property
    def base_model_id_present_flag(self) -> bool:
        """u(1), profile 1."""
        return self.base_model_id is not None

    @property
    def validation_set_performance_present_flag(self) -> bool:
        """u(1), profile 1."""
        return self.validation_set_performance is not None

    def context(self, ctx: UnitContext) -> UnitContext:
        """The context for units after this MPS: `ctx` with this MPS's values."""
        return ctx.replace(
            mps_topology_indexed_reference_flag=self.mps_topology_indexed_reference_flag,
            mps_parent_signalling_enabled_flag=self.mps_parent_signalling_enabled_flag,
            mps_qp_density=self.mps_qp_density,
            mps_quantization_parameter=self.mps_quantization_parameter,
        )

    def _write_body(self, w: BitWriter, ctx: UnitContext) -> None:
        w.flag(self.topology_carriage_flag)
        w.flag(self.mps_sparsification_flag)
        w.flag(self.mps_pruning_flag)
        w.flag(self.mps_unification_flag)
        w.flag(self.mps_decomposition_performance_map_flag)
        w.u(3, self.mps_quantization_method_flags)
        w.flag(self.mps_topology_indexed_reference_flag)
        if ctx.is_profile_1:
            w.flag(self.base_model_id_present_flag)
            w.flag(self.validation_set_performance_present_flag)
            w.flag(self.metric_type_performance_map_valid_flag)
            w.flag(self.mps_parent_signalling_enabled_flag)
            w.flag(self.nnr_pre_flag)  # nnr_reserved_zero_1bit when parent signalling is off
            w.u(2, 0)  # nnr_reserved_zero_2bits
            if self.base_model_id is not None:
                w.st(self.base_model_id)
            if self.performance_metric_type is not None:
                w.st(self.performance_metric_type)
        else:
            if (
                self.base_model_id is not None
                or self.validation_set_performance is not None
                or self.metric_type_performance_map_valid_flag
                or self.mps_parent_signalling_enabled_flag
            ):
                raise ValueError(
                    "base_model_id, validation_set_performance, metric_type_performance_map_valid_flag "
                    "and parent signalling exist only in profile 1 (general_profile_idc = 1)"
                )
            w.u(7, 0)  # nnr_reserved_zero_7bits
        if self.mps_qp_density is not None and self.mps_quantization_parameter is not None:
            w.u(3, self.mps_qp_density)
            w.i(13, self.mps_quantization_parameter)
        _write_map(w, self.sparsification_performance_map)
        _write_map(w, self.pruning_performance_map)
        _write_map(w, self.unification_performance_map)
        _write_map(w, self.decomposition_performance_map)
        if ctx.is_profile_1 and self.validation_set_performance is not None:
            w.flt(self.validation_set_performance)
        w.byte_alignment()

    @classmethod
    def read(cls, r: BitReader, ctx: UnitContext, header: NnrUnitHeader) -> Self:
        topology_carriage_flag = r.flag()
        sparsification, pruning, unification, decomposition = r.flag(), r.flag(), r.flag(), r.flag()
        flags = QuantizationMethod(r.u(3))
        indexed = r.flag()
        base_model_id = performance_metric_type = None
        validation_present = metric_valid = parent_signalling = pre = False
        if ctx.is_profile_1:
            base_model_id_present = r.flag()
            validation_present = r.flag()
            metric_valid = r.flag()
            parent_signalling = r.flag()
            pre = r.flag() and parent_signalling  # a reserved bit when parent signalling is off
            r.u(2)  # nnr_reserved_zero_2bits
            if base_model_id_present:
                base_model_id = r.st()
            if validation_present or metric_valid:
                performance_metric_type = r.st()
        else:
            r.u(7)  # nnr_reserved_zero_7bits
        qp_density = qp = None
        if flags & (QuantizationMethod.NNR_QSU | QuantizationMethod.NNR_QCB):
            qp_density = r.u(3)
            qp = r.i(13)
        spm = _read_map(r, sparsification, SparsificationPerformanceEntry, 3 * _FLT_BITS + 8 + 1)
        ppm = _read_map(r, pruning, PruningPerformanceEntry, 2 * _FLT_BITS + 8 + 1)
        upm = _read_map(r, unification, UnificationPerformanceEntry, 2 * _FLT_BITS + 8)
        dpm = _read_map(r, decomposition, DecompositionPerformanceEntry, 3 * _FLT_BITS + 16)
        validation = r.flt() if validation_present else None
        r.byte_alignment()
        return cls(
            topology_carriage_flag=topology_carriage_flag,
            mps_quantization_method_flags=flags,
            mps_topology_indexed_reference_flag=indexed,
            base_model_id=base_model_id,
            validation_set_performance=validation,
            metric_type_performance_map_valid_flag=metric_valid,
            mps_parent_signalling_enabled_flag=parent_signalling,
            nnr_pre_flag=pre,
            performance_metric_type=performance_metric_type,
            mps_qp_density=qp_density,
            mps_quantization_parameter=qp,
            sparsification_performance_map=spm,
            pruning_performance_map=ppm,
            unification_performance_map=upm,
            decomposition_performance_map=dpm,
            **cls._common_from(header),  # type: ignore[arg-type]
        )


# ISO/IEC 15938-17, nnr_layer_parameter_set_unit_header() / nnr_layer_parameter_set_unit_payload().
@dataclass(frozen=True, slots=True)
class LayerParameterSet(NnrUnit):
    """NNR_LPS: parameters for the NDUs of one layer; its QP replaces the MPS's as CABAC base.

    Attributes:
        lps_self_contained_flag: u(1) in the unit header.
        lps_quantization_method_flags: u(3), a `QuantizationMethod` mask.
        lps_qp_density: u(3), present when the flags contain NNR_QSU or NNR_QCB.
        lps_quantization_parameter: i(13), likewise.
        sparsification_performance_map: entries, `None` when `lps_sparsification_flag` is 0.
        pruning_performance_map: entries, `None` when `lps_pruning_flag` is 0.
        unification_performance_map: entries, `None` when `lps_unification_flag` is 0.
    """

    nnr_unit_type: ClassVar[NnrUnitType] = NnrUnitType.NNR_LPS

    lps_self_contained_flag: bool = True
    lps_quantization_method_flags: QuantizationMethod = QuantizationMethod.NNR_QSU
    lps_qp_density: int | None = 2
    lps_quantization_parameter: int | None = 0
    sparsification_performance_map: tuple[SparsificationPerformanceEntry, ...] | None = None
    pruning_performance_map: tuple[PruningPerformanceEntry, ...] | None = None
    unification_performance_map: tuple[UnificationPerformanceEntry, ...] | None = None

    def __post_init__(self) -> None:
        _check_quantization(
            self.lps_quantization_method_flags, self.lps_qp_density, self.lps_quantization_parameter, "lps"
        )

    @property
    def lps_sparsification_flag(self) -> bool:
        """u(1): a sparsification performance map follows."""
        return self.sparsification_performance_map is not None

    @property
    def lps_pruning_flag(self) -> bool:
        """u(1): a pruning performance map follows."""
        return self.pruning_performance_map is not None

    @property
    def lps_unification_flag(self) -> bool:
        """u(1): a unification performance map follows."""
        return self.unification_performance_map is not None

    def _write_body(self, w: BitWriter, ctx: UnitContext) -> None:
        w.flag(self.lps_self_contained_flag)
        w.u(7, 0)  # nnr_reserved_zero_7bits
        w.u(1, 0)  # nnr_reserved_zero_1_bits
        w.flag(self.lps_sparsification_flag)
        w.flag(self.lps_pruning_flag)
        w.flag(self.lps_unification_flag)
        w.u(3, self.lps_quantization_method_flags)
        w.u(1, 0)  # nnr_reserved_zero_1bit
        if self.lps_qp_density is not None and self.lps_quantization_parameter is not None:
            w.u(3, self.lps_qp_density)
            w.i(13, self.lps_quantization_parameter)
        _write_map(w, self.sparsification_performance_map)
        _write_map(w, self.pruning_performance_map)
        _write_map(w, self.unification_performance_map)
        w.byte_alignment()

    @classmethod
    def read(cls, r: BitReader, ctx: UnitContext, header: NnrUnitHeader) -> Self:
        self_contained = r.flag()
        r.u(7)  # nnr_reserved_zero_7bits
        r.u(1)  # nnr_reserved_zero_1_bits
        sparsification, pruning, unification = r.flag(), r.flag(), r.flag()
        flags = QuantizationMethod(r.u(3))
        r.u(1)  # nnr_reserved_zero_1bit
        qp_density = qp = None
        if flags & (QuantizationMethod.NNR_QSU | QuantizationMethod.NNR_QCB):
            qp_density = r.u(3)
            qp = r.i(13)
        spm = _read_map(r, sparsification, SparsificationPerformanceEntry, 3 * _FLT_BITS + 8 + 1)
        ppm = _read_map(r, pruning, PruningPerformanceEntry, 2 * _FLT_BITS + 8 + 1)
        upm = _read_map(r, unification, UnificationPerformanceEntry, 2 * _FLT_BITS + 8)
        r.byte_alignment()
        return cls(
            lps_self_contained_flag=self_contained,
            lps_quantization_method_flags=flags,
            lps_qp_density=qp_density,
            lps_quantization_parameter=qp,
            sparsification_performance_map=spm,
            pruning_performance_map=ppm,
            unification_performance_map=upm,
            **cls._common_from(header),  # type: ignore[arg-type]
        )
