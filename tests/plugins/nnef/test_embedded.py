# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""NNR inside NNEF (`*.nnr.nnef`, `*.nnr.tgz`): same tensors as the `.nnr`, units moved unchanged."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np
import pytest

import nnrconv
from nnrconv import nnc
from nnrconv.cli import main
from nnrconv.core import BitstreamError, CodedTensor, FormatError, NNRConvError, get_registry
from nnrconv.nnc._integrity import strip_record
from nnrconv_nnef import _embed
from nnrconv_nnef._dat import HEADER_SIZE, DatHeader
from tests.plugins.nnef import _models
from tests.plugins.nnef._helpers import assert_same_files, assert_tensors_identical, model_files

LOSSLESS = nnc.CodingOptions(lossless=True)
NAMES = list(_models.MODELS)


def _build(name: str, tmp_path: Path) -> Path:
    path, _ = _models.MODELS[name](tmp_path / f"{name}.nnef")
    return path


def _header(content: bytes) -> DatHeader:
    return DatHeader.unpack(content[:HEADER_SIZE])


def test_output_names_ask_for_nnef_with_nnr_inside():
    registry = get_registry()
    for name in ("m.nnr.nnef", "m.nnr.tgz", "M.NNR.NNEF", "m.nnr.nnef.tgz", "m.nnr.tar.gz"):
        fmt = registry.for_output(Path(name))
        assert fmt.name == "nnef" and fmt.matches_embedded(Path(name)), name
    for name in ("m.nnef", "m.tgz", "m.nnef.tgz"):
        fmt = registry.for_output(Path(name))
        assert fmt.name == "nnef" and not fmt.matches_embedded(Path(name)), name
    assert "save_embedded" in registry.get("nnef").capabilities()


@pytest.mark.parametrize("name", NAMES)
def test_lossless_embedding_restores_the_original_files(tmp_path, name):
    source = _build(name, tmp_path)
    nnrconv.convert(source, tmp_path / "m.nnr.nnef", options=LOSSLESS)
    nnrconv.convert(tmp_path / "m.nnr.nnef", tmp_path / "via_embedded.nnef")
    nnrconv.convert(source, tmp_path / "m.nnr", options=LOSSLESS)
    nnrconv.convert(tmp_path / "m.nnr", tmp_path / "via_nnr.nnef")
    assert_same_files(source, tmp_path / "via_embedded.nnef")
    assert_same_files(source, tmp_path / "via_nnr.nnef")


@pytest.mark.parametrize("name", NAMES)
def test_lossy_embedding_matches_the_nnr_route(tmp_path, name):
    source = _build(name, tmp_path)
    nnrconv.convert(source, tmp_path / "m.nnr.nnef")  # default: lossy, per-tensor SNR target
    nnrconv.convert(tmp_path / "m.nnr.nnef", tmp_path / "via_embedded.nnef")
    nnrconv.convert(source, tmp_path / "m.nnr")
    nnrconv.convert(tmp_path / "m.nnr", tmp_path / "via_nnr.nnef")
    via_embedded, via_nnr = nnrconv.load(tmp_path / "via_embedded.nnef"), nnrconv.load(tmp_path / "via_nnr.nnef")
    assert_tensors_identical(via_embedded, via_nnr)
    assert_same_files(tmp_path / "via_embedded.nnef", tmp_path / "via_nnr.nnef")
    original = nnrconv.load(source)
    weights = [k for k, t in original.tensors.items() if t.dtype.name == "FLOAT" and t.size >= 16]
    changed = [k for k in weights if via_nnr.tensors[k].tobytes() != original.tensors[k].tobytes()]
    assert changed or not weights  # really lossy


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("suffix", [".nnr.nnef", ".nnr.tgz"])
def test_units_move_unchanged_between_nnr_containers(tmp_path, name, suffix):
    source = _build(name, tmp_path)
    nnr, embedded = tmp_path / "m.nnr", tmp_path / f"m{suffix}"
    nnrconv.convert(source, nnr)
    nnrconv.convert(nnr, embedded)
    loaded, decoded = nnrconv.load(embedded), nnrconv.load(nnr)
    assert_tensors_identical(loaded, decoded)
    coded = [k for k, t in decoded.tensors.items() if isinstance(t, CodedTensor)]
    assert coded and all(isinstance(loaded.tensors[k], CodedTensor) for k in coded)
    assert all(loaded.tensors[k].ndu == decoded.tensors[k].ndu for k in coded)  # type: ignore[attr-defined]
    nnrconv.convert(embedded, tmp_path / "again.nnr")
    assert (tmp_path / "again.nnr").read_bytes() == nnr.read_bytes()
    # Plain NNEF from the embedded model equals plain NNEF decoded from the .nnr.
    nnrconv.convert(embedded, tmp_path / "from_embedded.nnef")
    nnrconv.convert(nnr, tmp_path / "from_nnr.nnef")
    assert_same_files(tmp_path / "from_embedded.nnef", tmp_path / "from_nnr.nnef")
    # Embedded to embedded (no coding options) copies the units too.
    nnrconv.convert(embedded, tmp_path / f"copy{suffix}")
    assert model_files(tmp_path / f"copy{suffix}") == model_files(embedded)


