# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`--cluster`: per-tensor coding and decoding on a Dask cluster give the bytes of a local run,
also when a worker is killed mid-job (its tasks run again elsewhere, each unit is written once)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

import nnrconv
from nnrconv import nnc
from tests.test_stream_io import make_checkpoint

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():  # type: ignore[no-untyped-def]
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
        ) as local,
        distributed.Client(local, set_as_default=False) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, bytes]:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("ckpt") / "in"
    make_checkpoint(folder, shards=2, layers_per_shard=6, hidden=128)
    index = folder / "model.safetensors.index.json"
    local = folder.parent / "local.nnr"
    nnrconv.convert(index, local, options=nnc.CodingOptions())
    return index, local.read_bytes()


@pytest.mark.parametrize("send_tensors", [False, True], ids=["shared-storage", "sent"])
def test_cluster_run_is_byte_identical_both_ways(cluster, checkpoint, tmp_path: Path, send_tensors: bool) -> None:  # type: ignore[no-untyped-def]
    index, expected = checkpoint
    nnr = tmp_path / "m.nnr"
    nnrconv.convert(index, nnr, options=nnc.CodingOptions(), cluster=cluster, send_tensors=send_tensors)
    assert nnr.read_bytes() == expected
    out, local_out = tmp_path / "out", tmp_path / "local"
    out.mkdir()
    local_out.mkdir()
    nnrconv.convert(nnr, out / "model.safetensors.index.json", cluster=cluster)
    nnrconv.convert(nnr, local_out / "model.safetensors.index.json")
    for shard in sorted(local_out.iterdir()):
        assert (out / shard.name).read_bytes() == shard.read_bytes(), shard.name


def test_a_worker_killed_mid_job_changes_nothing(cluster, checkpoint, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    index, expected = checkpoint
    killed: list[int] = []

    def kill_one_worker(name: str, nbytes: int) -> None:
        if not killed:  # the first unit is written; the others are in flight or queued
            pid = next(iter(cluster.run(os.getpid).values()))
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    nnr = tmp_path / "m.nnr"
    nnrconv.convert(index, nnr, options=nnc.CodingOptions(), cluster=cluster, progress=kill_one_worker)
    assert killed and nnr.read_bytes() == expected
    cluster.wait_for_workers(2, timeout=120)  # the nanny restarts it for the other tests


def test_unreachable_scheduler_is_one_error(tmp_path: Path, checkpoint) -> None:  # type: ignore[no-untyped-def]
    index, _ = checkpoint
    with pytest.raises(nnrconv.NNRConvError, match="cannot reach the Dask scheduler"):
        nnrconv.convert(index, tmp_path / "m.nnr", cluster="tcp://127.0.0.1:9")
    assert not (tmp_path / "m.nnr").exists()
