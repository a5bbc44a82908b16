# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""NNCodec 2.1.3's own high-level encoder and decoder on a dict of numpy arrays, without torchvision.

`nncodec.nnc.compress` imports datasets and frameworks; these functions run the same pipeline
steps on `nncodec.nnc_core` directly (init_approx_data, ApproxInfo, approx, coder.encode /
coder.decode, rec, recompose_params), with `nnc.compress`'s defaults.
"""

from __future__ import annotations

import contextlib
import copy
import io
import sys
import types

import numpy as np


def import_nnc_core():  # type: ignore[no-untyped-def]
    """`nncodec.nnc_core`, with torchvision stubbed (the core does not use it)."""
    sys.modules.setdefault("torchvision", types.ModuleType("torchvision"))
    from nncodec import nnc_core

    return nnc_core


def compress(
    params: dict[str, np.ndarray],
    *,
    qp: int = -38,
    nonweight_qp: int = -75,
    use_dq: bool = True,
    scan_order: int = 0,
    row_skipping: bool = False,
    qp_density: int = 2,
    qp_per_tensor: dict[str, int] | None = None,
    codebook_mode: int = 0,
    lambda_scale: float = 0.0,
) -> bytes:
    """The bitstream `nncodec.nnc.compress` writes (profile 1, topology NNR_TPL_UNREC)."""
    nnc_core = import_nnc_core()
    params = {k: np.ascontiguousarray(v) for k, v in params.items()}
    with contextlib.redirect_stdout(io.StringIO()):
        model = nnc_core.nnr_model.NNRModel(params)
        approx_data = nnc_core.approximator.init_approx_data(
            params, model.model_info, qp_density=qp_density, scan_order=scan_order
        )
        info = nnc_core.approximator.ApproxInfo(
            approx_data,
            model.model_info,
            "uniform",
            codebook_mode,
            qp,
            False,
            not use_dq,
            10,
            lambda_scale,
            nonweight_qp=nonweight_qp,
            qp_per_tensor=qp_per_tensor,
            int_quant_bw=False,
        ).approx_info
        enc_info = {
            "cabac_unary_length_minus1": 10,
            "param_opt_flag": True,
            "partial_data_counter": 0,
            "general_profile_idc": 1,
            "node_id_present_flag": 1,
            "device_id": 0,
            "mps_parent_signalling_enabled_flag": 0,
            "parent_node_id_present_flag": 0,
            "temporal_context_modeling_flag": 0,
            "row_skip_enabled_flag": 1 if row_skipping else 0,
            "pre_signalling": 0,
        }
        approx = nnc_core.approximator.approx(info, model.model_info, approx_data, enc_info)
        bitstream, _ = nnc_core.coder.encode(
            enc_info=enc_info,
            model_info=model.model_info,
            approx_data=approx,
            approx_param_base=None,
            update_base_param=False,
            tool_if=None,
        )
    return bytes(bitstream)


def empty_model_info() -> dict:
    """The model_info `nnc_core.coder.decode` fills in while it reads a bitstream."""
    return {
        "parameter_type": {},
        "parameter_dimensions": {},
        "parameter_index": {},
        "block_identifier": {},
        "topology_storage_format": None,
        "topology_compression_format": None,
        "performance_maps": {"mps": {}, "lps": {}},
        "performance_map_flags": {
            key: {}
            for key in (
                "mps_sparsification_flag",
                "lps_sparsification_flag",
                "mps_pruning_flag",
                "lps_pruning_flag",
                "mps_unification_flag",
                "lps_unification_flag",
                "mps_decomposition_performance_map_flag",
                "lps_decomposition_performance_map_flag",
            )
        },
    }


def decompress(bitstream: bytes) -> dict[str, np.ndarray]:
    """The tensors `nncodec.nnc.decompress` returns."""
    nnc_core = import_nnc_core()
    model_info = empty_model_info()
    with contextlib.redirect_stdout(io.StringIO()):
        data = nnc_core.coder.decode(
            bytearray(bitstream),
            model_info,
            hls_stats={},
            oob_dict={},
            approx_param_base=None,
            update_base_param=False,
            tool_if=None,
        )
        rec = copy.copy(data)
        nnc_core.approximator.rec(rec)
        nnc_core.approximator.unfold_bn(model_info, rec)
        nnc_core.approximator.apply_lsa(model_info, rec)
        rec = nnc_core.approximator.recompose_params(model_info, rec)
    return dict(rec["parameters"])
