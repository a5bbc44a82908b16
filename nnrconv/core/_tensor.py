# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Tensors of the intermediate representation.

NOTE: data is lazy by construction. Every tensor knows its name, dtype and shape without
touching its data; the data arrives only through `numpy()` or `tobytes()`. A model loaded from a
multi-gigabyte file therefore costs no memory until a tensor is asked for, and a tensor that is
only copied from one container to another is read once.

- `ArrayTensor` wraps an array that is already in memory, without copying it.
- `MappedTensor` is a span of a file, memory-mapped on first access.
- `LazyTensor` holds a zero-argument callable.
- `CodedTensor` is a tensor still in its NNR-coded form: an NDU and the parameter sets it needs.
  Moving it between NNR containers (`.nnr` <-> NNR inside a native container) copies the coded
  bytes as they are, without decoding or re-quantizing.
"""

from __future__ import annotations

import contextlib
import enum
import math
import mmap
import os
from collections.abc import Callable, Sequence

import numpy as np

from nnrconv.core._dtype import DType

__all__ = ["ArrayTensor", "CodedTensor", "LazyTensor", "MappedTensor", "Tensor", "TensorRole"]


class TensorRole(enum.Enum):
    """What a tensor is for: coding tools treat weights, biases and batch-norm statistics differently.

    Carried as data, set by the format plugin that knows the graph, never guessed from names.
    """

    WEIGHT = "weight"
    BIAS = "bias"
    BN_GAMMA = "bn.gamma"
    BN_BETA = "bn.beta"
    BN_MEAN = "bn.mean"
    BN_VAR = "bn.var"
    OTHER = "other"

    def __repr__(self) -> str:
        return f"TensorRole.{self.name}"


def _freeze_shape(shape: Sequence[int]) -> tuple[int, ...]:
    dims = tuple(int(d) for d in shape)
    if any(d < 0 for d in dims):
        raise ValueError(f"tensor dimensions must be non-negative, got {dims}")
    return dims


class Tensor:
    """A named, typed, shaped block of data whose bytes are fetched on demand.

    Subclasses implement `_load()`; everything else (size, nbytes, tobytes) derives from the
    metadata and that one method.

    Attributes:
        name: the tensor's name in its native topology (the NNR `topology_elem_id`).
        dtype: element type.
        shape: dimensions, frozen once the tensor exists.
        role: what the tensor is used for in its graph.
    """

    __slots__ = ("dtype", "name", "role", "shape")

    def __init__(self, name: str, dtype: DType, shape: Sequence[int], *, role: TensorRole = TensorRole.OTHER) -> None:
        self.name = name
        self.dtype = DType(dtype)
        self.shape = _freeze_shape(shape)
        self.role = role

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the element data (sub-byte types packed)."""
        return self.dtype.storage_nbytes(self.size)

    def numpy(self) -> np.ndarray:
        """The data as an array of `dtype.storage_dtype` and `shape` (packed types: flat bytes)."""
        return self._load()

    def tobytes(self) -> bytes:
        """The data as little-endian bytes, exactly as ONNX `raw_data` would hold it."""
        return np.ascontiguousarray(self._load()).tobytes()

    def _load(self) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.dtype!r}, {list(self.shape)}, {self.role!r})"


class ArrayTensor(Tensor):
    """A tensor over an in-memory numpy array (no copy is made)."""

    __slots__ = ("_array",)

    def __init__(
        self,
        name: str,
        array: np.ndarray,
        *,
        dtype: DType | None = None,
        shape: Sequence[int] | None = None,
        role: TensorRole = TensorRole.OTHER,
    ) -> None:
        dt = DType.from_numpy(array.dtype) if dtype is None else DType(dtype)
        if array.dtype != dt.storage_dtype and array.dtype.newbyteorder("<") != dt.storage_dtype:
            raise TypeError(
                f"tensor {name!r}: array of dtype {array.dtype} cannot hold {dt.name}; expected {dt.storage_dtype}"
            )
        super().__init__(name, dt, array.shape if shape is None else shape, role=role)
        expected = self.size if dt.is_numpy_native or not dt.is_packed else self.nbytes
        if array.size != expected:
            raise ValueError(f"tensor {name!r}: array has {array.size} elements, shape needs {expected}")
        self._array = array

    def _load(self) -> np.ndarray:
        return self._array


