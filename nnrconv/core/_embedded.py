# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""What a plugin hands the embedding seam when it reads NNR inside its native container.

NOTE: integration mode 2 (NNR data units inside an ONNX, NNEF, TensorFlow or PyTorch file) has
three parts that every container holds, whatever its layout: the parameter sets, one data unit
per coded tensor, and the tensor's original element type and shape. A plugin only finds them
(`FormatPlugin.extract_embedded`); decoding, size checks and error locations belong to the seam
(`nnrconv._embedding`), so no plugin imports the NNC decoder and all containers behave alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from nnrconv.core._dtype import DType
from nnrconv.core._model import Model
from nnrconv.core._tensor import TensorRole

__all__ = ["CodedUnit", "EmbeddedModel"]


@dataclass(frozen=True, slots=True)
class CodedUnit:
    """One tensor's NNR data unit as a container holds it, with what the tensor must become.

    Attributes:
        ndu: the complete NNR_NDU unit (size field included).
        dtype, shape: the tensor's original element type and shape; the decoded array must have
            exactly as many elements, and is cast to `dtype` only when no value changes.
        role: the tensor's role in its graph.
        finish: an optional plugin conversion of the decoded array (its element count checked)
            to `dtype`'s storage type, for containers whose slots convert values their own way;
            without it the seam restores narrow floats and casts other types losslessly.
    """

    ndu: bytes
    dtype: DType
    shape: tuple[int, ...]
    role: TensorRole = TensorRole.OTHER
    finish: Callable[[np.ndarray], np.ndarray] | None = None


@dataclass(slots=True)
class EmbeddedModel:
    """A container's model and its NNR-coded tensors, not decoded.

    Attributes:
        model: the model; the tensors named in `units` may be missing or hold no data, the seam
            replaces them with `CodedTensor`s decoded on first access.
        parameter_sets: the start unit and model parameter set (and integrity record) the units
            were coded under; empty when `units` is.
        units: tensor name (topology element id) -> its coded unit.
    """

    model: Model
    parameter_sets: bytes = b""
    units: Mapping[str, CodedUnit] = field(default_factory=dict)