def test_tgz_holds_the_same_files_as_the_folder(tmp_path):
    source = _build("mixed_legacy", tmp_path)
    nnrconv.convert(source, tmp_path / "m.nnr.nnef", options=LOSSLESS)
    nnrconv.convert(source, tmp_path / "m.nnr.tgz", options=LOSSLESS)
    folder, archive = model_files(tmp_path / "m.nnr.nnef"), model_files(tmp_path / "m.nnr.tgz")
    # The container digests differ only in that of the .tgz covering its gzip header too.
    assert folder.pop("graph.nnr.digest").endswith(b',"gzip":null}\n')
    assert b',"gzip":"1f8b08' in archive.pop("graph.nnr.digest")
    assert folder == archive
    nnrconv.convert(tmp_path / "m.nnr.tgz", tmp_path / "back.nnef.tgz")
    assert_same_files(source, tmp_path / "back.nnef.tgz")


def test_layout_of_the_embedded_files(tmp_path):
    source = _build("mixed_legacy", tmp_path)
    nnr, embedded = tmp_path / "m.nnr", tmp_path / "m.nnr.nnef"
    nnrconv.convert(source, nnr, options=LOSSLESS)
    nnrconv.convert(nnr, embedded)
    decoded = nnrconv.load(nnr)
    original, files = model_files(source), model_files(embedded)
    assert files["graph.nnef"] == original["graph.nnef"] and files["graph.quant"] == original["graph.quant"]
    # graph.nnr: the parameter sets, i.e. the first units of an NNR bitstream, with an integrity record.
    parameter_sets = files["graph.nnr"]
    assert nnc.looks_like_nnr(parameter_sets[:4])
    assert strip_record(nnr.read_bytes()).startswith(strip_record(parameter_sets))
    assert b"nnrconv-integrity/1 parts " in parameter_sets
    assert set(files) == set(original) | {"graph.nnr", "graph.nnr.digest"}
    for label, tensor in decoded.tensors.items():
        relative = label.lstrip("/") + ".dat"
        before, after = _header(original[relative]), _header(files[relative])
        if not isinstance(tensor, CodedTensor):
            assert files[relative] == original[relative], label  # not carried: written plain
            continue
        assert after.item_type == 0x4E52_0001 and after.vendor == ord("N") << 8 | ord("R")
        assert (after.version, after.rank, after.extents) == (before.version, before.rank, before.extents)
        assert after.bits_per_item == 8 and after.data_length == len(tensor.ndu)
        assert files[relative][HEADER_SIZE:] == tensor.ndu
        words = struct.unpack("<19I", after.reserved)
        assert words[:2] == (before.item_type, before.bits_per_item)
        assert after.reserved[8:] == before.reserved[:68] and not any(before.reserved[68:])
        assert _embed.restore_header(after) == before
    # The plain files that stay plain: a 1-bit boolean and a foreign vendor type.
    assert not isinstance(decoded.tensors["flags"], CodedTensor)
    assert _header(files["vendor.dat"]).item_type == _models.VENDOR_ITEM_TYPE


