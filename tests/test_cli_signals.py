# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Signals and noise: Ctrl-C exits 130 leaving nothing, bad --inputs files are one line, -q is silent."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nnrconv.cli import main

EXAMPLE = Path(__file__).parents[1] / "examples" / "tiny_cnn.onnx"


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def big_onnx(tmp_path_factory):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    n = 4000  # 16 M weights: seconds of coding even on a fast machine, so the signal lands inside it
    weight = numpy_helper.from_array(np.random.default_rng(1).standard_normal((n, n)).astype(np.float32), "w")
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


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _wait_until_reading(child: subprocess.Popen, path: Path, timeout: float = 60.0) -> None:
    """Wait until the child has read or mapped the input: start-up (imports) is over."""
    wanted, size = str(path.resolve()), path.stat().st_size
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and child.poll() is None:
        proc = Path(f"/proc/{child.pid}")
        try:
            read = int(
                next(line for line in (proc / "io").read_text().splitlines() if line.startswith("rchar")).split()[1]
            )
            mapped = wanted in (proc / "maps").read_text()
        except (OSError, StopIteration, ValueError):
            read, mapped = 0, False
        if read >= size or mapped:
            return
        time.sleep(0.01)
    pytest.fail("the conversion never started reading its input")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see when the conversion runs")
@pytest.mark.parametrize(
    ("target_name", "signum", "code", "line"),
    [
        ("m.nnr", signal.SIGINT, 130, "nnrconv: interrupted"),
        ("m.nnr.onnx", signal.SIGINT, 130, "nnrconv: interrupted"),
        ("m.nnr", signal.SIGTERM, 143, "nnrconv: terminated"),
    ],
)
def test_ctrl_c_and_sigterm_exit_cleanly_and_leave_nothing(big_onnx, tmp_path, target_name, signum, code, line):
    target = tmp_path / target_name
    child = subprocess.Popen(
        [sys.executable, "-m", "nnrconv", big_onnx, target, "--jobs", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # a shell's background job (CI run with `&`) ignores SIGINT, and an ignored signal stays
        # ignored across exec: give the child a terminal's default, as a user's Ctrl-C meets
        preexec_fn=_default_signals,
    )
    _wait_until_reading(child, big_onnx)
    time.sleep(0.3)  # inside reading and coding (several seconds)
    assert child.poll() is None, "the conversion ended before it could be interrupted"
    child.send_signal(signum)
    _, err = child.communicate(timeout=60)
    assert child.returncode == code, err
    assert err.decode().strip().splitlines()[-1] == line
    assert list(tmp_path.iterdir()) == []


def test_keyboard_interrupt_in_process_is_130(tmp_path, capsys, monkeypatch):
    from nnrconv import _api

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_api, "convert", interrupted)
    code, _, err = run(capsys, EXAMPLE, tmp_path / "m.nnr")
    assert code == 130 and err.strip().splitlines()[-1] == "nnrconv: interrupted"


def test_an_eof_error_is_not_mistaken_for_an_interrupt(tmp_path, capsys, monkeypatch):
    from nnrconv import _api

    def broken(*args, **kwargs):
        raise EOFError("no more data")

    monkeypatch.setattr(_api, "convert", broken)
    code, _, err = run(capsys, EXAMPLE, tmp_path / "m.nnr")
    assert code == 70 and "EOFError" in err and "aborted" not in err


def _write(path: Path, kind: str) -> None:
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("not an archive\n")
    elif kind == "truncated":
        np.savez(path, input=np.zeros((1, 3, 32, 32), np.float32))
        path.write_bytes(path.read_bytes()[:40])
    elif kind == "object":
        np.savez(path, input=np.array(["a", None], dtype=object))
    elif kind == "rank":
        np.savez(path, input=np.zeros((3, 32, 32), np.float32))
    elif kind == "dtype":
        np.savez(path, input=np.zeros((1, 3, 32, 32), np.int64))
    elif kind == "names":
        np.savez(path, other=np.zeros((1, 3, 32, 32), np.float32))


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "object", "rank", "dtype", "names"])
def test_a_bad_inputs_file_is_one_line_naming_it(tmp_path, capsys, kind):
    pytest.importorskip("onnxruntime")
    inputs = tmp_path / "in.npz"
    _write(inputs, kind)
    code, out, err = run(capsys, "check", EXAMPLE, "--inputs", inputs)
    assert code == 3, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"nnrconv: error: {inputs}: "), err
    assert out == ""


@pytest.mark.parametrize("target_name", ["m.nnr", "m.nnr.onnx", "m.onnx"])
def test_quiet_prints_nothing_on_success(tmp_path, target_name):
    pytest.importorskip("onnx")
    source = tmp_path / "m0.nnr"
    assert subprocess.run([sys.executable, "-m", "nnrconv", "-q", EXAMPLE, source], capture_output=True).returncode == 0
    origin = EXAMPLE if target_name != "m.onnx" else source
    done = subprocess.run([sys.executable, "-m", "nnrconv", "-q", origin, tmp_path / target_name], capture_output=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"" and done.stderr == b""
