# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Incremental-coding context tools against NNCodec 2.1.3's deepCABAC: temporal context
adaptation (TCA, coding against a base tensor) and history-dependent significance probability
(HDSP).  Payloads must be byte-identical at equal settings and decode both ways.

Install the reference with `scripts/install-conformance`; without it the conformance tests are
skipped (the size and error tests below run anyway).
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from nnrconv.core._errors import BitstreamError
from nnrconv.nnc import cabac

N1 = 10  # cabac_unary_length_minus1
QPD = 2


def _import_reference():
    sys.modules.setdefault("torchvision", types.ModuleType("torchvision"))
    from nncodec.extensions import deepCABAC

    return deepCABAC


try:
    deepCABAC = _import_reference()
except Exception:  # pragma: no cover - depends on the environment
    deepCABAC = None

needs_reference = pytest.mark.skipif(deepCABAC is None, reason="NNCodec 2.1.3 is not importable")


def _hdsp(history):
    if history is None:
        return deepCABAC.HdspMode.TensorOff, np.array((0, 0), np.int8)
    return deepCABAC.HdspMode.TensorOn, history.astype(np.int8)


def _row_flags(levels):
    if levels.ndim >= 2:
        return np.array([0 if np.any(r) else 1 for r in levels], np.int32)
    return np.zeros(levels.shape[0], np.int32)


def ref_encode(levels, base, *, dq, scan, history=None, row_skip=0, cb=(0, 0), qp_offset=-38):
    """One FLOAT payload the way NNCodec's baseline.encode writes it for an update NDU."""
    enc = deepCABAC.Encoder()
    enc.iae_v(6 + QPD, qp_offset)
    enc.initCtxModels(N1 + 1, 1)
    args = (int(dq), scan, 1, 1, row_skip, _row_flags(levels), *_hdsp(history), *cb)
    if base is None:
        enc.encodeLayer(levels, *args)
    else:
        enc.encodeLayer2(levels, base, *args)
    return bytes(enc.finish())


def ref_decode(payload, shape, base, *, dq, scan, history=None, cb=(0, 0), eps=()):
    """NNCodec's decoder; eps: our entry points (a block scan is only decodable with them)."""
    dec = deepCABAC.Decoder()
    dec.setStream(np.frombuffer(payload, np.uint8).copy())
    qp_offset = dec.iae_v(6 + QPD)
    dec.initCtxModels(N1 + 1)
    if eps:
        packed, previous = [], 0
        for ep in eps:
            packed.append(((ep.bit_offset - previous) << 11) + (ep.value << 3) + ep.dq_state)
            previous = ep.bit_offset
        dec.setEntryPoints(np.array(packed, np.uint64))
    out = np.zeros(shape, np.int32)
    args = (int(dq), scan, 1, 1, *_hdsp(history), *cb)
    if base is None:
        dec.decodeLayer(out, *args)
    else:
        dec.decodeLayer2(out, base, *args)
    used = dec.finish()
    return out, qp_offset, used


def _coding(dq, scan, cb=(0, 0)):
    return cabac.TensorCoding(
        dq_flag=dq,
        scan_order=scan,
        parent_node_id_present_flag=True,
        codebook_size=cb[0],
        codebook_zero_offset=cb[1],
    )


def our_encode(levels, base, *, dq, scan, history=None, row_skip=False, cb=(0, 0), qp_offset=-38):
    enc = cabac.PayloadEncoder()
    enc.encode_qp_offset(qp_offset, QPD)
    enc.encode_levels(levels, _coding(dq, scan, cb), base=base, history=history, row_skip=row_skip)
    return enc.finish()


def our_decode(payload, shape, base, *, dq, scan, history=None, cb=(0, 0), eps=None):
    dec = cabac.PayloadDecoder(payload)
    qp_offset = dec.decode_qp_offset(QPD)
    levels = dec.decode_levels(shape, _coding(dq, scan, cb), base=base, history=history, entry_points=eps)
    used = dec.finish()
    return levels, qp_offset, used


