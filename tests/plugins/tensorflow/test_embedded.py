# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""NNR inside a frozen GraphDef (`.nnr.pb`): same tensors as the `.nnr`, units moved unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tensorflow.core.framework import graph_pb2, types_pb2

import nnrconv
from nnrconv import nnc
from nnrconv.core import CodedTensor, DType, get_registry
from nnrconv_tensorflow import _digest_folder, _embed
from tests.plugins.tensorflow import _models
from tests.plugins.tensorflow._helpers import LOSSLESS, assert_same_outputs, assert_tensors_identical, run

FROZEN = [f"{kind}.pb" for kind in _models.KINDS]


def _graph(path: Path) -> graph_pb2.GraphDef:
    return graph_pb2.GraphDef.FromString(path.read_bytes())


def test_output_name_selects_the_embedded_container() -> None:
    fmt = get_registry().for_output(Path("m.nnr.pb"))
    assert fmt.name == "tensorflow" and fmt.matches_embedded(Path("m.nnr.pb"))
    assert not fmt.matches_embedded(Path("m.pb"))


@pytest.mark.parametrize("name", FROZEN)
def test_lossless_embedding_restores_tensors_and_outputs(name: str, tf_models: dict[str, Path], tmp_path: Path) -> None:
    source, embedded = tf_models[name], tmp_path / "m.nnr.pb"
    nnrconv.convert(source, embedded, options=LOSSLESS)
    original, loaded = nnrconv.load(source), nnrconv.load(embedded)
    assert_tensors_identical(original, loaded)
    assert all(isinstance(t, CodedTensor) for t in loaded if t.dtype is DType.FLOAT)
    x = _models.sample_input(name.split(".")[0])
    assert_same_outputs(run(original, x), run(loaded, x))
    # Written back as a plain frozen graph, TensorFlow runs it with the same results.
    nnrconv.convert(embedded, tmp_path / "plain.pb")
    assert not _embed.is_embedded(_graph(tmp_path / "plain.pb"))
    assert_same_outputs(run(original, x), run(nnrconv.load(tmp_path / "plain.pb"), x))


def test_layout_is_a_parseable_graph_def(tf_models: dict[str, Path], tmp_path: Path) -> None:
    embedded = tmp_path / "m.nnr.pb"
    nnrconv.convert(tf_models["mlp.pb"], embedded, options=LOSSLESS)
    graph_def = _graph(embedded)
    assert _embed.is_embedded(graph_def)
    (sets,) = [n for n in graph_def.node if n.name == _embed.PARAMETER_SETS_NODE]
    assert sets.op == "Const" and sets.attr["value"].tensor.dtype == types_pb2.DT_UINT8
    coded = [n for n in graph_def.node if _embed.DTYPE_ATTR in n.attr]
    assert coded and len(coded) == len(nnrconv.load(embedded).tensors)
    for node in coded:
        value = node.attr["value"].tensor
        assert node.op == "Const" and node.attr["dtype"].type == value.dtype == types_pb2.DT_UINT8
        assert node.attr[_embed.DTYPE_ATTR].type == types_pb2.DT_FLOAT
        assert [d.size for d in value.tensor_shape.dim] == [len(value.tensor_content)]
    # TensorFlow parses it, but cannot import it: the coded constants are uint8 now.
    import tensorflow as tf

    with tf.Graph().as_default(), pytest.raises(ValueError, match="uint8"):
        tf.graph_util.import_graph_def(graph_def, name="")


def test_plain_tensors_stay_plain(tf_models: dict[str, Path], tmp_path: Path) -> None:
    source, embedded = tf_models["dtypes.pb"], tmp_path / "m.nnr.pb"
    nnrconv.convert(source, embedded, options=LOSSLESS)
    loaded = nnrconv.load(embedded)
    assert_tensors_identical(nnrconv.load(source), loaded)
    assert not isinstance(loaded.tensors["text"], CodedTensor)


@pytest.mark.parametrize("name", ["cnn.pb", "lstm.pb"])
def test_nnr_and_embedded_move_units_unchanged(name: str, tf_models: dict[str, Path], tmp_path: Path) -> None:
    source, nnr, embedded = tf_models[name], tmp_path / "m.nnr", tmp_path / "m.nnr.pb"
    nnrconv.convert(source, nnr)  # default: lossy, per-tensor SNR
    nnrconv.convert(nnr, embedded)  # units move as they are
    assert_tensors_identical(nnrconv.load(nnr), nnrconv.load(embedded))
    nnrconv.convert(embedded, tmp_path / "again.nnr")
    assert (tmp_path / "again.nnr").read_bytes() == nnr.read_bytes()
    # Coding the source straight into the container gives the same tensors as the .nnr route.
    direct = tmp_path / "direct.nnr.pb"
    nnrconv.convert(source, direct)
    assert_tensors_identical(nnrconv.load(nnr), nnrconv.load(direct))
    lossy = [k for k, t in nnrconv.load(source).tensors.items() if t.dtype is DType.FLOAT]
    original, decoded = nnrconv.load(source), nnrconv.load(direct)
    assert any(not np.array_equal(original.tensors[k].numpy(), decoded.tensors[k].numpy()) for k in lossy)


