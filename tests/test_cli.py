# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The command line as a user meets it: exit codes, one-line errors, no partial output."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nnrconv.cli import main

EXAMPLE = Path(__file__).parents[1] / "examples" / "tiny_cnn.onnx"


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def nnr(tmp_path, capsys):
    target = tmp_path / "m.nnr"
    code, out, err = run(capsys, EXAMPLE, target, "--lossless")
    assert code == 0, err
    assert "tiny_cnn.onnx (onnx" in out and "m.nnr (nnr" in out
    return target


def only_inputs_left(folder: Path, *names: str) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


def test_round_trip_is_bit_identical(nnr, tmp_path, capsys):
    back = tmp_path / "back.onnx"
    assert run(capsys, nnr, back)[0] == 0
    code, out, _ = run(capsys, "diff", EXAMPLE, back)
    assert code == 0
    assert "10 tensors compared, 10 bit-identical, largest difference 0" in out


def test_inspect_lists_units_with_offsets(nnr, capsys):
    code, out, _ = run(capsys, "inspect", nnr)
    assert code == 0
    lines = out.splitlines()
    assert lines[1].split()[:3] == ["0", "NNR_STR", "0"]
    assert any("NNR_TPL" in line and "ONNX" in line for line in lines)
    assert "conv1.weight" in out and "16x3x3x3" in out
    assert lines[-2].startswith("total: ") and "10 data units" in lines[-2]  # 9 float, 1 int64
    assert lines[-1].startswith("integrity: verified")
    code, out, _ = run(capsys, "inspect", "--json", nnr)
    units = [json.loads(line) for line in out.splitlines()]
    assert [u["unit_type"] for u in units].count("NNR_NDU") == 10
    assert sum(u["size"] for u in units) == nnr.stat().st_size


def test_inspect_shows_qp_step_bits_and_snr(tmp_path, capsys):
    target = tmp_path / "lossy.nnr"
    assert run(capsys, EXAMPLE, target, "--qp", "-36")[0] == 0
    code, out, _ = run(capsys, "inspect", target, "--original", EXAMPLE)
    assert code == 0
    header, *rows = out.splitlines()
    assert "QP" in header and "step" in header and "bits/p" in header and "SNR dB" in header
    conv = next(row for row in rows if row.endswith("conv1.weight"))
    assert " -36 " in conv and " 0.001953 " in conv
    code, out, _ = run(capsys, "inspect", "--json", target, "--original", EXAMPLE)
    units = {u["tensor"]: u for u in map(json.loads, out.splitlines()) if u["tensor"]}
    assert units["conv1.weight"]["qp"] == -36 and units["conv1.weight"]["step"] == 2**-9
    assert 30 < units["conv1.weight"]["snr_db"] < 80 and units["conv1.weight"]["dq_flag"] is True
    assert units["bn1.bias"]["qp"] == -44  # non-weights: qp - 2·2^qp_density


def test_formats_lists_builtins(capsys):
    code, out, _ = run(capsys, "formats")
    assert code == 0
    assert any(line.startswith("onnx") and " 2 " in line for line in out.splitlines())
    rows = [json.loads(line) for line in run(capsys, "formats", "--json")[1].splitlines()]
    onnx_row = next(r for r in rows if r["name"] == "onnx")
    assert onnx_row["topology_code"] == 2 and onnx_row["available"] is True


def _missing(d: Path) -> Path:
    return d / "missing.onnx"


def _empty(d: Path) -> Path:
    (d / "empty.nnr").write_bytes(b"")
    return d / "empty.nnr"


def _directory(d: Path) -> Path:
    (d / "folder.nnr").mkdir()
    return d / "folder.nnr"


def _random_bytes(d: Path) -> Path:
    (d / "noise.nnr").write_bytes(bytes(range(7, 256)) * 3)
    return d / "noise.nnr"


def _unknown(d: Path) -> Path:
    (d / "m.xyz").write_bytes(b"hello")
    return d / "m.xyz"


@pytest.mark.parametrize(
    ("make_input", "message"),
    [
        (_missing, "no such file"),
        (_empty, "empty"),
        (_directory, "folder"),
        (_random_bytes, "unit 0, byte offset 0: no NNR start unit"),
        (_unknown, "unknown format"),
    ],
    ids=["missing", "empty", "directory", "random-bytes", "unknown-format"],
)
def test_bad_inputs_fail_in_one_line_without_output(tmp_path, capsys, make_input, message):
    source = make_input(tmp_path)
    target = tmp_path / "out.onnx"
    got, out, err = run(capsys, source, target)
    assert got == (4 if make_input is _random_bytes else 3) and out == ""  # named .nnr: a damaged bitstream
    assert err.count("\n") == 1 and err.startswith("nnrconv: error: ") and message in err
    assert "Traceback" not in err and not target.exists()


