# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Salvage without a base: the topology says which tensors the lost units held; they become zeros.

For each format whose topology declares its carried tensors, a lossless `.nnr` is cut at several
offsets (inside a data unit, at a unit boundary); `--salvage` must write a model whose surviving
tensors are bit-exact, whose lost ones are zeros of the declared type and shape, that the
format's runtime still runs, and must name every zero-filled tensor with unit index and offset.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import nnrconv
from nnrconv import _inputs, nnc
from nnrconv._salvage import SalvageWarning
from nnrconv.cli import main
from nnrconv.core import BitstreamError, get_registry

EXAMPLE = Path(__file__).parents[1] / "examples" / "tiny_cnn.onnx"


def _onnx(tmp: Path) -> Path:
    pytest.importorskip("onnxruntime")
    return EXAMPLE


def _nnef(tmp: Path) -> Path:
    pytest.importorskip("nnef")
    from tests.plugins.nnef._models import cnn_model

    return cnn_model(tmp / "cnn.nnef")[0]


def _torch(container: str) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        pytest.importorskip("torch")
        from tests.plugins.pytorch._models import save

        return save("mlp", container, tmp)[0]

    return build


def _tf(kind: str) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        pytest.importorskip("tensorflow")
        from tests.plugins.tensorflow import _models

        if kind == "pb":
            return _models.frozen_graph("mlp", tmp / "mlp.pb")
        return _models.saved_model("mlp", tmp / "mlp_savedmodel")

    return build


CASES = [
    pytest.param(_onnx, "out.onnx", id="onnx"),
    pytest.param(_nnef, "out.nnef", id="nnef"),
    pytest.param(_torch("pt2"), "out.pt2", id="pt2"),
    pytest.param(_torch("script"), "out.ts.pt", id="torchscript"),
    pytest.param(_torch("state_dict"), "out.pt", id="state_dict"),
    pytest.param(_tf("pb"), "out.pb", id="tf_frozen", marks=pytest.mark.slow),
    pytest.param(_tf("savedmodel"), "out_savedmodel", id="tf_savedmodel", marks=pytest.mark.slow),
]


def _cuts(data: bytes) -> list[tuple[int, set[str]]]:
    """Cut offsets (inside the second-to-last data unit, at the start of the second, in the middle
    of the first) with the tensors whose units are lost by each."""
    infos = [i for i in nnc.inspect_units(data) if i.unit_type == "NNR_NDU" and i.member is None]
    assert len(infos) >= 3
    cuts = [infos[-2].byte_offset + infos[-2].size // 2, infos[1].byte_offset, infos[0].byte_offset + 3]
    return [(cut, {i.tensor for i in infos if i.byte_offset + i.size > cut}) for cut in cuts]


@pytest.mark.parametrize(("build", "out_name"), CASES)
def test_a_cut_stream_is_salvaged_from_its_topology(
    build: Callable[[Path], Path], out_name: str, tmp_path: Path
) -> None:
    source = build(tmp_path)
    nnr = tmp_path / "m.nnr"
    nnrconv.convert(source, nnr, options=nnc.CodingOptions(lossless=True))
    data = nnr.read_bytes()
    original = nnrconv.load(source)
    fmt = get_registry().get(original.source_format)
    for cut, lost in _cuts(data):
        damaged, out = tmp_path / f"cut{cut}.nnr", tmp_path / f"{cut}_{out_name}"
        damaged.write_bytes(data[:cut])
        with pytest.raises(BitstreamError):
            nnrconv.convert(damaged, tmp_path / f"refused_{out_name}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SalvageWarning)
            nnrconv.convert(damaged, out, salvage=True)
        messages = "\n".join(str(w.message) for w in caught if issubclass(w.category, SalvageWarning))
        salvaged = nnrconv.load(out)
        for name in lost:
            assert any(f"tensor {name!r}" in m and "filled with zeros" in m for m in messages.splitlines()), name
        for name, tensor in original.tensors.items():
            got = salvaged.tensors[name].numpy()
            want = tensor.numpy()
            assert got.dtype == want.dtype and got.shape == want.shape, name
            if name in lost:
                assert not got.any(), name
            else:
                assert got.tobytes() == want.tobytes(), name
        assert f"after byte offset {cut}, from unit" in messages or f"byte offset {cut}" in messages
        if fmt.can_run(salvaged):
            feed = _inputs.synthesize_feeds(fmt.input_specs(salvaged), 1, 0)[0]
            outputs = fmt.run(salvaged, feed)
            assert outputs and all(np.asarray(v).size for v in outputs.values())


def test_zero_fills_stay_within_the_memory_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A lost tensor larger than the budget is refused (exit 4, one line) before it is allocated."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    small = numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "small")
    big = numpy_helper.from_array(rng.standard_normal((512, 1024)).astype(np.float32), "big")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "small"], ["y"]), helper.make_node("Identity", ["big"], ["z"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [512, 1024]),
        ],
        [small, big],
    )
    source, nnr, cut = tmp_path / "m.onnx", tmp_path / "m.nnr", tmp_path / "cut.nnr"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), source)
    assert main(["convert", str(source), str(nnr), "--lossless", "-q"]) == 0
    data = nnr.read_bytes()
    big_unit = next(i for i in nnc.inspect_units(data) if i.tensor == "big")
    cut.write_bytes(data[: big_unit.byte_offset + 10])
    out = tmp_path / "out.onnx"
    assert main(["convert", str(cut), str(out), "--salvage", "--max-memory", "1M", "-q"]) == 4
    err = capsys.readouterr().err
    assert "zero-filling 1 lost tensor(s) (largest 'big' [512, 1024], 2.0 MiB)" in err and "--max-memory" in err
    assert not out.exists()
    assert main(["convert", str(cut), str(out), "--salvage", "--max-memory", "3M", "-q"]) == 0
    assert "tensor 'big' [512, 1024] FLOAT" in capsys.readouterr().err
    assert not nnrconv.load(out).tensors["big"].numpy().any()
