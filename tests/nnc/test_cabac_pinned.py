# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Pinned payload hashes of the C core: a refactoring of the coder must not change a single byte.

The SHA-256 values were recorded with the build before the C core was split into files with one
job (issue #15) and checked to be unchanged after; benchmarks/cabac_split.py covers more cases
and measures the speed.  Inputs are made from integer arithmetic only (no random generator whose
stream could change between numpy versions).
"""

import hashlib

import numpy as np
import pytest

from nnrconv.nnc import cabac


def _weights(shape: tuple[int, ...], salt: int) -> np.ndarray:
    i = np.arange(int(np.prod(shape)), dtype=np.int64)
    raw = (i * 7919 + salt * 104729) % 2003 - 1001
    raw[(i * 31 + salt) % 5 == 0] = 0  # some zeros, as in real weights
    return (raw.astype(np.float32) / np.float32(9000.0)).reshape(shape)


def _levels(shape, salt, dq, scan):
    return cabac.quantize(_weights(shape, salt), -38, 2, dq_flag=dq, scan_order=scan).levels


def _case(name):
    """(levels, coding, encoder options, decoder options) of a named case."""
    if name.startswith("plain"):
        _, dq, scan = name.split("-")
        dq, scan = dq == "dq", int(scan)
        coding = cabac.TensorCoding(dq_flag=dq, scan_order=scan)
        return _levels((40, 70), 1, dq, scan), coding, {}, {}
    if name == "rowskip":
        w = _weights((48, 40), 2)
        w[::4] = 0
        levels = cabac.quantize(w, -38, 2, dq_flag=True, scan_order=1).levels
        return levels, cabac.TensorCoding(dq_flag=True, scan_order=1), {"row_skip": True}, {}
    if name == "profile0":
        coding = cabac.TensorCoding(general_profile_idc=0, cabac_unary_length_minus1=3)
        return _levels((30, 30), 3, False, 0), coding, {}, {}
    if name == "codebook":
        i = np.arange(60 * 20, dtype=np.int64)
        indices = ((i * 37) % 16 - 5).astype(np.int32).reshape(60, 20)
        return indices, cabac.TensorCoding(scan_order=1, codebook_size=16, codebook_zero_offset=5), {}, {}
    if name == "lossless":
        i = np.arange(50 * 30, dtype=np.int64)
        levels = ((i * 7919) % 4001 - 2000) * ((i % 3) != 0)
        return levels.astype(np.int32).reshape(50, 30), cabac.TensorCoding(scan_order=2), {}, {}
    if name == "tca-hdsp":
        base = _levels((40, 48), 4, True, 1)
        update = cabac.quantize(_weights((40, 48), 5) / 3, -38, 2, dq_flag=True, scan_order=1).levels
        history = (np.arange(40 * 48) % 3 == 0).astype(np.uint8).reshape(40, 48)
        coding = cabac.TensorCoding(dq_flag=True, scan_order=1, parent_node_id_present_flag=True)
        options = {"base": base, "history": history}
        return update, coding, options, options
    raise KeyError(name)


PINNED = {
    "codebook": "71f79afd42185b973acbd4cc49a10f4b393c9a7ac7368da39a1ed48cf5d446e3",  # 601 bytes, 1200 levels
    "lossless": "b96056f01715bfe11f2043b50d93bc317a68d98baa5014ed80060219c21c561a",  # 1675 bytes, 1500 levels
    "plain-dq-0": "70bf530d6e9e9eae5c30a13a4ecc73105caf497c4f2389145f62adc58852b9f2",  # 2020 bytes, 2800 levels
    "plain-dq-1": "b0eb2473777f989d21f9309ca694e655d81d724de211d5ca066cf84733e7421a",  # 2013 bytes, 2800 levels
    "plain-dq-3": "6707280e6298ef4689167f8ee0e4610da22d6f3df4da595c3a91674ae39b97cf",  # 2058 bytes, 2800 levels
    "plain-uq-0": "3712ad2ffc8670db24b23f35930334ed90e66acd2e959df46c79281a2cd19fb7",  # 2207 bytes, 2800 levels
    "plain-uq-2": "49df84914638f676390e99b3d7a9efd280d2626c81459cc2e89808b7e7a9ebd0",  # 2252 bytes, 2800 levels
    "profile0": "89f70ee347d64b13fae3c6c4b30a56d2216c6b57c5447b85e300274adb251e78",  # 736 bytes, 900 levels
    "rowskip": "a950e4d70b5051bd56c6099d91619e23c1fa2c6423e664d5618fa78c87395aef",  # 1204 bytes, 1920 levels
    "tca-hdsp": "9ceedb79ddb3f3bb2c68e524f768421d760e8aa67318e56da60445547380d850",  # 1232 bytes, 1920 levels
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_payload_bytes_are_pinned_and_decode_back(name):
    levels, coding, enc_opts, dec_opts = _case(name)
    payloads = []
    for threads in (1, 2):
        enc = cabac.PayloadEncoder()
        enc.encode_levels(levels, coding, threads=threads, **enc_opts)
        payloads.append(enc.finish())
    assert payloads[0] == payloads[1]
    assert hashlib.sha256(payloads[0]).hexdigest() == PINNED[name]
    layout = cabac.TensorLayout(levels.shape, coding, None, dec_opts.get("base"), dec_opts.get("history"))
    (eps,) = cabac.entry_points(payloads[0], [layout])
    for eps_in, threads in [(None, 1), (eps or None, 2)]:
        dec = cabac.PayloadDecoder(payloads[0])
        out = dec.decode_levels(levels.shape, coding, entry_points=eps_in, threads=threads, **dec_opts)
        assert dec.finish() == len(payloads[0])
        np.testing.assert_array_equal(out, levels)
