# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Salvage: a damaged or cut stream loses only the tensors of the units that are damaged."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from nnrconv import _api, nnc
from nnrconv._salvage import SalvageWarning
from nnrconv.cli import main
from nnrconv.core import BitstreamError
from nnrconv.nnc._integrity import scan_frames

EXAMPLE = Path(__file__).parents[2] / "examples" / "tiny_cnn.onnx"


def _tensors() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    return [(f"t{i}", (rng.standard_normal((8, 6)) * 0.1).astype(np.float32)) for i in range(6)]


def _stream(**kwargs: object) -> bytes:
    return nnc.encode_model(_tensors(), b"", 0, **kwargs)  # type: ignore[arg-type]


def _flip(data: bytes, offset: int, mask: int = 0x10) -> bytes:
    damaged = bytearray(data)
    damaged[offset] ^= mask
    return bytes(damaged)


def _frames(data: bytes) -> list[tuple[int, int]]:
    frames, _ = scan_frames(memoryview(data))
    return frames


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_a_damaged_data_unit_loses_only_its_tensor() -> None:
    data = _stream()
    reference = nnc.decode_model(data).tensors
    offset, size = _frames(data)[6]  # units: STR, MPS, record, TPL, t0, t1, t2, ...
    damaged = _flip(data, offset + size - 2)
    with pytest.raises(BitstreamError, match="unit 6, byte offset"):
        nnc.decode_model(damaged)
    decoded, salvaged = nnc.decode_salvaged(damaged)
    assert salvaged.verified
    (lost,) = salvaged.lost
    assert (lost.unit_index, lost.byte_offset, lost.tensors, lost.shape) == (6, offset, ("t2",), (8, 6))
    assert set(decoded.tensors) == set(reference) - {"t2"}
    assert all(_same(decoded.tensors[k], reference[k]) for k in decoded.tensors)
    # The API fills the lost tensor with zeros and says so, naming unit and offset.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = _api.decode(damaged, source="d.nnr", salvage=True)
    messages = [str(w.message) for w in caught if issubclass(w.category, SalvageWarning)]
    assert messages == [
        f"d.nnr: unit 6, byte offset {offset}: damaged (integrity check failed); tensor 't2' filled with zeros"
    ]
    assert not model.tensors["t2"].numpy().any() and model.tensors["t2"].shape == (8, 6)
    assert all(_same(model.tensors[k].numpy(), reference[k]) for k in reference if k != "t2")


def test_a_damaged_size_field_is_resynchronised() -> None:
    data = _stream()
    reference = nnc.decode_model(data).tensors
    offset, _ = _frames(data)[5]
    decoded, salvaged = nnc.decode_salvaged(_flip(data, offset + 1, 0x04))  # t1's nnr_unit_size
    assert [u.unit_index for u in salvaged.lost] == [5]
    assert set(decoded.tensors) == set(reference) - {"t1"}
    assert all(_same(decoded.tensors[k], reference[k]) for k in decoded.tensors)


@pytest.mark.parametrize("record", [True, False], ids=["verified", "unverified"])
def test_a_cut_stream_keeps_every_complete_unit(record: bool) -> None:
    data = _stream() if record else nnc.strip_record(_stream())
    reference = nnc.decode_model(data).tensors
    frames = _frames(data)
    for cut in range(frames[-3][0] - 1, len(data)):
        decoded, salvaged = nnc.decode_salvaged(data[:cut])
        complete = sum(1 for o, n in frames if o + n <= cut and n > 0) - (4 if record else 3)
        assert list(decoded.tensors) == [f"t{i}" for i in range(complete)]
        assert all(_same(decoded.tensors[k], reference[k]) for k in decoded.tensors)
        if record and cut < len(data):
            assert salvaged.lost and all(u.byte_offset <= cut for u in salvaged.lost)  # the cut unit, missing ones


def test_unverified_streams_lose_the_units_that_do_not_decode() -> None:
    data = nnc.strip_record(_stream())
    reference = nnc.decode_model(data).tensors
    offset, size = _frames(data)[4]  # t1 (no record: STR, MPS, TPL, t0, t1)
    decoded, salvaged = nnc.decode_salvaged(_flip(data, offset + size - 2))
    assert not salvaged.verified and [u.tensors for u in salvaged.lost] == [("t1",)]
    assert set(decoded.tensors) == set(reference) - {"t1"}


def test_parameter_set_and_topology_damage_is_not_salvageable() -> None:
    data = nnc.encode_model(_tensors(), b"topology bytes", 2)
    frames = _frames(data)
    for index, what in ((1, "model parameter set"), (3, "topology unit")):
        offset, size = frames[index]
        with pytest.raises(BitstreamError, match=rf"unit {index}, .*the {what} is damaged.*cannot be salvaged"):
            nnc.decode_salvaged(_flip(data, offset + size - 2, 0x01))
    # A damaged integrity record only costs the verification.
    offset, size = frames[2]
    decoded, salvaged = nnc.decode_salvaged(_flip(data, offset + 40))
    assert not salvaged.lost and "integrity record is damaged" in salvaged.notes[0]
    assert len(decoded.tensors) == 6


def test_cli_salvages_with_a_base(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nnr, base, out = tmp_path / "m.nnr", tmp_path / "base.nnr", tmp_path / "out.onnx"
    assert main(["convert", str(EXAMPLE), str(nnr), "--lossless", "-q"]) == 0
    assert main(["convert", str(EXAMPLE), str(base), "--qp", "-20", "-q"]) == 0
    data = nnr.read_bytes()
    frames = _frames(data)
    offset, size = frames[5]
    damaged = tmp_path / "damaged.nnr"
    damaged.write_bytes(_flip(data[: frames[-2][0] + 3], offset + size - 1))  # one damaged, the last two cut
    assert main(["convert", str(damaged), str(out)]) == 4
    assert capsys.readouterr().err.count("\n") == 1 and not out.exists()
    assert main(["convert", str(damaged), str(out), "--salvage", "--base", str(base), "-q"]) == 0
    err = capsys.readouterr().err
    assert f"unit 5, byte offset {offset}: damaged (integrity check failed); tensor" in err
    # a cut with a base: one line says the base keeps the rest (no line per base-filled tensor)
    assert f"{base} kept for the rest" in err and "its data unit is lost" not in err
    salvaged, original, fill = _api.load(out), _api.load(EXAMPLE), _api.load(base)
    infos = nnc.inspect_units(data)
    lost = {infos[5].tensor, infos[-2].tensor, infos[-1].tensor}  # the damaged unit and the two cut ones
    for name, tensor in salvaged.tensors.items():
        expected = fill if name in lost else original
        assert _same(tensor.numpy(), expected.tensors[name].numpy()), name
    # Without a base, the ONNX topology says which tensors the cut units held: zeros, each named.
    assert main(["convert", str(damaged), str(tmp_path / "x.onnx"), "--salvage", "-q"]) == 0
    err = capsys.readouterr().err
    zeros = _api.load(tmp_path / "x.onnx")
    for name in lost:
        assert not zeros.tensors[name].numpy().any(), name
        assert f"tensor {name!r}" in err and "filled with zeros" in err
    assert f"1 unit(s) missing after byte offset {frames[-2][0] + 3}, from unit {len(frames) - 1} on" in err
    for name, tensor in zeros.tensors.items():
        if name not in lost:
            assert _same(tensor.numpy(), original.tensors[name].numpy()), name
