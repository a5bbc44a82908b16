# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Types of the compiled DeepCABAC core; import it only through nnrconv.nnc.cabac."""

from collections.abc import Buffer, Sequence

MAX_GTX_FLAGS: int

class CabacError(ValueError):
    """Corrupt or truncated payload; args are (message, byte_offset in the payload)."""

class Encoder:
    def __init__(self, reserve: int = 0) -> None: ...
    def encode_bypass(self, value: int, num_bits: int) -> None: ...
    def encode_levels(
        self,
        levels: Buffer,
        rows: int,
        width: int,
        *,
        dq: bool = False,
        scan_order: int = 0,
        profile: int = 1,
        num_gtx: int = 11,
        param_opt: bool = True,
        row_skip: bool = False,
        parent_present: bool = False,
        codebook_size: int = 0,
        codebook_zero_offset: int = 0,
        base: Buffer | None = None,
        hist: Buffer | None = None,
        threads: int = 1,
    ) -> None: ...
    def finish(self) -> bytes: ...

class Decoder:
    def __init__(self, payload: Buffer) -> None: ...
    @property
    def bytes_read(self) -> int: ...
    def decode_bypass(self, num_bits: int) -> int: ...
    def decode_levels(
        self,
        rows: int,
        width: int,
        *,
        dq: bool = False,
        scan_order: int = 0,
        profile: int = 1,
        num_gtx: int = 11,
        parent_present: bool = False,
        codebook_size: int = 0,
        codebook_zero_offset: int = 0,
        entry_points: Sequence[tuple[int, int, int]] | None = None,
        create_entry_points: bool = False,
        max_elements: int = 2**31,
        base: Buffer | None = None,
        hist: Buffer | None = None,
        threads: int = 1,
    ) -> tuple[bytearray, list[tuple[int, int, int]] | None]: ...
    def finish(self) -> int: ...

def quantize(
    weights: Buffer,
    rows: int,
    width: int,
    qp: int,
    qp_density: int,
    *,
    dq: bool = False,
    scan_order: int = 0,
    lambda_scale: float = 0.0,
    max_num_no_rem: int = 10,
) -> tuple[bytearray, int]: ...
def dequantize(levels: Buffer, qp: int, qp_density: int, *, in_place: bool = False) -> bytearray | None: ...
def step_size(qp: int, qp_density: int) -> float: ...
