# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Nothing a user owns is lost: --force rules, symbolic links, killed runs and their leftovers."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nnrconv import _files
from nnrconv._files import check_output, remove_stale_temporaries, staged_output
from nnrconv.cli import main
from nnrconv.core import FormatPlugin, OutputError

EXAMPLE = Path(__file__).parents[1] / "examples" / "tiny_cnn.onnx"


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "nnrconv" in p.name)


# -- the two data-loss cases of issue 12 --------------------------------------------------------


def test_force_never_deletes_the_folder_holding_the_input(tmp_path, capsys):
    folder = tmp_path / "m3"
    folder.mkdir()
    shutil.copy(EXAMPLE, folder / "in.onnx")
    (folder / "notes.txt").write_text("mine")
    before = snapshot(folder)
    code, _, err = run(capsys, folder / "in.onnx", folder, "--to", "nnr", "--force")
    assert code == 7, err
    assert "holds the input" in err and len(err.strip().splitlines()) == 1
    assert snapshot(folder) == before
    assert leftovers(tmp_path) == [] and leftovers(folder) == []


def test_force_never_wipes_an_unrelated_folder(tmp_path, capsys):
    models = tmp_path / "models"
    (models / "sub").mkdir(parents=True)
    (models / "sub" / "a.bin").write_bytes(b"\x01" * 100)
    (models / "readme").write_text("mine")
    before = snapshot(models)
    code, _, err = run(capsys, EXAMPLE, models, "--to", "nnr", "--force")
    assert code == 7, err
    assert "is a folder, and this output is a file" in err and len(err.strip().splitlines()) == 1
    assert snapshot(models) == before
    assert leftovers(tmp_path) == []


def test_output_inside_an_input_folder_is_refused(tmp_path):
    source = tmp_path / "model_savedmodel"
    source.mkdir()
    (source / "saved_model.pb").write_bytes(b"x")
    with pytest.raises(OutputError, match="inside the input folder"):
        check_output(source / "m.nnr", inputs=(source,))
    with pytest.raises(OutputError, match="inside the input folder"):
        check_output(source / "saved_model.pb", inputs=(source,), force=True)


# -- what --force may replace ---------------------------------------------------------------------


def test_force_replaces_a_file_atomically(tmp_path, capsys):
    target = tmp_path / "m.nnr"
    target.write_bytes(b"old")
    inode = target.stat().st_ino
    assert run(capsys, EXAMPLE, target, "--force", "-q")[0] == 0
    assert target.read_bytes()[:4] != b"old" and target.stat().st_ino != inode
    assert leftovers(tmp_path) == []


