# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The PyTorch plugin in isolation: registration, lazy torch import, sniffing, safety, errors."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import nnrconv
from nnrconv.core import BitstreamError, FormatError, get_registry
from nnrconv_pytorch import PyTorchFormat, _archive, _topology
from tests.plugins.pytorch import _models


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nnrconv", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_registered_through_entry_point() -> None:
    fmt = get_registry().get("pytorch")
    assert isinstance(fmt, PyTorchFormat)
    assert (fmt.topology_code, fmt.requires) == (3, ("torch",))
    expected = {
        "load", "save", "topology_bytes", "from_topology", "save_embedded", "extract_embedded", "run", "session",
        "split",
    }
    assert set(fmt.capabilities()) == expected
    assert fmt.embedded_patterns == ("*.nnr.pt2", "*.nnr.pt", "*.nnr.pth", "*.nnr.jit", "*.nnr.torchscript")


@pytest.mark.parametrize("command", [["--help"], ["formats"]])
def test_cli_does_not_import_torch(command: list[str]) -> None:
    env = dict(os.environ)
    env.pop("NNRCONV_LOAD_PLUGINS", None)  # load every plugin, as a user's nnrconv does
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "nnrconv", *command], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    modules = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time")]
    if command == ["formats"]:
        assert "pytorch" in result.stdout
    assert not [m for m in modules if m == "torch" or m.startswith("torch.")]


def test_sniff_by_content(tmp_path: Path) -> None:
    fmt = get_registry().get("pytorch")
    path, _, _ = _models.save("mlp", "pt2", tmp_path)
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(path.read_bytes())
    assert fmt.sniff(renamed, renamed.read_bytes()[:64])
    assert not fmt.sniff(tmp_path / "x.bin", b"PK\x03\x04 not a torch archive")
    assert not fmt.sniff(tmp_path / "x.bin", b"\x08\x01garbage")


class _Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_malicious_pickle_is_refused_and_not_executed(container: str, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    state = {"w": torch.ones(2), "x": _Payload(marker)}
    if container == "zip":
        torch.save(state, evil)
    else:
        torch.save(state, evil, _use_new_zipfile_serialization=False)
    with pytest.raises(FormatError, match=r"evil\.pt: needs full unpickling .*system"):
        nnrconv.load(evil)
    result = _cli(evil, tmp_path / "out.nnr")
    assert result.returncode == 3 and "needs full unpickling" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not marker.exists(), "the pickled payload ran"


def _rewrite(path: Path, target: Path, change) -> None:  # type: ignore[no-untyped-def]
    records = _archive.read_zip(path.read_bytes(), str(path))
    target.write_bytes(_archive.write_zip([change(r) for r in records]))


def test_pt2_with_pickled_sample_inputs_is_refused_before_torch_sees_it(tmp_path: Path) -> None:
    """torch.export.load falls back to torch.load(weights_only=False) for sample inputs."""
    marker = tmp_path / "PWNED"
    path, _, _ = _models.save("mlp", "pt2", tmp_path)
    buffer = io.BytesIO()
    torch.save(((_Payload(marker),), {}), buffer)
    evil = tmp_path / "evil.pt2"

    def change(record: _archive.Record) -> _archive.Record:
        if "/data/sample_inputs/" in record.name:
            return _archive.Record(record.name, buffer.getvalue(), record.compress_type)
        return record

    _rewrite(path, evil, change)
    with pytest.raises(FormatError, match=r"needs full unpickling"):
        nnrconv.load(evil)
    assert not marker.exists()


def test_pt2_with_use_pickle_payload_is_refused(tmp_path: Path) -> None:
    path, _, _ = _models.save("mlp", "pt2", tmp_path)
    evil = tmp_path / "evil.pt2"

    def change(record: _archive.Record) -> _archive.Record:
        if record.name.endswith("_weights_config.json"):
            config = json.loads(record.data)
            next(iter(config["config"].values()))["use_pickle"] = True
            return _archive.Record(record.name, json.dumps(config).encode(), record.compress_type)
        return record

    _rewrite(path, evil, change)
    with pytest.raises(FormatError, match=r"needs full unpickling to load \(pickled payloads"):
        nnrconv.load(evil)


def test_torchscript_with_a_foreign_global_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    path, _, _ = _models.save("mlp", "script", tmp_path)
    evil = tmp_path / "evil.ts.pt"

    def change(record: _archive.Record) -> _archive.Record:
        if record.name.endswith("/data.pkl"):
            return _archive.Record(record.name, pickle.dumps(_Payload(marker), protocol=2), record.compress_type)
        return record

    _rewrite(path, evil, change)
    with pytest.raises(FormatError, match=r"not a plain TorchScript pickle .*system"):
        nnrconv.load(evil)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content", [b"\x80\x02garbage", b"PK\x03\x04truncated zip", b"just text"], ids=["pickle", "zip", "text"]
)
def test_corrupt_pt_is_a_one_line_error(content: bytes, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    with pytest.raises(FormatError, match=r"bad\.pt"):
        nnrconv.load(bad)


def test_cli_reports_a_truncated_state_dict(tmp_path: Path) -> None:
    path, _, _ = _models.save("cnn", "state_dict", tmp_path)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    result = _cli(cut, tmp_path / "out.nnr")
    assert result.returncode == 3, result.stderr
    assert "cut.pt" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_checkpoint_without_a_state_dict_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(nnrconv.core.UnsupportedError, match="holds no state dict"):
        nnrconv.load(path)


def test_topology_layout_is_checked() -> None:
    assert _topology.unpack(b"").kind == "state_dict"
    with pytest.raises(BitstreamError, match="neither empty"):
        _topology.unpack(b"PK\x03\x04 raw zip")
    with pytest.raises(BitstreamError, match="version"):
        text = b'{"version":9,"kind":"script"}'
        _topology.unpack(_topology.MAGIC + len(text).to_bytes(4, "little") + text)
    packed = _topology.pack("script", {"stripped": []}, b"body")
    assert _topology.unpack(packed).body == b"body"
    text = _topology.pack_text({"keys": ["a\x00b", "é"], "shapes": {}, "dtypes": {}})
    assert b"\x00" not in text and _topology.is_text(text)
    assert _topology.unpack(text).manifest["keys"] == ["a\x00b", "é"]
    for bad in (b"[1]", b"{", b'{"keys":"a"}', b"\xff"):
        with pytest.raises(BitstreamError, match="PyTorch"):
            _topology.unpack(_topology.TEXT_MAGIC + bad)


def test_rewritten_archive_is_aligned_and_loads_with_mmap(tmp_path: Path) -> None:
    path, module, _ = _models.save("cnn", "state_dict", tmp_path)
    copy = tmp_path / "copy.pt"
    _rewrite(path, copy, lambda r: r)
    with zipfile.ZipFile(copy) as archive:
        for info in archive.infolist():
            if info.compress_type == zipfile.ZIP_STORED and info.file_size:
                offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
                assert offset % 64 == 0, info.filename
    loaded = torch.load(copy, weights_only=True, mmap=True)
    assert all(torch.equal(loaded[k], v) for k, v in module.state_dict().items())
