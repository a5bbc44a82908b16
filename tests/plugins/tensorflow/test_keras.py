# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Keras `.keras` and legacy `.h5` full models: read, NNR round trips, safe mode, `check`."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

import nnrconv
from nnrconv import nnc, testing
from nnrconv._check import check
from nnrconv.cli import main
from nnrconv.core import TensorRole, get_registry
from nnrconv_tensorflow import _container
from tests.plugins.tensorflow import _family_models
from tests.plugins.tensorflow._helpers import LOSSLESS

KINDS = ("keras", "h5")


def _outputs(path: Path) -> np.ndarray:
    import keras

    model = keras.saving.load_model(path, compile=False, safe_mode=True)
    return np.asarray(model(_family_models.keras_input(), training=False))


@pytest.mark.parametrize("kind", KINDS)
def test_read_variables_with_roles(keras_files: dict[str, Path], kind: str) -> None:
    import keras

    path = keras_files[kind]
    assert get_registry().for_input(path).name == "tensorflow"
    model = nnrconv.load(path)
    reference = keras.saving.load_model(path, compile=False)
    assert list(model.tensors) == [v.path for v in reference.weights]
    for tensor, variable in zip(model, reference.weights, strict=True):
        assert np.array_equal(tensor.numpy(), variable.numpy()), tensor.name
    assert model.metadata["tensorflow.kind"] == "keras" and model.metadata["keras.file"] == kind
    roles = {t.name: t.role for t in model}
    assert roles["conv/kernel"] is TensorRole.WEIGHT and roles["conv/bias"] is TensorRole.BIAS
    assert roles["bn/moving_variance"] is TensorRole.BN_VAR
    assert roles["gru/gru_cell/recurrent_kernel"] is TensorRole.WEIGHT


@pytest.mark.parametrize("kind", KINDS)
def test_lossless_round_trip_gives_identical_weights_and_outputs(
    keras_files: dict[str, Path], kind: str, tmp_path: Path
) -> None:
    back = testing.assert_lossless_round_trip(keras_files[kind], tmp_path)
    assert np.array_equal(_outputs(back), _outputs(keras_files[kind]))
    if kind == "keras":
        assert zipfile.is_zipfile(back)
    else:
        assert back.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"


def test_topology_is_a_keras_container(keras_files: dict[str, Path], tmp_path: Path) -> None:
    nnr = tmp_path / "m.nnr"
    nnrconv.convert(keras_files["keras"], nnr, options=LOSSLESS)
    decoded = nnc.decode_model(nnr.read_bytes())
    assert decoded.topology_storage_format == 4
    entries = _container.unpack(decoded.topology)
    assert entries[":kind"] == b"keras" and entries[":file"] == b"keras"
    assert {":config", ":weights"} <= set(entries)
    assert len(decoded.tensors) == len(nnrconv.load(keras_files["keras"]).tensors)


def test_file_kind_follows_the_output_name(keras_files: dict[str, Path], tmp_path: Path) -> None:
    nnr = tmp_path / "m.nnr"
    nnrconv.convert(keras_files["keras"], nnr, options=LOSSLESS)
    as_h5 = tmp_path / "back.h5"
    nnrconv.convert(nnr, as_h5)
    assert as_h5.read_bytes()[:4] == b"\x89HDF"
    assert np.array_equal(_outputs(as_h5), _outputs(keras_files["keras"]))
    plain = tmp_path / "restored"  # no suffix: the kind the model was read from
    assert main([str(nnr), str(plain), "-q"]) == 0
    assert zipfile.is_zipfile(plain)
    testing.assert_models_identical(nnrconv.load(keras_files["keras"]), nnrconv.load(plain))


def test_default_lossy_check_stays_close(keras_files: dict[str, Path]) -> None:
    report = check(keras_files["keras"], atol=1e-2, rtol=1e-2)
    assert report.format == "tensorflow" and report.passed, [(o.name, o.max_abs) for o in report.outputs]
    assert report.outputs and all(o.snr_db > 30 for o in report.outputs)
    exact = check(keras_files["h5"], options=LOSSLESS)
    assert exact.exact and all(o.max_abs == 0 for o in exact.outputs)