def _update_pair(shape, seed, dq, qp=-38, scan=0):
    """A base tensor's levels and the levels of a small update (quantized differences); DQ levels
    are only representable in the scan order they were quantized in."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal(shape) * 0.05).astype(np.float32)
    base = cabac.quantize(w, qp, QPD, dq_flag=dq, scan_order=scan).levels
    diff = (rng.standard_normal(shape) * 0.01).astype(np.float32)
    update = cabac.quantize(diff, qp, QPD, dq_flag=dq, scan_order=scan).levels
    return base, update


def _history(shape, seed, density=0.3):
    return (np.random.default_rng(seed + 100).random(shape) < density).astype(np.uint8)


SHAPES = [(8, 9), (33, 20), (37,), (70, 40), (40, 3, 3, 3)]


@needs_reference
@pytest.mark.conformance
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dq", [False, True])
@pytest.mark.parametrize("scan", [0, 1])
@pytest.mark.parametrize("qp", [-38, -30])
@pytest.mark.parametrize("tool", ["tca", "hdsp", "tca+hdsp"])
def test_payload_identical_and_decodes_both_ways(shape, dq, scan, qp, tool):
    scan = scan if len(shape) > 1 else 0
    base, update = _update_pair(shape, sum(shape) + 7 * dq - qp, dq, qp, scan)
    tca_base = base if "tca" in tool else None
    history = _history(shape, 1) if "hdsp" in tool else None
    ref = ref_encode(update, tca_base, dq=dq, scan=scan, history=history)
    ours = our_encode(update, tca_base, dq=dq, scan=scan, history=history)
    assert ours == ref

    # entry points (block scan) found by decoding, as for the NDU header
    eps = None
    if scan:
        dec = cabac.PayloadDecoder(ours)
        dec.decode_qp_offset(QPD)
        _, eps = dec.decode_levels_with_entry_points(shape, _coding(dq, scan), base=tca_base, history=history)

    levels, qp_offset, used = our_decode(ref, shape, tca_base, dq=dq, scan=scan, history=history, eps=eps)
    np.testing.assert_array_equal(levels, update)
    assert (qp_offset, used) == (-38, len(ref))

    ref_levels, ref_qp_offset, ref_used = ref_decode(ours, shape, tca_base, dq=dq, scan=scan, history=history, eps=eps)
    np.testing.assert_array_equal(ref_levels, update)
    assert (ref_qp_offset, ref_used) == (-38, len(ours))


@needs_reference
@pytest.mark.conformance
@pytest.mark.parametrize("dq", [False, True])
def test_row_skip_with_tca_and_hdsp(dq):
    base, _ = _update_pair((50, 30), 7, dq)
    diff = (np.random.default_rng(8).standard_normal((50, 30)) * 0.01).astype(np.float32)
    diff[[0, 5, 6, 49]] = 0  # before quantizing: DQ levels depend on the scan's history
    update = cabac.quantize(diff, -38, QPD, dq_flag=dq).levels
    assert not update[[0, 5, 6, 49]].any()
    history = _history((50, 30), 2)
    ref = ref_encode(update, base, dq=dq, scan=0, history=history, row_skip=1)
    ours = our_encode(update, base, dq=dq, scan=0, history=history, row_skip=True)
    assert ours == ref
    levels, _, _ = our_decode(ref, (50, 30), base, dq=dq, scan=0, history=history)
    np.testing.assert_array_equal(levels, update)


@needs_reference
@pytest.mark.conformance
@pytest.mark.parametrize("cb", [(15, 7), (9, 0), (6, 5)])
def test_codebook_limits_with_tca(cb):
    rng = np.random.default_rng(3)
    size, zero = cb
    update = (rng.integers(0, size, (20, 12)) - zero).astype(np.int32)
    base = (rng.integers(0, size, (20, 12)) - zero).astype(np.int32)
    history = _history((20, 12), 4)
    ref = ref_encode(update, base, dq=False, scan=0, history=history, cb=cb)
    ours = our_encode(update, base, dq=False, scan=0, history=history, cb=cb)
    assert ours == ref
    levels, _, _ = our_decode(ref, (20, 12), base, dq=False, scan=0, history=history, cb=cb)
    np.testing.assert_array_equal(levels, update)


# ---- the tools pay off, and misuse is caught ------------------------------------------------


def _correlated_updates(shape, seed, dq=False):
    """The levels of two consecutive sparse updates touching mostly the same weights in the same
    direction (quantized, so that DQ levels are valid)."""
    rng = np.random.default_rng(seed)
    mask = rng.random(shape) < 0.15
    first = np.where(mask, rng.standard_normal(shape) * 0.03, 0).astype(np.float32)
    second = np.where(mask & (rng.random(shape) < 0.9), first * 0.8, 0).astype(np.float32)
    return (cabac.quantize(first, -38, QPD, dq_flag=dq).levels, cabac.quantize(second, -38, QPD, dq_flag=dq).levels)


@pytest.mark.parametrize("dq", [False, True])
def test_tca_shrinks_a_correlated_update(dq):
    first, second = _correlated_updates((128, 64), 11, dq)
    without = our_encode(second, None, dq=dq, scan=0)
    with_tca = our_encode(second, first, dq=dq, scan=0)
    assert len(with_tca) < 0.8 * len(without)
    levels, _, _ = our_decode(with_tca, second.shape, first, dq=dq, scan=0)
    np.testing.assert_array_equal(levels, second)


def test_hdsp_shrinks_an_update_on_the_same_support():
    first, second = _correlated_updates((128, 64), 12, True)
    history = cabac.HdspHistory()
    history.add("w", first)
    without = our_encode(second, None, dq=True, scan=0)
    with_hdsp = our_encode(second, None, dq=True, scan=0, history=history.get("w"))
    assert len(with_hdsp) < 0.9 * len(without)
    payload, used = cabac.smaller_with_or_without_hdsp(
        lambda on: our_encode(second, None, dq=True, scan=0, history=history.get("w") if on else None)
    )
    assert used and payload == with_hdsp


def test_smaller_with_or_without_hdsp_keeps_off_on_ties():
    payload, used = cabac.smaller_with_or_without_hdsp(lambda on: b"on" if on else b"of")
    assert (payload, used) == (b"of", False)


def test_history_accumulates():
    history = cabac.HdspHistory()
    history.add("w", np.array([[0, 1], [0, 0]], np.int32))
    history.add("w", np.array([[0, 0], [2, 0]], np.int32))
    np.testing.assert_array_equal(history.get("w"), [[0, 1], [1, 0]])
    assert "w" in history and history.get("v") is None
    with pytest.raises(ValueError, match="differs"):
        history.add("w", np.zeros(3, np.int32))


def test_decoding_with_a_wrong_base_gives_other_levels_or_an_error():
    first, second = _correlated_updates((64, 32), 13)
    payload = our_encode(second, first, dq=False, scan=0)
    try:
        levels, _, _ = our_decode(payload, second.shape, np.zeros_like(first), dq=False, scan=0)
    except BitstreamError:
        return
    assert not np.array_equal(levels, second)


def test_base_must_match_the_tensor():
    levels = np.zeros((4, 4), np.int32)
    with pytest.raises(ValueError, match="base has 15 elements"):
        our_encode(levels, np.zeros(15, np.int32), dq=False, scan=0)
    with pytest.raises(TypeError, match="base must be a numpy int32"):
        our_encode(levels, np.zeros((4, 4), np.int64), dq=False, scan=0)
    with pytest.raises(TypeError, match="history must be a numpy uint8"):
        our_encode(levels, None, dq=False, scan=0, history=np.zeros((4, 4), np.int32))


def test_tca_needs_parent_signalling_in_profile_1():
    enc = cabac.PayloadEncoder()
    levels = np.ones((4, 4), np.int32)
    with pytest.raises(ValueError, match="parent_node_id_present_flag"):
        enc.encode_levels(levels, cabac.TensorCoding(), base=levels)