class MappedTensor(Tensor):
    """A tensor stored as raw little-endian bytes at `offset` in a file, mapped on first access."""

    __slots__ = ("_map", "length", "offset", "path")

    def __init__(
        self,
        name: str,
        dtype: DType,
        shape: Sequence[int],
        path: str | os.PathLike[str],
        offset: int = 0,
        length: int | None = None,
        *,
        role: TensorRole = TensorRole.OTHER,
    ) -> None:
        super().__init__(name, dtype, shape, role=role)
        self.path = os.fspath(path)
        self.offset = int(offset)
        self.length = self.nbytes if length is None else int(length)
        if self.length != self.nbytes:
            raise ValueError(
                f"tensor {name!r}: {self.length} bytes in {self.path} but shape {list(self.shape)} "
                f"of {self.dtype.name} needs {self.nbytes}"
            )
        self._map: mmap.mmap | None = None

    def _load(self) -> np.ndarray:
        if self.length == 0:
            return np.zeros(self.shape, dtype=self.dtype.storage_dtype)
        if self._map is None:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if self.offset + self.length > size:
                    raise ValueError(
                        f"tensor {self.name!r}: needs bytes {self.offset}..{self.offset + self.length} "
                        f"of {self.path}, which has {size}"
                    )
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        flat = np.frombuffer(self._map, dtype=self.dtype.storage_dtype, count=self._count(), offset=self.offset)
        return flat if self.dtype.is_packed else flat.reshape(self.shape)

    def _count(self) -> int:
        return self.length // self.dtype.storage_dtype.itemsize

    def release(self) -> None:
        """Drop the memory map; the next access maps the file again."""
        if self._map is not None:
            # Arrays may still view the map; it is then freed when they are.
            with contextlib.suppress(BufferError):
                self._map.close()
            self._map = None


class LazyTensor(Tensor):
    """A tensor whose data is produced by a zero-argument callable, cached only if asked."""

    __slots__ = ("_cache", "_cached", "_func")

    def __init__(
        self,
        name: str,
        dtype: DType,
        shape: Sequence[int],
        func: Callable[[], np.ndarray],
        *,
        role: TensorRole = TensorRole.OTHER,
        cache: bool = False,
    ) -> None:
        super().__init__(name, dtype, shape, role=role)
        self._func = func
        self._cached = cache
        self._cache: np.ndarray | None = None

    def _load(self) -> np.ndarray:
        if self._cache is not None:
            return self._cache
        array = self._func()
        if array.dtype != self.dtype.storage_dtype:
            raise TypeError(
                f"tensor {self.name!r}: producer returned {array.dtype}, expected {self.dtype.storage_dtype}"
            )
        if not self.dtype.is_packed:
            array = array.reshape(self.shape)
        if self._cached:
            self._cache = array
        return array


class CodedTensor(LazyTensor):
    """A tensor held as an NNR compressed data unit; decoded on first access.

    `decode` decodes the unit (the seam `nnrconv._embedding` passes one that holds only the
    unit); the array is kept once decoded, so the unit alone is in memory until then.

    Attributes:
        ndu: the complete NNR_NDU unit (size field included).
        parameter_sets: the start unit and model parameter set (and any LPS) the unit was coded
            under; units are copied between containers only when these bytes are equal.
    """

    __slots__ = ("ndu", "parameter_sets")

    def __init__(
        self,
        name: str,
        dtype: DType,
        shape: Sequence[int],
        ndu: bytes,
        parameter_sets: bytes,
        decode: Callable[[], np.ndarray],
        *,
        role: TensorRole = TensorRole.OTHER,
    ) -> None:
        super().__init__(name, dtype, shape, decode, role=role, cache=True)
        self.ndu = ndu
        self.parameter_sets = parameter_sets

    @property
    def is_decoded(self) -> bool:
        """Whether the unit has been decoded (and its array is held)."""
        return self._cache is not None
