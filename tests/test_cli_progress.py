# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The progress bar: fed per tensor, knows its total when the coder gives one, silent on pipes."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import numpy as np

from nnrconv._cli_progress import BarProgress
from nnrconv.core import ArrayTensor
from nnrconv_pytorch import _shards


def test_bar_counts_bytes_against_the_total() -> None:
    bar = BarProgress(io.StringIO())
    try:
        bar.start(300, "coding")
        bar("a.weight", 100)
        bar("b.weight", 200)
        task = bar._bar.tasks[0]
        assert (task.total, task.completed, task.percentage) == (300, 300, 100.0)
        assert task.fields["tensor"] == "b.weight"
    finally:
        bar.close()


def test_no_bar_on_a_pipe_or_when_quiet(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with BarProgress.for_stderr() as bar:
        assert bar is None
    with BarProgress.for_stderr(enabled=False) as bar:
        assert bar is None


def test_a_terminal_shows_percentage_rate_and_time_left(tmp_path: Path) -> None:
    source = tmp_path / "m.safetensors"
    rng = np.random.default_rng(0)
    _shards.write_safetensors(
        source, [ArrayTensor(f"t{i}", rng.standard_normal((512, 512)).astype(np.float32)) for i in range(6)]
    )
    leader, follower = pty.openpty()
    cli = [sys.executable, "-m", "nnrconv", str(source), str(tmp_path / "m.nnr"), "--jobs", "1"]
    child = subprocess.Popen(cli, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    shown = b""
    while True:  # drain the terminal while the child draws, or it blocks on a full pty
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    stdout = child.stdout.read() if child.stdout else b""
    returncode = child.wait(timeout=300)
    assert returncode == 0
    text = shown.decode("utf-8", "replace")
    assert "coding" in text and "%" in text and "MB" in text  # label, percentage, bytes and rate
    assert b"m.nnr" in stdout  # the summary line goes to stdout as before


class _Recorder:
    """A progress object that asks for the shards, and keeps what the bar would show."""

    def __init__(self) -> None:
        self.bar = BarProgress(io.StringIO())
        self.mapping: dict[str, str] = {}
        self.shown: list[str] = []

    def start(self, total: int, label: str = "tensors") -> None:
        self.bar.start(total, label)

    def files(self, mapping: dict[str, str]) -> None:
        self.mapping = dict(mapping)
        self.bar.files(mapping)

    def __call__(self, name: str, nbytes: int) -> None:
        self.bar(name, nbytes)
        self.shown.append(self.bar._bar.tasks[0].description)


def _sharded(folder: Path) -> dict[str, str]:
    """A 3-shard checkpoint with its index; returns its weight map."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    weight_map = {}
    for k in range(3):
        file = f"model-{k + 1:05d}-of-00003.safetensors"
        tensors = [
            ArrayTensor(f"layers.{k}.{part}.weight", rng.standard_normal((64, 32)).astype(np.float32))
            for part in ("q", "v")
        ]
        _shards.write_safetensors(folder / file, tensors, {"format": "pt"})
        weight_map.update({t.name: file for t in tensors})
    index = {"metadata": {}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return weight_map


def test_the_bar_names_the_shard_being_read_and_written(tmp_path: Path) -> None:
    import nnrconv

    weight_map = _sharded(tmp_path / "in")
    (tmp_path / "out").mkdir()
    for source, target in (
        (tmp_path / "in" / "model.safetensors.index.json", tmp_path / "m.nnr"),
        (tmp_path / "m.nnr", tmp_path / "out" / "model.safetensors.index.json"),
    ):
        recorder = _Recorder()
        try:
            nnrconv.convert(source, target, progress=recorder, jobs=1)
        finally:
            recorder.bar.close()
        assert recorder.mapping == weight_map
        label = "coding" if target.suffix == ".nnr" else "decoding"
        expected = [f"{label} {weight_map[name]} [{int(weight_map[name][6:11])}/3]" for name in weight_map]
        assert recorder.shown == expected


def test_a_single_file_names_no_shard() -> None:
    bar = BarProgress(io.StringIO())
    try:
        bar.start(10, "coding")
        bar("a", 10)
        assert bar._bar.tasks[0].description == "coding"
    finally:
        bar.close()
