# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`nnrconv merge BASE UPDATE... OUT`: federated averaging of NNR updates of one base."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")

import nnrconv
from nnrconv import nnc
from tests.test_incremental import SHAPES, _initializers, _mlp, _weights, run
from tests.test_update_chains import _tuned


@pytest.fixture
def providers(tmp_path, capsys):
    """base.nnr and three providers' updates of it (p0..p2.nnr), with their decoded tensors."""
    w0 = _weights()
    _mlp(tmp_path / "base.onnx", w0)
    assert run(capsys, "convert", tmp_path / "base.onnx", tmp_path / "base.nnr", "-q")[0] == 0
    base = nnc.read_base((tmp_path / "base.nnr").read_bytes())
    restored = []
    for i in range(3):
        _mlp(tmp_path / f"p{i}.onnx", _tuned(w0, 10 + i))
        update = tmp_path / f"p{i}.nnr"
        assert run(capsys, "convert", tmp_path / f"p{i}.onnx", update, "--base", tmp_path / "base.nnr", "-q")[0] == 0
        restored.append(nnc.decode_model(update.read_bytes(), base=base).tensors)
    return tmp_path, base, restored


def _expected(base, restored, weights):
    share = np.asarray(weights, np.float64) / sum(weights)
    out = {}
    for name in SHAPES:
        b = base.tensors[name].values.astype(np.float64)
        out[name] = (
            b + sum(w * (r[name].astype(np.float64) - b) for w, r in zip(share, restored, strict=True))
        ).astype(np.float32)
    return out


def test_full_merge_is_the_weighted_mean_of_the_updates(providers, capsys):
    folder, base, restored = providers
    updates = [folder / f"p{i}.nnr" for i in range(3)]
    code, out, err = run(
        capsys, "merge", folder / "base.nnr", *updates, folder / "m.onnx", "--full", "--weights", "1,2,5"
    )
    assert code == 0, err
    assert "3 updates" in out
    got = _initializers(folder / "m.onnx")
    for name, want in _expected(base, restored, [1, 2, 5]).items():
        np.testing.assert_allclose(got[name], want.reshape(got[name].shape), rtol=0, atol=1e-7)


def test_merged_update_restores_the_mean_and_is_one_update(providers, capsys):
    folder, base, restored = providers
    updates = [folder / f"p{i}.nnr" for i in range(3)]
    merged = folder / "m.nnr"
    assert run(capsys, "merge", folder / "base.nnr", *updates, merged, "-q")[0] == 0
    assert run(capsys, "convert", merged, folder / "m.onnx", "--base", folder / "base.nnr", "-q")[0] == 0
    got = _initializers(folder / "m.onnx")
    expected = _expected(base, restored, [1, 1, 1])
    for name in SHAPES:
        # coded once more, as precisely as a full coding of the mean
        assert nnc.snr_db(expected[name], got[name].reshape(expected[name].shape)) > nnc.DEFAULT_SNR_DB - 1
    assert merged.stat().st_size < 1.3 * max(u.stat().st_size for u in updates)


def test_python_api(providers):
    folder, _, _ = providers
    result = nnrconv.merge(folder / "base.nnr", [folder / "p0.nnr", folder / "p1.nnr"], folder / "m.nnr")
    assert result.updates == 2 and result.weights == (0.5, 0.5) and result.target_bytes > 0


def test_an_update_of_another_base_is_refused(providers, capsys):
    folder, _, _ = providers
    _mlp(folder / "other.onnx", _weights(seed=9))
    assert run(capsys, "convert", folder / "other.onnx", folder / "other.nnr", "-q")[0] == 0
    _mlp(folder / "q.onnx", _tuned(_weights(seed=9), 3))
    assert run(capsys, "convert", folder / "q.onnx", folder / "q.nnr", "--base", folder / "other.nnr", "-q")[0] == 0
    code, _, err = run(capsys, "merge", folder / "base.nnr", folder / "p0.nnr", folder / "q.nnr", folder / "m.nnr")
    assert code == 3 and "q.nnr does not follow" in err and "tensor 'fc" in err
    assert not (folder / "m.nnr").exists()


def test_a_full_model_is_no_update(providers, capsys):
    folder, _, _ = providers
    code, _, err = run(capsys, "merge", folder / "base.nnr", folder / "p0.nnr", folder / "base.nnr", folder / "m.nnr")
    assert code == 3 and "is a full model, not an update" in err


def test_weights_must_fit(providers, capsys):
    folder, _, _ = providers
    args = ("merge", folder / "base.nnr", folder / "p0.nnr", folder / "p1.nnr", folder / "m.nnr")
    assert run(capsys, *args, "--weights", "1")[0] == 2
    assert run(capsys, *args, "--weights", "1,x")[0] == 2
    assert run(capsys, *args, "--weights", "0,0")[0] == 2


def test_merge_against_a_chain(providers, capsys):
    folder, _, _ = providers
    g1 = folder / "g1.nnr"
    assert run(capsys, "merge", folder / "base.nnr", folder / "p0.nnr", folder / "p1.nnr", g1, "-q")[0] == 0
    _mlp(folder / "q.onnx", _tuned(_weights(), 21))
    q = folder / "q.nnr"
    assert run(capsys, "convert", folder / "q.onnx", q, "--base", folder / "base.nnr", "--base", g1, "-q")[0] == 0
    g2 = folder / "g2.nnr"
    assert run(capsys, "merge", folder / "base.nnr", q, g2, "--chain", g1, "-q")[0] == 0
    chain = nnc.read_chain([((folder / n).read_bytes(), n) for n in ("base.nnr", "g1.nnr", "g2.nnr")])
    assert chain.links == 3
    # without the chain, q does not follow the base
    assert run(capsys, "merge", folder / "base.nnr", q, folder / "x.nnr")[0] == 3