def test_a_file_never_replaces_a_folder_nor_a_folder_a_file(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    with (
        pytest.raises(OutputError, match="is a folder, and this output is a file"),
        staged_output(folder, force=True, is_own_output=lambda _: True) as staged,
    ):
        staged.write_bytes(b"new")
    assert folder.is_dir()
    file = tmp_path / "out2"
    file.write_bytes(b"old")
    with (
        pytest.raises(OutputError, match="is a file, and this output is a folder"),
        staged_output(file, force=True, is_own_output=lambda _: True) as staged,
    ):
        staged.mkdir()
    assert file.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_a_link_is_replaced_by_a_file_and_never_followed(tmp_path):
    precious = tmp_path / "precious.nnr"
    precious.write_bytes(b"precious")
    link = tmp_path / "link.nnr"
    link.symlink_to(precious)
    with staged_output(link, force=True) as staged:
        staged.write_bytes(b"new")
    assert not link.is_symlink() and link.read_bytes() == b"new"
    assert precious.read_bytes() == b"precious"
    folder = tmp_path / "real_folder"
    folder.mkdir()
    (folder / "graph.nnef").write_text("mine")
    dir_link = tmp_path / "model.nnef"
    dir_link.symlink_to(folder)
    with (
        pytest.raises(OutputError, match="symbolic link"),
        staged_output(dir_link, force=True, is_own_output=lambda _: True) as staged,
    ):
        staged.mkdir()
    assert (folder / "graph.nnef").read_text() == "mine" and dir_link.is_symlink()


def test_an_own_folder_is_swapped_and_an_unrecognised_one_kept(tmp_path):
    target = tmp_path / "model.nnef"
    target.mkdir()
    (target / "graph.nnef").write_text("old")
    with staged_output(target, force=True, is_own_output=lambda _: True) as staged:
        staged.mkdir()
        (staged / "graph.nnef").write_text("new")
    assert snapshot(target) == {"graph.nnef": b"new"}
    with (
        pytest.raises(OutputError, match="did not write"),
        staged_output(target, force=True, is_own_output=lambda _: False) as staged,
    ):
        staged.mkdir()
    assert snapshot(target) == {"graph.nnef": b"new"}
    assert leftovers(tmp_path) == []


def test_swap_without_renameat2_moves_the_old_folder_aside_first(tmp_path, monkeypatch):
    monkeypatch.setattr(_files, "_exchange", lambda a, b: False)
    target = tmp_path / "model.nnef"
    target.mkdir()
    (target / "graph.nnef").write_text("old")
    with staged_output(target, force=True, is_own_output=lambda _: True) as staged:
        staged.mkdir()
        (staged / "graph.nnef").write_text("new")
    assert snapshot(target) == {"graph.nnef": b"new"}
    assert leftovers(tmp_path) == []


def test_folder_layouts_the_formats_recognise(tmp_path):
    from nnrconv_nnef._format import NnefFormat
    from nnrconv_tensorflow._format import TensorFlowFormat

    nnef = tmp_path / "m.nnef"
    (nnef / "conv").mkdir(parents=True)
    for name in ("graph.nnef", "graph.quant", "conv/w.dat", "b.dat"):
        (nnef / name).write_bytes(b"x")
    assert NnefFormat().is_own_output(nnef)
    (nnef / "notes.txt").write_text("mine")
    assert not NnefFormat().is_own_output(nnef)
    (nnef / "notes.txt").unlink()
    (nnef / "link.dat").symlink_to(tmp_path)
    assert not NnefFormat().is_own_output(nnef)

    saved = tmp_path / "m_savedmodel"
    (saved / "variables").mkdir(parents=True)
    (saved / "assets" / "vocab").mkdir(parents=True)
    for name in (
        "saved_model.pb",
        "fingerprint.pb",
        "variables/variables.index",
        "variables/variables.data-00000-of-00001",
        "assets/vocab/words.txt",
    ):
        (saved / name).write_bytes(b"x")
    assert TensorFlowFormat().is_own_output(saved)
    (saved / "variables" / "train.log").write_text("mine")
    assert not TensorFlowFormat().is_own_output(saved)
    assert not FormatPlugin.folder_holds_only(tmp_path / "missing", (), ("*",))


def test_force_replaces_an_nnef_folder_end_to_end(tmp_path, capsys):
    pytest.importorskip("nnef")
    from tests.plugins.nnef._models import cnn_model

    source, _ = cnn_model(tmp_path / "src.nnef")
    bitstream = tmp_path / "m.nnr"
    assert run(capsys, source, bitstream, "--lossless", "-q")[0] == 0
    target = tmp_path / "out.nnef"
    assert run(capsys, bitstream, target, "-q")[0] == 0
    first = snapshot(target)
    assert run(capsys, bitstream, target, "--force", "-q")[0] == 0
    assert snapshot(target) == first
    (target / "notes.txt").write_text("mine")
    code, _, err = run(capsys, bitstream, target, "--force")
    assert code == 7 and "did not write" in err
    assert (target / "notes.txt").read_text() == "mine"
    assert leftovers(tmp_path) == []


# -- killed runs ----------------------------------------------------------------------------------


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _staging_name(target: str, pid: int, start: int = 0) -> str:
    host = _files._short_hash(_files.socket.gethostname())
    boot = _files._short_hash(_files._boot_id())
    return f".{target}.{host}-{boot}-{pid}-{start}.abc_123{_files._SUFFIX}"


def test_stale_temporaries_of_dead_runs_go_and_live_ones_stay(tmp_path):
    dead = tmp_path / _staging_name("m.nnr", _dead_pid())
    (dead / "out").mkdir(parents=True)
    (dead / "out" / "m.nnr").write_bytes(b"half")
    live = tmp_path / _staging_name("m.nnr", os.getpid(), _files._start_time(os.getpid()) or 0)
    live.mkdir()
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as sleeper:
        try:
            other_live = tmp_path / _staging_name("x.onnx", sleeper.pid, _files._start_time(sleeper.pid) or 0)
            other_live.mkdir()
            foreign = tmp_path / ".m.nnr.zzzzzz-000000-1-0.abc.nnrconv-tmp"  # another host's
            foreign.mkdir()
            lookalike = tmp_path / ".m.nnr.nnrconv-tmp"  # not our full pattern
            lookalike.mkdir()
            linked = tmp_path / _staging_name("l.nnr", _dead_pid())
            linked.symlink_to(live)
            assert remove_stale_temporaries(tmp_path) == [dead]
            assert live.is_dir() and other_live.is_dir() and foreign.is_dir() and lookalike.is_dir()
            assert linked.is_symlink()
        finally:
            sleeper.kill()


def test_a_killed_swap_leaves_the_old_folder_and_the_next_run_restores_it(tmp_path):
    target = tmp_path / "model.nnef"
    target.mkdir()
    (target / "graph.nnef").write_text("old")
    # Kill -9 between moving the old folder aside and putting the new one in place.
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from nnrconv import _files
        _files._exchange = lambda a, b: False
        real_rename = os.rename
        def rename_then_die(a, b):
            real_rename(a, b)
            os.kill(os.getpid(), signal.SIGKILL)
        os.rename = rename_then_die
        with _files.staged_output(Path({str(target)!r}), force=True, is_own_output=lambda _: True) as staged:
            staged.mkdir()
            (staged / "graph.nnef").write_text("new")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], check=False)
    assert result.returncode == -signal.SIGKILL
    assert not target.exists()
    [staging] = leftovers(tmp_path)
    assert (tmp_path / staging / "previous" / "model.nnef" / "graph.nnef").read_text() == "old"
    remove_stale_temporaries(tmp_path)
    assert snapshot(target) == {"graph.nnef": b"old"} and leftovers(tmp_path) == []


