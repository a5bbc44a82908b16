# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Bounded decoding: declared sizes are checked against the memory budget before allocating."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnrconv import nnc
from nnrconv.cli import main
from nnrconv.core import BitstreamError
from nnrconv.nnc._budget import check_declared_sizes, declared_bytes, default_max_memory, physical_memory


def zeros_stream(rows: int = 4096, columns: int = 65536) -> bytes:
    """A tiny stream declaring a rows x columns float32 tensor of zeros (every row skipped)."""
    options = nnc.CodingOptions(qp=-38, row_skip=True)
    small = nnc.strip_record(nnc.encode_model([("z", np.zeros((rows, 16), np.float32))], b"", 0, options=options))
    units = nnc.read_units(small)
    ndu = units[-1].unit
    big = nnc.CompressedDataUnit(dataclasses.replace(ndu.header, tensor_dimensions=(rows, columns)), ndu.payload)
    return nnc.write_units([*(u.unit for u in units[:-1]), big])


def test_sizes_parse() -> None:
    assert nnc.parse_size("5G") == 5 << 30
    assert nnc.parse_size("800M") == 800 << 20
    assert nnc.parse_size("1.5g") == 3 << 29
    assert nnc.parse_size("64KiB") == 64 << 10
    assert nnc.parse_size("1048576") == 1 << 20
    for bad in ("", "5X", "-1G", "0", "G"):
        with pytest.raises(ValueError):
            nnc.parse_size(bad)
    total = physical_memory()
    assert default_max_memory() == (total // 2 if total else 4 << 30)


def test_the_49_byte_zeros_stream_is_refused_under_a_small_budget() -> None:
    data = zeros_stream()
    assert len(data) == 49
    info = nnc.inspect_units(data)[-1]
    assert info.decoded_bytes == 4096 * 65536 * 4
    with nnc.memory_budget("100M"), pytest.raises(BitstreamError) as caught:
        nnc.decode_model(data, source="zeros.nnr")
    error = caught.value
    assert (error.unit_index, error.byte_offset, error.tensor) == (3, 18, "z")
    assert "1.0 GiB" in str(error) and "100.0 MiB" in str(error) and str(error).startswith("zeros.nnr: ")


def test_the_running_total_counts_every_tensor() -> None:
    tensors = [(f"t{i}", np.ones((256, 256), np.float32)) for i in range(4)]  # 256 KiB each
    data = nnc.encode_model(tensors, b"", 0, options=nnc.CodingOptions(qp=-20))
    with nnc.memory_budget(600 << 10):
        with pytest.raises(BitstreamError, match=r"tensor 't2'.*768.0 KiB, above the memory budget of 600.0 KiB"):
            nnc.decode_model(data, jobs=1)
        parameter_sets, ndus = nnc.encode_parts(tensors, nnc.CodingOptions(qp=-20))
        with pytest.raises(BitstreamError, match="above the memory budget"):
            nnc.decode_parts(parameter_sets, ndus, jobs=1)
    with nnc.memory_budget(2 << 20):
        assert len(nnc.decode_model(data, jobs=1).tensors) == 4


def test_working_memory_of_parallel_decoding_counts() -> None:
    header = nnc.NduHeader(
        nnc.PayloadType.NNR_PT_INT,
        topology_elem_id="x",
        tensor_dimensions=(1000,),
        nnr_decompressed_data_format=nnc.DecompressedDataFormat.TENSOR_INT64,
    )
    assert declared_bytes(header) == (8000, 4000)  # int64 out, int32 levels meanwhile

    def error(message: str) -> BitstreamError:
        return BitstreamError(message)

    assert check_declared_sizes([(header, error)] * 2, workers=2, budget=24000) == 16000
    with pytest.raises(BitstreamError):
        check_declared_sizes([(header, error)] * 2, workers=2, budget=23999)


def test_a_topology_inflating_beyond_the_budget_is_refused() -> None:
    data = nnc.encode_model([], bytes(8 << 20), nnc.TopologyStorageFormat.NNR_TPL_ONNX)
    assert len(data) < 64 << 10
    with nnc.memory_budget("1M"), pytest.raises(BitstreamError, match="inflates beyond"):
        nnc.decode_model(data)


def test_cli_refuses_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "zeros.nnr"
    source.write_bytes(zeros_stream())
    target = tmp_path / "z.safetensors"
    assert main(["convert", str(source), str(target), "--max-memory", "64M"]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unit 3, byte offset 18, tensor 'z'" in err and "--max-memory" in err
    assert not target.exists()
    assert main(["convert", str(source), str(target), "--max-memory", "lots"]) == 2
    assert main(["inspect", str(source), "--max-memory", "1M"]) == 0  # inspect decodes nothing
    out = capsys.readouterr().out
    assert "1.1 GB  z" in out and "decoded 1.1 GB" in out


@pytest.mark.slow
def test_the_zeros_stream_decodes_within_its_own_size_when_allowed(tmp_path: Path) -> None:
    source = tmp_path / "zeros.nnr"
    source.write_bytes(zeros_stream())
    script = (
        "import resource, sys\n"
        "from nnrconv import nnc\n"
        "with nnc.memory_budget('2G'):\n"
        "    model = nnc.decode_model(open(sys.argv[1], 'rb').read(), jobs=1)\n"
        "assert not model.tensors['z'].any()\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(source)], capture_output=True, text=True, check=True)
    peak = int(done.stdout.split()[-1]) << 10
    assert peak < (1 << 30) * 1.3, peak  # the 1 GiB tensor itself, not 3.4 GB