def test_every_truncation_of_a_bitstream_is_reported_with_its_location(nnr, tmp_path, capsys):
    data = nnr.read_bytes()
    cuts = sorted({4, 5, 8, 12, 20, len(data) // 2, len(data) - 1, *range(4, len(data), max(1, len(data) // 40))})
    for cut in cuts:
        broken = tmp_path / f"cut{cut}.nnr"
        broken.write_bytes(data[:cut])
        target = tmp_path / f"cut{cut}.onnx"
        got, _, err = run(capsys, broken, target)
        assert err.count("\n") == 1 and str(broken) in err and not target.exists()
        if cut == 12:
            # Cut right after the MPS: a valid stream with neither topology nor tensors.
            assert got == 5 and "carries no topology" in err
        else:
            assert got == 4, (cut, err)
            assert "unit" in err and "byte offset" in err, err


def test_existing_output_is_kept_unless_forced(nnr, tmp_path, capsys):
    target = tmp_path / "keep.onnx"
    target.write_bytes(b"precious")
    got, _, err = run(capsys, nnr, target)
    assert got == 7 and "--force" in err
    assert target.read_bytes() == b"precious"
    assert run(capsys, "convert", "--force", nnr, target)[0] == 0
    assert target.read_bytes() != b"precious"
    only_inputs_left(tmp_path, "m.nnr", "keep.onnx")


def test_output_equal_to_input_is_refused(tmp_path, capsys):
    copy = tmp_path / "m.onnx"
    shutil.copy(EXAMPLE, copy)
    got, _, err = run(capsys, "convert", "--force", copy, copy)
    assert got == 7 and "same as the input" in err
    assert copy.read_bytes() == EXAMPLE.read_bytes()


def test_failed_write_leaves_no_partial_output(tmp_path, capsys):
    # Corrupt the last data unit's payload size: parsing fails after earlier units decoded.
    source = tmp_path / "m.nnr"
    assert run(capsys, EXAMPLE, source)[0] == 0
    data = bytearray(source.read_bytes())
    source.write_bytes(bytes(data[:-3]))
    got, _, _ = run(capsys, source, tmp_path / "out.onnx")
    assert got == 4
    only_inputs_left(tmp_path, "m.nnr")


def test_from_and_to_override_detection(tmp_path, capsys):
    renamed = tmp_path / "model.bin"
    shutil.copy(EXAMPLE, renamed)
    target = tmp_path / "weights.dat"
    assert run(capsys, "--from", "onnx", "--to", "nnr", renamed, target)[0] == 0
    assert target.read_bytes()[:4] == b"\x00\x04\x02\x01"
    got, _, err = run(capsys, "--to", "nosuch", renamed, tmp_path / "x")
    assert got == 3 and "unknown format 'nosuch'" in err


def test_usage_errors_exit_2(capsys):
    assert run(capsys, "only-one-argument")[0] == 2


def test_help_imports_no_framework():
    code = (
        "import sys\n"
        "from nnrconv.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "main(['formats'])\n"
        "frameworks = ('torch', 'tensorflow', 'onnx', 'onnxruntime', 'nnef', 'nnef_tools')\n"
        "heavy = [m for m in frameworks if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_console_script_runs_as_a_user_would(tmp_path):
    exe = Path(sys.executable).with_name("nnrconv")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "nnrconv"]
    result = subprocess.run(
        [*command, str(tmp_path / "none.nnr"), str(tmp_path / "x.onnx")], capture_output=True, text=True
    )
    assert result.returncode == 3 and result.stderr.startswith("nnrconv: error:") and result.stdout == ""


def test_pipes_get_no_progress_line(tmp_path, capsys):
    code, out, err = run(capsys, "convert", "--lossless", EXAMPLE, tmp_path / "m.nnr")
    assert code == 0 and err == "" and "\r" not in out and out.count("\n") == 1


def test_warnings_other_than_salvage_pass_through_once() -> None:
    """A framework's warning raised during a conversion is shown once (it was recorded without end)."""
    import warnings

    from nnrconv._cli_integrity import salvage_warnings

    with warnings.catch_warnings(record=True) as outer:
        warnings.simplefilter("always")
        with salvage_warnings():
            warnings.warn("from a framework", UserWarning, stacklevel=1)
    assert [str(w.message) for w in outer] == ["from a framework"]