def test_explicit_options_code_anew(tf_models: dict[str, Path], tmp_path: Path) -> None:
    nnr = tmp_path / "m.nnr"
    nnrconv.convert(tf_models["mlp.pb"], nnr, options=nnc.CodingOptions(qp=-30))
    nnrconv.convert(nnr, tmp_path / "fine.nnr.pb", options=nnc.CodingOptions(qp=-50))
    nnrconv.convert(nnr, tmp_path / "same.nnr.pb")
    assert (tmp_path / "fine.nnr.pb").stat().st_size > (tmp_path / "same.nnr.pb").stat().st_size


def test_corrupt_unit_names_the_tensor(tf_models: dict[str, Path], tmp_path: Path) -> None:
    embedded = tmp_path / "m.nnr.pb"
    nnrconv.convert(tf_models["mlp.pb"], embedded)
    graph_def = _graph(embedded)
    coded = [n for n in graph_def.node if _embed.DTYPE_ATTR in n.attr]
    node = max(coded, key=lambda n: n.attr["value"].tensor.ByteSize())
    value = node.attr["value"].tensor
    value.tensor_content = value.tensor_content[:-5]
    embedded.write_bytes(graph_def.SerializeToString(deterministic=True))  # as nnrconv writes
    with pytest.raises(nnrconv.NNRConvError) as info:
        nnrconv.load(embedded)
    message = str(info.value)
    assert node.name in message and str(embedded) in message and "\n" not in message


def test_saved_model_is_refused_as_embedded_graph(tf_models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(nnrconv.NNRConvError, match="SavedModel"):
        nnrconv.convert(tf_models["mlp_savedmodel"], tmp_path / "m.nnr.pb")
    assert not (tmp_path / "m.nnr.pb").exists()


# -- SavedModel folders ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cnn_savedmodel", "mlp_tfsave"])
def test_saved_model_lossless_embedding_restores_tensors_and_outputs(
    name: str, tf_models: dict[str, Path], tmp_path: Path
) -> None:
    source, embedded = tf_models[name], tmp_path / "m.nnr_savedmodel"
    nnrconv.convert(source, embedded, options=LOSSLESS)
    assert (embedded / _embed.MANIFEST_FILE).is_file() and (embedded / _embed.PARAMETER_SETS_FILE).is_file()
    original, loaded = nnrconv.load(source), nnrconv.load(embedded)
    assert_tensors_identical(original, loaded)
    assert all(isinstance(t, CodedTensor) for t in loaded if t.dtype is DType.FLOAT)
    x = _models.sample_input(name.split("_")[0])
    assert_same_outputs(run(original, x), run(loaded, x))
    plain = tmp_path / "plain_savedmodel"
    nnrconv.convert(embedded, plain)
    assert not (plain / "nnr").exists()
    assert_same_outputs(run(original, x), run(nnrconv.load(plain), x))
    # TensorFlow cannot restore it: the coded checkpoint entries are uint8 vectors.
    import tensorflow as tf

    with pytest.raises(tf.errors.InvalidArgumentError, match="uint8"):
        tf.saved_model.load(str(embedded))


def test_saved_model_nnr_and_embedded_move_units_unchanged(tf_models: dict[str, Path], tmp_path: Path) -> None:
    source, nnr, embedded = tf_models["lstm_savedmodel"], tmp_path / "m.nnr", tmp_path / "m.nnr_savedmodel"
    nnrconv.convert(source, nnr)
    nnrconv.convert(nnr, embedded)
    assert_tensors_identical(nnrconv.load(nnr), nnrconv.load(embedded))
    nnrconv.convert(embedded, tmp_path / "again.nnr")
    assert (tmp_path / "again.nnr").read_bytes() == nnr.read_bytes()
    direct = tmp_path / "direct.nnr_savedmodel"
    nnrconv.convert(source, direct)
    assert_tensors_identical(nnrconv.load(nnr), nnrconv.load(direct))


def test_saved_model_corrupt_unit_names_the_tensor(tf_models: dict[str, Path], tmp_path: Path) -> None:
    import tensorflow as tf

    embedded = tmp_path / "m.nnr_savedmodel"
    nnrconv.convert(tf_models["mlp_tfsave"], embedded)
    prefix = str(embedded / "variables" / "variables")
    reader = tf.train.load_checkpoint(prefix)
    coded = json.loads((embedded / _embed.MANIFEST_FILE).read_bytes())["tensors"]
    key = max(coded, key=lambda k: reader.get_tensor(k).size)
    names = sorted(reader.get_variable_to_dtype_map())
    values = [reader.get_tensor(k)[:-5] if k == key else reader.get_tensor(k) for k in names]
    for path in (embedded / "variables").iterdir():
        path.unlink()
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names), tensors=values)
    # The container digest sees the checkpoint changed first, naming the file.
    with pytest.raises(nnrconv.NNRConvError, match=r"variables/variables\.\w+.* container digest"):
        nnrconv.load(embedded)
    # Without it (a folder written before container digests), the unit check names the tensor.
    (embedded / _digest_folder.FILE).unlink()
    with pytest.raises(nnrconv.NNRConvError) as info:
        nnrconv.load(embedded)
    message = str(info.value)
    assert key in message and str(embedded) in message and "\n" not in message


def test_frozen_graph_is_refused_as_embedded_folder(tf_models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(nnrconv.NNRConvError, match="frozen graph"):
        nnrconv.convert(tf_models["mlp.pb"], tmp_path / "m.nnr_savedmodel")
    assert not (tmp_path / "m.nnr_savedmodel").exists()