@pytest.fixture(scope="module")
def big_onnx(tmp_path_factory):
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    n = 1500
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        [weight],
    )
    path = tmp_path_factory.mktemp("big") / "big.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _nnrconv(*args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nnrconv", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


@pytest.mark.slow
def test_kill_9_during_a_conversion_leaves_old_or_new_and_a_rerun_cleans_up(big_onnx, tmp_path):
    target = tmp_path / "m.nnr"
    target.write_bytes(b"previous output")
    for delay in (0.5, 1.0, 1.5, 2.0):
        child = _nnrconv(big_onnx, target, "--force", "-q", "--jobs", "1")
        time.sleep(delay)
        child.kill()
        child.communicate()
        content = target.read_bytes()
        assert content == b"previous output" or content[:4] != b"prev", delay
    stale = tmp_path / _staging_name("m.nnr", _dead_pid())
    (stale / "out").mkdir(parents=True)
    (stale / "out" / "m.nnr").write_bytes(b"half written")
    done = _nnrconv(big_onnx, target, "--force", "-q", "--jobs", "1")
    out, err = done.communicate()
    assert done.returncode == 0, err
    assert out == b"" and err == b""
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.nnr"]


def test_long_output_names_still_stage(tmp_path):
    target = tmp_path / ("m" * 200 + ".nnr")
    with staged_output(target) as staged:
        staged.write_bytes(b"new")
    assert target.read_bytes() == b"new" and leftovers(tmp_path) == []


def test_an_interrupt_between_the_two_renames_puts_the_old_folder_back(tmp_path, monkeypatch):
    monkeypatch.setattr(_files, "_exchange", lambda a, b: False)
    target = tmp_path / "model.nnef"
    target.mkdir()
    (target / "graph.nnef").write_text("old")
    real_rename = os.rename
    calls = []

    def rename_then_interrupt(a, b):
        real_rename(a, b)
        calls.append(a)
        if len(calls) == 1:  # Ctrl-C right after the old folder was moved aside
            raise KeyboardInterrupt

    monkeypatch.setattr(_files.os, "rename", rename_then_interrupt)
    with pytest.raises(KeyboardInterrupt), staged_output(target, force=True, is_own_output=lambda _: True) as staged:
        staged.mkdir()
        (staged / "graph.nnef").write_text("new")
    monkeypatch.setattr(_files.os, "rename", real_rename)
    assert snapshot(target) == {"graph.nnef": b"old"} and leftovers(tmp_path) == []