def test_header_with_unrestorable_reserved_words_stays_plain(tmp_path):
    source = _build("cnn_bn", tmp_path)
    dat = source / "fc_bias.dat"
    header = _header(dat.read_bytes())
    odd = dataclasses.replace(header, reserved=bytes(72) + struct.pack("<I", 1))  # reserved word 18 set
    dat.write_bytes(odd.pack() + dat.read_bytes()[HEADER_SIZE:])
    nnrconv.convert(source, tmp_path / "m.nnr.nnef", options=LOSSLESS)
    assert (tmp_path / "m.nnr.nnef" / "fc_bias.dat").read_bytes() == dat.read_bytes()
    loaded = nnrconv.load(tmp_path / "m.nnr.nnef")
    assert not isinstance(loaded.tensors["fc_bias"], CodedTensor)
    assert isinstance(loaded.tensors["fc_filter"], CodedTensor)
    nnrconv.convert(tmp_path / "m.nnr.nnef", tmp_path / "back.nnef")
    assert_same_files(source, tmp_path / "back.nnef")


def test_explicit_options_code_anew(tmp_path):
    source = _build("cnn_bn", tmp_path)
    nnr = tmp_path / "m.nnr"
    nnrconv.convert(source, nnr, options=nnc.CodingOptions(qp=-20))
    nnrconv.convert(nnr, tmp_path / "fine.nnr.nnef", options=nnc.CodingOptions(qp=-50))
    nnrconv.convert(nnr, tmp_path / "same.nnr.nnef")

    def size(path: Path) -> int:
        return sum(len(v) for v in model_files(path).values())

    assert size(tmp_path / "fine.nnr.nnef") > size(tmp_path / "same.nnr.nnef")


def _embedded(tmp_path: Path) -> Path:
    """A model written before container digests (the checks of the units themselves; a sealed
    one is refused by its digest first, see test_container_digest.py)."""
    source = _build("cnn_bn", tmp_path)
    embedded = tmp_path / "m.nnr.nnef"
    nnrconv.convert(source, embedded)
    (embedded / "graph.nnr.digest").unlink()
    return embedded


def _one_line_error(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main([str(path), str(path.parent / "out.nnef")]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("nnrconv: error:")
    return err


def test_truncated_embedded_dat_names_the_variable(tmp_path, capsys):
    embedded = _embedded(tmp_path)
    dat = embedded / "conv1_filter.dat"
    dat.write_bytes(dat.read_bytes()[:-5])
    with pytest.raises(FormatError, match=r"conv1_filter"):
        nnrconv.load(embedded)
    assert "conv1_filter" in _one_line_error(embedded, capsys)


def test_corrupt_unit_names_the_variable(tmp_path, capsys):
    embedded = _embedded(tmp_path)
    dat = embedded / "fc_filter.dat"
    content = dat.read_bytes()
    header = _header(content)
    cut = content[HEADER_SIZE:-5]
    shorter = dataclasses.replace(header, data_length=len(cut))
    dat.write_bytes(shorter.pack() + cut)  # consistent file, but the NDU itself is cut
    with pytest.raises(BitstreamError, match=r"fc_filter"):
        nnrconv.load(embedded)
    assert "fc_filter" in _one_line_error(embedded, capsys)


def test_corrupt_original_type_words_name_the_variable(tmp_path):
    embedded = _embedded(tmp_path)
    dat = embedded / "bn_scale.dat"
    content = bytearray(dat.read_bytes())
    offset = HEADER_SIZE - 19 * 4
    content[offset : offset + 8] = struct.pack("<II", 0, 12)  # float with 12 bits: not a tensor type
    dat.write_bytes(bytes(content))
    with pytest.raises(FormatError, match=r"'bn_scale'.*12 bits"):
        nnrconv.load(embedded)


def test_missing_parameter_sets_are_reported(tmp_path):
    embedded = _embedded(tmp_path)
    (embedded / "graph.nnr").unlink()
    with pytest.raises(FormatError, match=r"no graph\.nnr"):
        nnrconv.load(embedded)


def test_lossless_embedded_model_runs_like_the_original(tmp_path):
    source = _build("cnn_bn", tmp_path)
    _, inputs = _models.cnn_model(tmp_path / "again.nnef")
    nnrconv.convert(source, tmp_path / "m.nnr.nnef", options=LOSSLESS)
    fmt = get_registry().get("nnef")
    try:
        expected = fmt.run(nnrconv.load(source), inputs)
    except NNRConvError as exc:  # torch or nnef_tools missing
        pytest.skip(str(exc))
    got = fmt.run(nnrconv.load(tmp_path / "m.nnr.nnef"), inputs)
    assert all(np.array_equal(expected[k], got[k]) for k in expected)
