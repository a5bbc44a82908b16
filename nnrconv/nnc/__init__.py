# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The NNR (ISO/IEC 15938-17) bitstream layer: bit I/O, unit syntax, and whole-model coding.

Typical use::

    data = nnc.encode_model([("fc.weight", w)], topology, nnc.TopologyStorageFormat.NNR_TPL_ONNX)
    model = nnc.decode_model(data)
    for info in nnc.inspect_units(data):
        print(info.index, info.unit_type, info.tensor)
"""

from contextlib import suppress as _suppress

from nnrconv.nnc._bitio import BitReader, BitWriter
from nnrconv.nnc._budget import default_max_memory, memory_budget, parse_size
from nnrconv.nnc._coding import (
    BFLOAT16_SNR_DB,
    DEFAULT_SNR_DB,
    CodingOptions,
    TensorChoice,
    is_weight,
    plan_tensor,
)
from nnrconv.nnc._container import (
    MAX_TOPOLOGY_SIZE,
    Progress,
    assemble_model,
    can_carry,
    deflate_topology,
    inflate_topology,
)
from nnrconv.nnc._decoding import DecodedModel, PartsDecoder, decode_model, decode_parts
from nnrconv.nnc._encoding import encode_model, encode_parts, encode_update
from nnrconv.nnc._enums import (
    CompressedParameterTypes,
    DecompressedDataFormat,
    NnrUnitType,
    ParentNodeIdType,
    PayloadType,
    QuantizationMethod,
    TopologyCompressionFormat,
    TopologyStorageFormat,
)
from nnrconv.nnc._framing import (
    MAX_UNIT_SIZE,
    AggregateUnit,
    ParsedUnit,
    Unit,
    advance_context,
    encode_unit,
    looks_like_nnr,
    read_units,
    write_units,
)
from nnrconv.nnc._incremental import BaseModel, BaseTensor, ParentRef, read_base, read_chain
from nnrconv.nnc._inspect import UnitInfo, inspect_units
from nnrconv.nnc._integrity import check_parts, no_start_unit, seal_parts, strip_record
from nnrconv.nnc._mps import (
    DecompositionPerformanceEntry,
    LayerParameterSet,
    ModelParameterSet,
    PruningPerformanceEntry,
    SparsificationPerformanceEntry,
    UnificationPerformanceEntry,
)
from nnrconv.nnc._ndu import (
    Codebook,
    CompressedDataUnit,
    EntryPoint,
    NduHeader,
    NodeId,
    ParentNodeId,
    decode_reference_list,
    encode_reference_list,
)
from nnrconv.nnc._rate import TensorRate, tensor_rate
from nnrconv.nnc._salvage import LostUnit, Salvaged, decode_salvaged, salvage_stream
from nnrconv.nnc._snr_search import snr_db
from nnrconv.nnc._units import NnrUnit, NnrUnitHeader, QuantizationUnit, StartUnit, TopologyUnit, UnitContext

__all__ = [
    "is_weight",
    "plan_tensor",
    "snr_db",
    "Progress",
    "assemble_model",
    "BFLOAT16_SNR_DB",
    "DEFAULT_SNR_DB",
    "MAX_TOPOLOGY_SIZE",
    "MAX_UNIT_SIZE",
    "AggregateUnit",
    "BaseModel",
    "BaseTensor",
    "BitReader",
    "BitWriter",
    "Codebook",
    "CodingOptions",
    "CompressedDataUnit",
    "CompressedParameterTypes",
    "DecodedModel",
    "DecompositionPerformanceEntry",
    "DecompressedDataFormat",
    "EntryPoint",
    "LayerParameterSet",
    "LostUnit",
    "ModelParameterSet",
    "NduHeader",
    "NnrUnit",
    "NnrUnitHeader",
    "NnrUnitType",
    "NodeId",
    "ParentNodeId",
    "ParentNodeIdType",
    "ParentRef",
    "ParsedUnit",
    "PayloadType",
    "PruningPerformanceEntry",
    "QuantizationMethod",
    "QuantizationUnit",
    "Salvaged",
    "SparsificationPerformanceEntry",
    "StartUnit",
    "TensorChoice",
    "TensorRate",
    "TopologyCompressionFormat",
    "TopologyStorageFormat",
    "TopologyUnit",
    "UnificationPerformanceEntry",
    "Unit",
    "UnitContext",
    "UnitInfo",
    "advance_context",
    "can_carry",
    "tensor_rate",
    "decode_model",
    "default_max_memory",
    "PartsDecoder",
    "check_parts",
    "decode_parts",
    "decode_salvaged",
    "decode_reference_list",
    "deflate_topology",
    "encode_model",
    "encode_parts",
    "encode_reference_list",
    "encode_update",
    "encode_unit",
    "inflate_topology",
    "inspect_units",
    "looks_like_nnr",
    "no_start_unit",
    "memory_budget",
    "parse_size",
    "read_base",
    "read_chain",
    "read_units",
    "salvage_stream",
    "seal_parts",
    "strip_record",
    "write_units",
]


def _publish() -> None:
    """Show public classes and functions as `nnrconv.nnc.X`, whatever private module defines them."""
    for name in __all__:
        obj = globals()[name]
        if isinstance(obj, type) or callable(obj):
            with _suppress(AttributeError, TypeError):  # e.g. the `Unit` union alias
                obj.__module__ = __name__


_publish()
