# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""CLI of rate control: convert targets, and `nnrconv sweep` (table, JSON, CSV, plot)."""

from __future__ import annotations

import json
import sys

import pytest

from nnrconv._cli_rate import parse_size
from nnrconv.cli import main
from tests.rate._models import calibration, classifier

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_rate")
    return classifier(root / "clf.onnx"), calibration(root / "calib.npz")


def test_convert_with_an_output_snr_target_says_which_allocation_it_used(files, tmp_path, capsys):
    model, calib = files
    out = tmp_path / "m.nnr"
    assert main([str(model), str(out), "--output-snr", "30", "--calibration", str(calib)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("allocation: per-tensor allocation")  # error-compensated or not
    assert "dB on 16 calibration samples; one global QP" in lines[-1]
    assert "16 calibration samples" in lines[-1]
    assert out.stat().st_size > 0


def test_targets_exclude_each_other_and_fixed_qps(files, tmp_path, capsys):
    model, _ = files
    assert main([str(model), str(tmp_path / "a.nnr"), "--output-snr", "30", "--qp", "-30"]) == 2
    assert main([str(model), str(tmp_path / "a.nnr"), "--output-snr", "30", "--size", "5K"]) == 2
    assert not (tmp_path / "a.nnr").exists()


def test_an_unreachable_size_is_one_line_naming_the_closest_reachable_value(files, tmp_path, capsys):
    model, calib = files
    code = main([str(model), str(tmp_path / "a.nnr"), "--size", "100", "--calibration", str(calib)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 5 and len(err) == 1 and "smallest coding needs" in err[0] and "bytes" in err[0]
    assert not (tmp_path / "a.nnr").exists()


def test_sizes_parse_with_decimal_and_binary_units():
    assert parse_size("5M") == 5_000_000 and parse_size("800K") == 800_000 and parse_size("1234") == 1234
    assert parse_size("2MiB") == 2 * 2**20 and parse_size("1.5k") == 1500


def test_sweep_prints_both_curves_and_writes_json_csv_and_a_plot(files, tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes
    from PIL import Image

    model, _ = files
    calib = calibration(tmp_path / "many.npz", samples=300)  # compensation needs rows >= inputs (256)
    labels = []
    original = Axes.plot

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        labels.append(kwargs.get("label"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", spy)
    png, csv = tmp_path / "rd.png", tmp_path / "rd.csv"
    args = ["sweep", str(model), "--calibration", str(calib), "--points", "4"]
    assert main([*args, "--json", "--csv", str(csv), "--plot", str(png)]) == 0
    doc = json.loads(capsys.readouterr().out)
    methods = {p["method"] for p in doc["points"]}
    # calibration inputs add the allocation over error-compensated layers (all four are MatMuls)
    assert methods == {"global QP", "nnrconv", "nnrconv, compensated"}
    assert doc["measured_on"] == "300 calibration samples"
    assert csv.read_text().splitlines()[0] == "method,setting,bits_per_param,output_snr_db,argmax_agreement"
    assert len(csv.read_text().splitlines()) == 1 + len(doc["points"])
    assert labels == ["global QP", "nnrconv", "nnrconv, compensated"]
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] >= 400 and image.size[1] >= 300
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "global QP" in table and "nnrconv, compensated" in table and "argmax agree" in table


def test_sweep_plot_without_matplotlib_is_one_clear_line(files, tmp_path, capsys, monkeypatch):
    model, calib = files
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code = main(["sweep", str(model), "--calibration", str(calib), "--points", "2", "--plot", str(tmp_path / "x.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 6 and len(err) == 1 and "pip install 'nnrconv[plot]'" in err[0]
