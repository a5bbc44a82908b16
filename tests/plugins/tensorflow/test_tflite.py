# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""TFLite flatbuffers (float and full-integer int8): NNR round trips, interpreter outputs, `check`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nnrconv
from nnrconv import nnc, testing
from nnrconv._check import check, random_inputs
from nnrconv.cli import main
from nnrconv.core import BitstreamError, DType, TensorRole, get_registry
from nnrconv_tensorflow import _container, _tflite
from tests.plugins.tensorflow._helpers import LOSSLESS


def _interpret(path: Path) -> dict[str, np.ndarray]:
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    feed = random_inputs(get_registry().get("tensorflow").input_specs(nnrconv.load(path)), seed=3)
    interpreter.set_tensor(detail["index"], next(iter(feed.values())))
    interpreter.invoke()
    return {d["name"]: interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()}


def test_read_buffers_as_tensors(tflite_files: dict[str, Path]) -> None:
    model = nnrconv.load(tflite_files["float"])
    assert get_registry().for_input(tflite_files["float"]).name == "tensorflow"
    assert model.metadata["tensorflow.kind"] == "tflite"
    weights = [t for t in model if t.role is TensorRole.WEIGHT]
    assert len(weights) == 4 and all(t.dtype is DType.FLOAT for t in weights)
    quantized = nnrconv.load(tflite_files["int8"])
    assert {t.dtype for t in quantized if t.role is TensorRole.WEIGHT} == {DType.INT8}
    assert {t.dtype for t in quantized if t.role is TensorRole.BIAS} == {DType.INT32}


@pytest.mark.parametrize("kind", ["float", "int8"])
def test_lossless_round_trip_is_the_same_file(tflite_files: dict[str, Path], kind: str, tmp_path: Path) -> None:
    back = testing.assert_lossless_round_trip(tflite_files[kind], tmp_path)
    assert back.read_bytes() == tflite_files[kind].read_bytes()


def test_int8_weights_and_scales_travel_exactly_by_default(tflite_files: dict[str, Path], tmp_path: Path) -> None:
    source = tflite_files["int8"]
    nnr, back = tmp_path / "q.nnr", tmp_path / "q.tflite"
    nnrconv.convert(source, nnr)  # default (lossy) coding: integer tensors are always exact
    nnrconv.convert(nnr, back)
    assert back.read_bytes() == source.read_bytes()  # the scales live in the flatbuffer, kept as is
    assert nnr.stat().st_size < source.stat().st_size
    before, after = _interpret(source), _interpret(back)
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)


def test_float_default_coding_stays_close(tflite_files: dict[str, Path], tmp_path: Path) -> None:
    report = check(tflite_files["float"], atol=1e-2, rtol=1e-2)
    assert report.format == "tensorflow" and report.passed
    assert report.outputs and all(o.snr_db > 30 for o in report.outputs)
    nnr, back = tmp_path / "f.nnr", tmp_path / "f.tflite"
    nnrconv.convert(tflite_files["float"], nnr)
    nnrconv.convert(nnr, back)
    before, after = _interpret(tflite_files["float"]), _interpret(back)
    for name, value in before.items():
        np.testing.assert_allclose(after[name], value, atol=1e-2, rtol=1e-2)
    assert back.stat().st_size == tflite_files["float"].stat().st_size


def test_topology_is_the_flatbuffer_without_the_carried_bytes(tflite_files: dict[str, Path], tmp_path: Path) -> None:
    source = tflite_files["float"]
    nnr = tmp_path / "m.nnr"
    nnrconv.convert(source, nnr, options=LOSSLESS)
    decoded = nnc.decode_model(nnr.read_bytes())
    entries = _container.unpack(decoded.topology)
    assert entries[":kind"] == b"tflite"
    carried = sum(np.asarray(a).nbytes for a in decoded.tensors.values())
    assert len(entries[":flatbuffer"]) == source.stat().st_size - carried


def test_nnr_decodes_to_tflite_without_to(tflite_files: dict[str, Path], tmp_path: Path) -> None:
    nnr = tmp_path / "m.nnr"
    nnrconv.convert(tflite_files["int8"], nnr, options=LOSSLESS)
    out = tmp_path / "restored"
    assert main([str(nnr), str(out), "-q"]) == 0
    assert out.read_bytes() == tflite_files["int8"].read_bytes()


def test_bad_cut_list_is_a_bitstream_error(tflite_files: dict[str, Path]) -> None:
    model = nnrconv.load(tflite_files["float"])
    fmt = get_registry().get("tensorflow")
    carried = {t.name for t in model if t.dtype is DType.FLOAT}
    entries = _container.unpack(fmt.topology_bytes(model, carried))
    tensors = {k: model.tensors[k] for k in carried}
    bad = dict(entries, **{":cuts": b'[{"key": "x", "start": 1, "length": 99999999999}]'})
    with pytest.raises(BitstreamError):
        _tflite.from_container(bad, {"x": model.tensors[next(iter(carried))]})
    assert _tflite.from_container(entries, tensors).native.data == tflite_files["float"].read_bytes()


def test_tflite_is_not_written_as_keras(tflite_files: dict[str, Path], tmp_path: Path) -> None:
    assert main([str(tflite_files["float"]), str(tmp_path / "m.keras")]) == 5
    assert not (tmp_path / "m.keras").exists()


@pytest.mark.parametrize("keep", [0.3, 0.7])
def test_truncated_tflite_is_one_line_exit_3(
    tflite_files: dict[str, Path], keep: float, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tflite_files["float"].read_bytes()
    source = tmp_path / "cut.tflite"
    source.write_bytes(data[: int(len(data) * keep)])
    assert main([str(source), str(tmp_path / "cut.nnr")]) == 3
    err = capsys.readouterr().err.strip()
    assert "cut.tflite" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "cut.nnr").exists()
