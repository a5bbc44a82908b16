# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The container digest of `*.nnr.nnef` folders and `.nnr.tgz`: damage anywhere is exit 4.

The model is the PP-OCR text-orientation classifier (a real ONNX model from the rapidocr wheel)
converted to NNEF with NNR inside; without the digest, a flip in graph.nnef, graph.quant or a
plain `.dat` payload loads silently.
"""

from __future__ import annotations

import contextlib
import gzip
import random
import tarfile
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest

import nnrconv
from nnrconv.cli import main
from nnrconv.core import BitstreamError, NNRConvError, get_registry
from nnrconv.core._digest_parts import DIGEST_KEY, UNVERIFIED, VERIFIED
from nnrconv_nnef import _digest, _io
from tests.plugins.nnef._helpers import assert_same_files, model_files
from tests.real_models.catalog import CATALOG

EXAMPLE = Path(__file__).parents[3] / "examples" / "tiny_cnn.onnx"
FLIPS = 300


def _source() -> Path:
    model = next(m for m in CATALOG if m.id == "ppocr-cls")
    path = model.path
    return path if path.exists() else EXAMPLE


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("nnef_digest")
    with pytest.MonkeyPatch.context() as patch:  # a fixed member time: the same .tgz every run
        patch.setattr(_io, "time", SimpleNamespace(time=lambda: 1_700_000_000))
        for name in ("m.nnr.nnef", "m.nnr.tgz"):
            assert main(["convert", str(_source()), str(base / name), "-q"]) == 0
    return base


def _load_fully(path: Path) -> None:
    model = nnrconv.load(path)
    for tensor in model:
        tensor.numpy()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_every_random_bit_flip_in_the_folder_is_refused(written: Path, tmp_path: Path) -> None:
    folder = tmp_path / "m.nnr.nnef"
    files = {p.relative_to(written / "m.nnr.nnef"): p.read_bytes() for p in _files(written / "m.nnr.nnef")}
    for relative, content in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(content)
    assert nnrconv.load(folder).metadata[DIGEST_KEY] == VERIFIED
    names = list(files)
    weights = [len(files[n]) for n in names]
    rng = random.Random(12)
    refused = 0
    for _ in range(FLIPS):
        relative = rng.choices(names, weights)[0]
        content = bytearray(files[relative])
        offset, bit = rng.randrange(len(content)), rng.randrange(8)
        content[offset] ^= 1 << bit
        (folder / relative).write_bytes(content)
        try:
            _load_fully(folder)
        except BitstreamError:
            refused += 1
        except NNRConvError as exc:  # a clean refusal of another kind would be counted here
            pytest.fail(f"{relative}@{offset}: not exit 4: {exc}")
        else:
            pytest.fail(f"flip in {relative} at byte {offset} (bit {bit}) loaded silently")
        (folder / relative).write_bytes(files[relative])
    assert refused == FLIPS


def test_every_random_bit_flip_in_the_tgz_is_refused(written: Path, tmp_path: Path) -> None:
    data = (written / "m.nnr.tgz").read_bytes()
    path = tmp_path / "m.nnr.tgz"
    rng = random.Random(13)
    for _ in range(FLIPS):
        damaged = bytearray(data)
        offset = rng.randrange(len(data))
        damaged[offset] ^= 1 << rng.randrange(8)
        path.write_bytes(damaged)
        with pytest.raises(BitstreamError):
            _load_fully(path)
    # Damage inside the compressed stream is named by byte offset and the member written there.
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0x10
    path.write_bytes(damaged)
    with pytest.raises(BitstreamError, match=r"compressed byte offset \d+ \(in member [\w./]+\) differs"):
        nnrconv.load(path)
    # The gzip header (no CRC covers it) is named as such.
    damaged = bytearray(data)
    damaged[5] ^= 0x10  # inside the MTIME field
    path.write_bytes(damaged)
    with pytest.raises(BitstreamError, match=r"gzip header"):
        nnrconv.load(path)


def test_flips_in_the_gzip_layer_are_refused(written: Path, tmp_path: Path) -> None:
    """The gzip header and its extra field, and deflate bits that decode to the same tar stream
    (padding, unused code lengths): no CRC sees those, the header's SHA-256 does."""
    data = (written / "m.nnr.tgz").read_bytes()
    plain = gzip.decompress(data)
    path = tmp_path / "m.nnr.tgz"
    rng = random.Random(14)
    offsets = list(range(48))
    tries = 0
    while len(offsets) < 48 + 3 and tries < 5000:
        tries += 1
        damaged = bytearray(data)
        offset = rng.randrange(48, len(data))
        damaged[offset] ^= 1 << rng.randrange(8)
        with contextlib.suppress(OSError, EOFError, zlib.error):
            if gzip.decompress(bytes(damaged)) == plain:
                offsets.append(offset)
    assert len(offsets) > 48 or _source() == EXAMPLE  # such flips exist (5 in 1,923 measured)
    for offset in offsets:
        damaged = bytearray(data)
        damaged[offset] ^= 1 << rng.randrange(8)
        path.write_bytes(damaged)
        with pytest.raises(BitstreamError):
            nnrconv.load(path)


