# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""A bounded fuzzing run over the decoder (about a minute), and the seed corpus it starts from."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from nnrconv import nnc

HERE = Path(__file__).parent
CORPUS = HERE / "corpus"
SECONDS = 50


def test_seed_corpus_is_valid_and_covers_the_decoder_paths():
    files = {p.name: p.read_bytes() for p in CORPUS.glob("*.nnr")}
    assert len(files) >= 10, "run tests/fuzz/make_corpus.py"
    base = nnc.read_base(files["lossy_dq.nnr"], jobs=1)
    kinds = set()
    for name, data in files.items():
        assert len(data) < 1024, name
        infos = nnc.inspect_units(data)
        kinds |= {(u.unit_type, u.payload_type, u.scan_order) for u in infos}
        if name != "units_aggregate.nnr":
            nnc.decode_model(data, jobs=1, base=base if name == "update.nnr" else None)
    payloads = {payload for _, payload, _ in kinds}
    assert {"NNR_PT_FLOAT", "NNR_PT_INT", "NNR_PT_RAW_FLOAT"} <= payloads
    assert {"NNR_AGG", "NNR_QNT", "NNR_LPS"} <= {unit for unit, _, _ in kinds}
    assert {0, 1} <= {scan for _, _, scan in kinds}


@pytest.mark.slow
def test_bounded_fuzzing_finds_nothing(tmp_path):
    pytest.importorskip("atheris", reason="atheris is not installed (pip install 'nnrconv[dev]')")
    found = tmp_path / "found"
    found.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            HERE / "fuzz_decoder.py",
            f"-max_total_time={SECONDS}",
            "-timeout=1",
            "-rss_limit_mb=3072",
            f"-artifact_prefix={tmp_path}/",
            "-print_final_stats=1",
            found,
            CORPUS,
        ],
        capture_output=True,
        text=True,
        timeout=SECONDS + 120,
    )
    log = done.stderr
    artifacts = [p.name for p in tmp_path.iterdir() if p.is_file()]
    assert done.returncode == 0 and not artifacts, f"finding {artifacts}:\n{log[-4000:]}"
    runs = re.search(r"stat::number_of_executed_units: (\d+)", log)
    coverage = re.search(r"DONE\s+cov: (\d+)", log)
    assert runs and int(runs[1]) > 1000, log[-2000:]
    assert coverage and int(coverage[1]) > 300, log[-2000:]
    print(f"fuzzing: {runs[1]} executions, coverage {coverage[1]} edges, 0 findings")


@pytest.mark.parametrize("path", sorted((HERE / "regressions").glob("*")), ids=lambda p: p.name)
def test_past_findings_fail_only_with_nnrconv_errors(path):
    """Inputs the fuzzer once found (a non-nnrconv exception, a crash, a hang) stay fixed."""
    from tests.fuzz._targets import decode_every_way

    decode_every_way(path.read_bytes())