@pytest.mark.parametrize("kind", KINDS)
def test_lambda_with_code_is_refused(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _family_models.lambda_model(tmp_path)[kind]
    target = tmp_path / "out.nnr"
    assert main([str(source), str(target)]) == 5
    err = capsys.readouterr().err.strip()
    assert "unsafe deserialization" in err and len(err.splitlines()) == 1
    assert not target.exists()


def test_weights_only_h5_is_no_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "only.weights.h5"
    _family_models.keras_model().save_weights(source)
    assert main([str(source), str(tmp_path / "w.nnr")]) == 3
    assert "not a Keras model" in capsys.readouterr().err


def test_keras_model_is_not_written_as_tflite(keras_files: dict[str, Path], tmp_path: Path) -> None:
    code = main([str(keras_files["keras"]), str(tmp_path / "m.tflite")])
    assert code == 5 and not (tmp_path / "m.tflite").exists()


@pytest.mark.parametrize("kind", KINDS)
def test_embedded_keras_round_trip(keras_files: dict[str, Path], kind: str, tmp_path: Path) -> None:
    import h5py

    source = keras_files[kind]
    nnr = tmp_path / "m.nnr"
    nnrconv.convert(source, nnr, options=LOSSLESS)
    embedded = tmp_path / f"m.nnr.{kind}"
    nnrconv.convert(nnr, embedded)  # the units move unchanged
    again = tmp_path / "again.nnr"
    nnrconv.convert(embedded, again)
    assert again.read_bytes() == nnr.read_bytes()
    plain = tmp_path / f"plain.{kind}"
    nnrconv.convert(embedded, plain)
    testing.assert_models_identical(nnrconv.load(source), nnrconv.load(plain))
    assert np.array_equal(_outputs(plain), _outputs(source))
    if kind == "h5":
        with h5py.File(embedded, "r") as weights:
            assert "nnr_parameter_sets" in weights
    else:
        with zipfile.ZipFile(embedded) as archive:
            assert {"config.json", "metadata.json", "model.weights.h5"} <= set(archive.namelist())


def test_embedded_keras_default_coding_is_smaller(tmp_path: Path) -> None:
    import keras

    keras.utils.set_random_seed(9)
    mlp = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256, name="d1"), keras.layers.Dense(128, name="d2")])
    source = tmp_path / "mlp.keras"
    mlp.save(source)
    embedded = tmp_path / "m.nnr.keras"
    nnrconv.convert(source, embedded)
    assert embedded.stat().st_size < 0.6 * source.stat().st_size  # 50 k float32 weights, coded at 50 dB
    restored = nnrconv.load(embedded)
    original = nnrconv.load(source)
    for key, tensor in original.tensors.items():
        np.testing.assert_allclose(restored.tensors[key].numpy(), tensor.numpy(), atol=1e-2)


def test_corrupt_embedded_unit_is_one_line(keras_files: dict[str, Path], tmp_path: Path) -> None:
    import h5py

    embedded = tmp_path / "m.nnr.h5"
    nnrconv.convert(keras_files["h5"], embedded, options=LOSSLESS)
    with h5py.File(embedded, "r+") as weights:
        name = next(n for n in _dataset_names(weights) if "nnr_key" in weights[n].attrs)
        data = weights[name][()]
        data[len(data) // 2 :] ^= 0x5A
        weights[name][...] = data
    code = main([str(embedded), str(tmp_path / "x.h5")])
    assert code == 4 and not (tmp_path / "x.h5").exists()


def _dataset_names(group) -> list[str]:  # type: ignore[no-untyped-def]
    import h5py

    names: list[str] = []
    group.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
    return names


@pytest.mark.parametrize("name", ["m_savedmodel", "m.pb"])
def test_keras_model_is_not_written_under_a_graph_name(keras_files: dict[str, Path], name: str, tmp_path: Path) -> None:
    assert main([str(keras_files["h5"]), str(tmp_path / name)]) == 5
    assert not (tmp_path / name).exists()


def test_asset_state_is_refused_in_nnr_not_lost(keras_files: dict[str, Path]) -> None:
    from nnrconv.core import UnsupportedError

    model = nnrconv.load(keras_files["keras"])
    model.native.assets = ("assets/string_lookup/vocabulary.txt",)  # as a lookup layer's vocabulary file
    with pytest.raises(UnsupportedError, match="asset files"):
        nnrconv.encode(model)


def test_layer_norm_is_not_batch_norm() -> None:
    import keras

    from nnrconv_tensorflow import _keras

    layers = [keras.Input((4,)), keras.layers.LayerNormalization(name="ln"), keras.layers.Dense(2, name="fc")]
    model = keras.Sequential(layers)
    native = _keras.KerasNative(model, _keras._keys(model.weights), "keras")
    roles = {k.split("/", 1)[-1]: t.role for k, t in _keras._model(native, "m").tensors.items()}
    assert roles == {
        "ln/gamma": TensorRole.OTHER,
        "ln/beta": TensorRole.OTHER,
        "fc/kernel": TensorRole.WEIGHT,
        "fc/bias": TensorRole.BIAS,
    }