def test_damage_is_named_by_file_and_offset(written: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "m.nnr.nnef"
    assert main(["convert", str(written / "m.nnr.nnef"), str(folder), "-q"]) == 0
    graph = bytearray((folder / "graph.nnef").read_bytes())
    graph[5000 % len(graph)] ^= 0x02
    (folder / "graph.nnef").write_bytes(graph)
    out = tmp_path / "out.nnef"
    assert main(["convert", str(folder), str(out), "-q"]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not out.exists()
    at = 5000 % len(graph) // 4096 * 4096
    assert f"graph.nnef (byte offset {at}) differs from the container digest" in err


def test_extra_and_missing_files_are_refused(written: Path, tmp_path: Path) -> None:
    folder = tmp_path / "m.nnr.nnef"
    assert main(["convert", str(written / "m.nnr.nnef"), str(folder), "-q"]) == 0
    (folder / "notes.txt").write_text("hello")
    with pytest.raises(BitstreamError, match=r"a file added or removed.*notes\.txt not a file of the model"):
        nnrconv.load(folder)
    (folder / "notes.txt").unlink()
    victim = next(p for p in _files(folder) if p.suffix == ".dat")
    content = victim.read_bytes()
    victim.unlink()
    with pytest.raises(BitstreamError, match=r"a file added or removed"):
        nnrconv.load(folder)
    victim.with_name("renamed.dat").write_bytes(content)
    with pytest.raises(BitstreamError, match=r"file list \(names and sizes\) .*differs from the container digest"):
        nnrconv.load(folder)
    victim.with_name("renamed.dat").unlink()
    victim.write_bytes(content[:-1])
    with pytest.raises(BitstreamError, match=r"differs from the container digest"):
        nnrconv.load(folder)


def test_without_digest_it_loads_unverified(written: Path, tmp_path: Path) -> None:
    folder = tmp_path / "m.nnr.nnef"
    assert main(["convert", str(written / "m.nnr.nnef"), str(folder), "-q"]) == 0
    (folder / _digest.DIGEST_FILE).unlink()
    model, reference = nnrconv.load(folder), nnrconv.load(written / "m.nnr.nnef")
    assert model.metadata[DIGEST_KEY] == UNVERIFIED
    for name, tensor in model.tensors.items():
        assert tensor.numpy().tobytes() == reference.tensors[name].numpy().tobytes()
    fmt = get_registry().get("nnef")
    assert fmt.container_digest_status(folder) == UNVERIFIED
    assert fmt.container_digest_status(written / "m.nnr.tgz") == VERIFIED


def test_a_sealed_folder_archived_by_hand_still_verifies(written: Path, tmp_path: Path) -> None:
    archive = tmp_path / "byhand.nnr.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(written / "m.nnr.nnef", arcname="model")
    assert nnrconv.load(archive).metadata[DIGEST_KEY] == VERIFIED


def test_size_cost_is_within_half_a_percent_plus_1_kb(written: Path, tmp_path: Path) -> None:
    folder = written / "m.nnr.nnef"
    total = sum(p.stat().st_size for p in _files(folder))
    cost = (folder / _digest.DIGEST_FILE).stat().st_size
    assert cost <= 0.005 * (total - cost) + 1024
    # In the .tgz: against the same files archived without the digest.
    files = [(p.relative_to(folder).as_posix(), p.read_bytes()) for p in _files(folder)]
    plain = tmp_path / "plain.tgz"
    _io._write_tgz([(n, c) for n, c in files if n != _digest.DIGEST_FILE], plain)
    sealed = (written / "m.nnr.tgz").stat().st_size
    assert sealed - plain.stat().st_size <= 0.005 * plain.stat().st_size + 1024


def test_plain_tools_read_the_archive_and_the_restored_model(written: Path, tmp_path: Path) -> None:
    with tarfile.open(written / "m.nnr.tgz") as tar:  # a plain gzip-compressed tar
        assert _digest.DIGEST_FILE in tar.getnames()
    restored = tmp_path / "plain.nnef"
    assert main(["convert", str(written / "m.nnr.tgz"), str(restored), "-q"]) == 0
    assert _digest.DIGEST_FILE not in model_files(restored)  # plain output carries no digest
    nnef = pytest.importorskip("nnef")
    graph = nnef.load_graph(str(restored))
    assert graph.tensors
    again = tmp_path / "again.nnef"
    assert main(["convert", str(written / "m.nnr.nnef"), str(again), "-q"]) == 0
    assert_same_files(restored, again)
