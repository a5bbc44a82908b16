# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Per-tensor plans (`CodingOptions.plan`) and per-QP rates (`tensor_rate`) for rate allocators."""

from __future__ import annotations

import numpy as np
import pytest

from nnrconv import nnc
from nnrconv.nnc import TensorChoice, cabac, tensor_rate
from nnrconv.nnc._framing import read_units


def _params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "conv.weight": rng.standard_normal((16, 8, 3, 3)).astype(np.float32) * 0.1,
        "fc.weight": rng.laplace(size=(32, 64)).astype(np.float32) * 0.02,
        "fc.bias": rng.standard_normal(32).astype(np.float32) * 0.01,
        "emb": rng.standard_normal((50, 12)).astype(np.float32),
        "steps": np.arange(40, dtype=np.int64),
    }


PLAN = {
    "conv.weight": TensorChoice(qp=-30),
    "fc.weight": TensorChoice(qp=-44, dq=False),
    "fc.bias": TensorChoice(qp=-60, lambda_scale=2.0),
    "emb": TensorChoice(exact=True),
}


def test_a_plan_sets_each_tensors_qp_and_decodes_to_its_rate_reconstruction():
    params = _params()
    options = nnc.CodingOptions(plan=PLAN)
    head, ndus = nnc.encode_parts(params, options)
    decoded = nnc.decode_parts(head, ndus)
    for name in ("conv.weight", "fc.weight", "fc.bias"):
        choice = PLAN[name]
        rate = tensor_rate(params[name], choice.qp, dq=choice.dq is not False, lambda_scale=choice.lambda_scale or 0.0)
        np.testing.assert_array_equal(decoded[name], rate.reconstruction)
        step = cabac.step_size(choice.qp)
        assert np.abs(decoded[name] - params[name]).max() <= 2 * step  # quantized at that step (DQ: 2Δ)
    assert decoded["emb"].tobytes() == params["emb"].tobytes()  # exact: raw float32
    np.testing.assert_array_equal(decoded["steps"], params["steps"])


def test_tensor_rate_counts_the_ndu_payload():
    params = _params()
    for qp in (-40, -32, -24):
        choice = {"fc.weight": TensorChoice(qp=qp)}
        data = nnc.encode_model([("fc.weight", params["fc.weight"])], b"", 0, options=nnc.CodingOptions(plan=choice))
        (ndu,) = [p.unit for p in read_units(data) if isinstance(p.unit, nnc.CompressedDataUnit)]
        assert len(bytes(ndu.payload)) == tensor_rate(params["fc.weight"], qp).payload_bytes


def test_rates_fall_and_errors_grow_with_the_qp():
    w = _params()["fc.weight"]
    rates = [tensor_rate(w, qp) for qp in range(-48, -16, 4)]
    sizes = [r.payload_bytes for r in rates]
    errors = [r.sse for r in rates]
    assert sizes == sorted(sizes, reverse=True) and errors == sorted(errors)


def test_a_plan_is_deterministic_and_leaves_other_tensors_to_the_mode():
    params = _params()
    options = nnc.CodingOptions(qp=-36, plan={"conv.weight": TensorChoice(qp=-20)})
    first = nnc.encode_model(list(params.items()), b"", 0, options=options)
    assert first == nnc.encode_model(list(params.items()), b"", 0, options=options)
    plain = nnc.decode_parts(*nnc.encode_parts(params, nnc.CodingOptions(qp=-36)))
    planned = nnc.decode_parts(*nnc.encode_parts(params, options))
    np.testing.assert_array_equal(planned["fc.weight"], plain["fc.weight"])
    assert not np.array_equal(planned["conv.weight"], plain["conv.weight"])


def test_plans_refuse_lossless_and_out_of_range_choices():
    with pytest.raises(ValueError, match="exclusive"):
        nnc.CodingOptions(lossless=True, plan={"a": TensorChoice(qp=1)})
    with pytest.raises(ValueError, match="qp"):
        TensorChoice(qp=5000)
    with pytest.raises(ValueError, match="lambda_scale"):
        TensorChoice(lambda_scale=-1.0)


@pytest.mark.conformance
def test_nncodec_decodes_a_planned_stream():
    try:
        from tests.nnc import _nncodec_ref as ref

        ref.import_nnc_core()
    except Exception as exc:  # pragma: no cover - depends on the environment
        pytest.skip(f"NNCodec 2.1.3 is not importable ({exc!r})")
    params = _params()
    del params["steps"]
    options = nnc.CodingOptions(plan=PLAN)
    data = nnc.encode_model(list(params.items()), b"", 0, options=options)
    theirs = ref.decompress(data)
    ours = nnc.decode_parts(*nnc.encode_parts(params, options))
    for name, value in ours.items():
        np.testing.assert_array_equal(np.asarray(theirs[name]).reshape(value.shape), value, err_msg=name)
