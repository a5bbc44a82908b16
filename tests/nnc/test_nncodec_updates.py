# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Updates the other way round: a chain NNCodec 2.1.3 encodes (a base, then differences with
temporal context adaptation and HDSP, its parameter-update-tree bookkeeping carried along, as its
federated clients do) is decoded by `nnc.read_chain` / `nnc.decode_model` to the same tensors."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest

from nnrconv import nnc
from nnrconv.core import BaseMismatchError

pytestmark = pytest.mark.conformance


@pytest.fixture(scope="module")
def nnc_core():  # type: ignore[no-untyped-def]
    pytest.importorskip("nncodec")
    from tests.nnc import _nncodec_ref

    return _nncodec_ref.import_nnc_core()


def _encode(nnc_core, params, *, state=None, tool=None, differences=False, qp=-38):  # type: ignore[no-untyped-def]
    """NNCodec's `nnc.compress` steps on numpy tensors: (bitstream, levels, reconstruction)."""
    params = {k: np.ascontiguousarray(v) for k, v in params.items()}
    with contextlib.redirect_stdout(io.StringIO()):
        model = nnc_core.nnr_model.NNRModel(params)
        approx_data = nnc_core.approximator.init_approx_data(params, model.model_info, qp_density=2, scan_order=0)
        info = nnc_core.approximator.ApproxInfo(
            approx_data, model.model_info, "uniform", 0, qp, False, False, 10, 0.0,
            nonweight_qp=-75, qp_per_tensor=None, int_quant_bw=False,
        ).approx_info  # fmt: skip
        enc_info = {
            "cabac_unary_length_minus1": 10,
            "param_opt_flag": True,
            "partial_data_counter": 0,
            "general_profile_idc": 1,
            "node_id_present_flag": 1,
            "device_id": 0,
            "mps_parent_signalling_enabled_flag": int(differences),
            "parent_node_id_present_flag": int(differences),
            "temporal_context_modeling_flag": int(differences),
            "row_skip_enabled_flag": 0,
            "pre_signalling": 0,
        }
        if differences:
            enc_info["parent_node_id_type"] = nnc_core.hls.ParentNodeIdType.ICNN_NDU_ID
            enc_info["parent_device_id"] = 0
        approx = nnc_core.approximator.approx(info, model.model_info, approx_data, enc_info)
        bitstream, _ = nnc_core.coder.encode(
            enc_info=enc_info, model_info=model.model_info, approx_data=approx,
            approx_param_base=state, update_base_param=state is not None, tool_if=tool,
        )  # fmt: skip
        levels = {k: v.copy() for k, v in approx["parameters"].items()}
        rec = copy.copy(approx)
        nnc_core.approximator.rec(rec)
    return bytes(bitstream), levels, dict(rec["parameters"])


def test_a_chain_nncodec_writes_decodes_to_its_tensors(nnc_core):
    from nncodec.nnc_core.hdsp.hdsp_tool import HdspTool

    rng = np.random.default_rng(0)
    w0 = {
        "w": (rng.standard_normal((32, 16)) * 0.1).astype(np.float32),
        "v": (rng.standard_normal((8, 24)) * 0.1).astype(np.float32),
    }
    w1 = {k: v + (rng.standard_normal(v.shape) * 0.01).astype(np.float32) for k, v in w0.items()}
    w2 = {k: v + (rng.standard_normal(v.shape) * 0.01).astype(np.float32) for k, v in w1.items()}
    bs0, levels0, rec0 = _encode(nnc_core, w0)
    state = {
        "parameters": dict(levels0),
        "put_node_depth": dict.fromkeys(levels0, 0),
        "device_id": 0,
        "parameter_id": {k: i for i, k in enumerate(levels0)},
    }
    tool = HdspTool(True)
    tool.add_data_to_hist(levels0)
    bs1, levels1, d1 = _encode(nnc_core, {k: w1[k] - rec0[k] for k in w1}, state=state, tool=tool, differences=True)
    tool.add_data_to_hist(levels1)
    r1 = {k: (rec0[k] + d1[k]).astype(np.float32) for k in w1}
    bs2, _, d2 = _encode(nnc_core, {k: w2[k] - r1[k] for k in w2}, state=state, tool=tool, differences=True)
    r2 = {k: (r1[k] + d2[k]).astype(np.float32) for k in w2}
    depths = [
        p.unit.header.node_id.put_node_depth for p in nnc.read_units(bs2) if isinstance(p.unit, nnc.CompressedDataUnit)
    ]
    assert depths == [2, 2]
    chain = nnc.read_chain([(bs0, "base"), (bs1, "u1")])
    got = nnc.decode_model(bs2, base=chain).tensors
    for name, want in r2.items():
        np.testing.assert_array_equal(got[name].reshape(want.shape), want)
    # the second update does not follow the base alone (a link missing)
    with pytest.raises(BaseMismatchError, match="does not follow"):
        nnc.decode_model(bs2, base=nnc.read_base(bs0))
