# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""What the fuzzer runs on each input, importable without atheris (regression inputs replay it)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from nnrconv import nnc
from nnrconv.core import BaseMismatchError, NNRConvError
from nnrconv.nnc import cabac

# Per-tensor element cap handed to the decoder, as a memory budget would (16 MB of float32);
# NNRCONV_FUZZ_MAX_ELEMENTS=0 fuzzes with the decoder's own default instead.
MAX_ELEMENTS = int(os.environ.get("NNRCONV_FUZZ_MAX_ELEMENTS", 1 << 22)) or cabac.DEFAULT_MAX_ELEMENTS
_CORPUS = Path(__file__).parent / "corpus"


_BASE = nnc.read_base((_CORPUS / "lossy_dq.nnr").read_bytes(), jobs=1)


def _decode_parts(data: bytes) -> None:
    """Split a stream as integration mode 2 keeps it: parameter sets, then one NDU per tensor."""
    try:
        infos = nnc.inspect_units(data)
    except NNRConvError:
        return
    first_ndu = next((i for i, u in enumerate(infos) if u.unit_type == "NNR_NDU"), None)
    if first_ndu is None:
        return
    parameter_sets = b"".join(
        data[u.byte_offset : u.byte_offset + u.size] for u in infos[:first_ndu] if u.unit_type in ("NNR_STR", "NNR_MPS")
    )
    ndus = {
        u.tensor: data[u.byte_offset : u.byte_offset + u.size]
        for u in infos[first_ndu:]
        if u.unit_type == "NNR_NDU" and u.tensor is not None
    }
    with contextlib.suppress(NNRConvError):
        nnc.decode_parts(parameter_sets, ndus, jobs=1, max_elements=MAX_ELEMENTS)


def decode_every_way(data: bytes) -> None:
    """Decode one input every way; nnrconv's own errors are the only acceptable failures."""
    try:
        nnc.decode_model(data, jobs=1, max_elements=MAX_ELEMENTS)
    except BaseMismatchError:
        with contextlib.suppress(NNRConvError):
            nnc.decode_model(data, jobs=1, max_elements=MAX_ELEMENTS, base=_BASE)
    except NNRConvError:
        pass
    _decode_parts(data)
