# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Model delivery on a real trained model (PP-OCR v2.0 text-orientation classifier, rapidocr):
a chain of updates, bound parents, merging and a cut update, judged by onnxruntime outputs and
by NNCodec 2.1.3's decoder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import nnrconv  # noqa: E402
from nnrconv import nnc  # noqa: E402
from nnrconv.core import ArrayTensor  # noqa: E402
from tests.test_incremental import _without_topology, run  # noqa: E402
from tests.test_update_chains import _nncodec_chain  # noqa: E402

pytestmark = pytest.mark.slow


def _classifier() -> Path:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or spec.origin is None:
        pytest.skip("rapidocr-onnxruntime is not installed (pip install --no-deps rapidocr-onnxruntime==1.4.4)")
    return Path(spec.origin).parent / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"


def _tune(source: Path, target: Path, seed: int, strength: float = 0.01) -> dict[str, np.ndarray]:
    """Move every float tensor by Gaussian noise of `strength` times its spread (non-negative
    tensors such as variances by a factor exp(strength * noise), so they stay positive); returns
    the new tensors."""
    model = nnrconv.load(source)
    rng = np.random.default_rng(seed)
    moved = {}
    for name, tensor in list(model.tensors.items()):
        array = tensor.numpy()
        if array.dtype != np.float32 or array.size < 2:
            continue
        noise = rng.standard_normal(array.shape)
        if array.min() >= 0:  # variances, scales: relative moves, never through zero
            new = (array * np.exp(strength * noise)).astype(np.float32)
        else:
            new = (array + noise * strength * float(array.std() or 1.0)).astype(np.float32)
        model.tensors[name] = ArrayTensor(name, new, role=tensor.role)
        moved[name] = new
    nnrconv.save(model, target)
    return moved


def _outputs(path: Path) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((4, 3, 48, 192)).astype(np.float32)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pp_ocr")
    source = _classifier()
    _tune(source, folder / "t1.onnx", 1)
    _tune(folder / "t1.onnx", folder / "t2.onnx", 2)
    nnrconv.convert(source, folder / "base.nnr")
    nnrconv.convert(folder / "t1.onnx", folder / "u1.nnr", base=folder / "base.nnr")
    nnrconv.convert(folder / "t2.onnx", folder / "u2.nnr", base=[folder / "base.nnr", folder / "u1.nnr"])
    nnrconv.convert(folder / "t2.onnx", folder / "full2.nnr")
    return folder


def test_chain_restores_the_fine_tuned_outputs_and_is_smaller(chain):
    restored = chain / "r2.onnx"
    nnrconv.convert(chain / "u2.nnr", restored, base=[chain / "base.nnr", chain / "u1.nnr"])
    nnrconv.convert(chain / "full2.nnr", chain / "full2.onnx")
    wanted, got, full = _outputs(chain / "t2.onnx"), _outputs(restored), _outputs(chain / "full2.onnx")
    assert np.argmax(got, 1).tolist() == np.argmax(wanted, 1).tolist()
    # as close to the fine-tuned model as a full coding of it
    assert np.abs(got - wanted).max() < 2 * np.abs(full - wanted).max() + 1e-4
    assert (chain / "u2.nnr").stat().st_size < 0.9 * (chain / "full2.nnr").stat().st_size


@pytest.mark.conformance
def test_nncodec_decodes_the_chain(chain):
    pytest.importorskip("nncodec")
    links = [_without_topology((chain / n).read_bytes()) for n in ("base.nnr", "u1.nnr", "u2.nnr")]
    reference = _nncodec_chain(links)
    ours = nnc.read_chain([((chain / n).read_bytes(), n) for n in ("base.nnr", "u1.nnr", "u2.nnr")])
    assert reference
    for name, array in reference.items():
        np.testing.assert_array_equal(ours.tensors[name].values.reshape(array.shape), array, err_msg=name)


def test_a_base_with_the_same_shapes_but_other_values_is_refused(chain, capsys):
    other = chain / "other.nnr"
    nnrconv.convert(_classifier(), other, options=nnc.CodingOptions(qp=-30), force=True)
    code, _, err = run(capsys, "convert", chain / "u1.nnr", chain / "x.onnx", "--base", other)
    assert code == 3 and "does not follow" in err and "another model" in err


def test_merge_and_a_cut_update(chain, capsys):
    merged = chain / "m.nnr"
    result = nnrconv.merge(chain / "base.nnr", [chain / "u1.nnr", chain / "u1.nnr"], merged, force=True)
    assert result.tensors > 100
    nnrconv.convert(merged, chain / "m.onnx", base=chain / "base.nnr", force=True)
    nnrconv.convert(chain / "u1.nnr", chain / "r1.onnx", base=chain / "base.nnr", force=True)
    # the mean of one update taken twice is that update, coded once more
    np.testing.assert_allclose(_outputs(chain / "m.onnx"), _outputs(chain / "r1.onnx"), atol=1e-3)
    data = (chain / "u1.nnr").read_bytes()
    (chain / "cut.nnr").write_bytes(data[: len(data) // 2])
    code, _, err = run(
        capsys, "convert", chain / "cut.nnr", chain / "c.onnx", "--base", chain / "base.nnr", "--salvage"
    )
    assert code == 0, err
    assert "complete data units are decoded" in err and "kept for the rest" in err
