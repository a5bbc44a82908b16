# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Code tables of the NNR high-level syntax (ISO/IEC 15938-17).

NOTE: member names are the standard's own spellings (``NNR_TPL_ONNX``, not ``ONNX``) so that the
syntax code can be read side by side with the text, and values are the codes on the wire. Values
that the standard reserves are not members; each reader decides whether a reserved code is an
error or is carried through as a plain ``int``.
"""

from __future__ import annotations

import enum

__all__ = [
    "CompressedParameterTypes",
    "DecompressedDataFormat",
    "NnrUnitType",
    "ParentNodeIdType",
    "PayloadType",
    "QuantizationMethod",
    "TopologyCompressionFormat",
    "TopologyStorageFormat",
]


class NnrUnitType(enum.IntEnum):
    """`nnr_unit_type`, u(6): what an NNR unit carries."""

    NNR_STR = 0
    NNR_MPS = 1
    NNR_LPS = 2
    NNR_TPL = 3
    NNR_QNT = 4
    NNR_NDU = 5
    NNR_AGG = 6


class TopologyStorageFormat(enum.IntEnum):
    """`topology_storage_format`, u(8): which framework's graph description a TPL unit holds."""

    NNR_TPL_UNREC = 0
    NNR_TPL_NNEF = 1
    NNR_TPL_ONNX = 2
    NNR_TPL_PYT = 3
    NNR_TPL_TEF = 4
    NNR_TPL_PRUN = 5
    NNR_TPL_REFLIST = 6


class TopologyCompressionFormat(enum.IntEnum):
    """`topology_compression_format`, u(8): how `topology_data` is compressed (DFL = zlib)."""

    NNR_PT_RAW = 0
    NNR_DFL = 1


class PayloadType(enum.IntEnum):
    """`nnr_compressed_data_unit_payload_type`, u(5): how an NDU's payload codes its tensors."""

    NNR_PT_INT = 0
    NNR_PT_FLOAT = 1
    NNR_PT_RAW_FLOAT = 2
    NNR_PT_BLOCK = 3


class CompressedParameterTypes(enum.IntFlag):
    """`compressed_parameter_types`, u(4): which companions a block NDU carries besides weights."""

    NNR_CPT_DC = 0x01
    NNR_CPT_LS = 0x02
    NNR_CPT_BN = 0x04
    NNR_CPT_BI = 0x08


class DecompressedDataFormat(enum.IntEnum):
    """`nnr_decompressed_data_format`, u(7): element type a decoder should output.

    Codes 2 to 9 exist from the 2nd edition (ISO/IEC 15938-17:2024) on.
    """

    TENSOR_INT32 = 0
    TENSOR_FLOAT32 = 1
    TENSOR_INT2 = 2
    TENSOR_INT3 = 3
    TENSOR_INT4 = 4
    TENSOR_INT8 = 5
    TENSOR_INT16 = 6
    TENSOR_INT64 = 7
    TENSOR_FLOAT16 = 8
    TENSOR_FLOAT64 = 9


class QuantizationMethod(enum.IntFlag):
    """`mps_quantization_method_flags` / `lps_quantization_method_flags`, u(3)."""

    NNR_QSU = 1
    NNR_QCB = 2


class ParentNodeIdType(enum.IntEnum):
    """`parent_node_id_type`, u(2): how an NDU names the parameter-update-tree node it updates."""

    ICNN_NDU_ID = 0
    ICNN_NDU_PL_SHA256 = 1
    ICNN_NDU_PL_SHA512 = 2
