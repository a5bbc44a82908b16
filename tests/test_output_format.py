# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The output format when the name tells none: the model's own format; `--to` still wins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nnrconv
from nnrconv import nnc
from nnrconv._outputs import name_tells_format, output_format
from nnrconv.cli import main
from nnrconv.core import FormatError

pytest.importorskip("onnx")

EXAMPLE = Path(__file__).parents[1] / "examples" / "tiny_cnn.onnx"
LOSSLESS = nnc.CodingOptions(lossless=True)


def test_names_that_tell_a_format() -> None:
    assert name_tells_format(Path("m.onnx")) and name_tells_format(Path("m.nnr"))
    assert not name_tells_format(Path("outdir")) and not name_tells_format(Path("model.bin"))
    assert output_format(Path("outdir"), None, "onnx") == "onnx"
    assert output_format(Path("m.onnx"), None, "pytorch") == "onnx"  # the name wins over the model
    assert output_format(Path("m.onnx"), "pytorch", "onnx") == "pytorch"  # --to wins over both
    with pytest.raises(FormatError, match="cannot tell the output format"):
        output_format(Path("outdir"), None, None)


def test_nnr_decodes_to_the_format_it_carries_without_to(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nnr = tmp_path / "m.nnr"
    nnrconv.convert(EXAMPLE, nnr, options=LOSSLESS)
    out = tmp_path / "restored"
    assert main([str(nnr), str(out)]) == 0, capsys.readouterr().err
    assert out.is_file()
    assert nnrconv.compare(nnrconv.load(EXAMPLE), nnrconv.load(out, "onnx")).identical
    result = nnrconv.convert(nnr, tmp_path / "also", to_format="onnx")
    assert result.target_format == "onnx"


def test_bare_tensors_still_need_a_telling_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nnr = tmp_path / "w.nnr"
    nnr.write_bytes(nnc.encode_model([("w", np.arange(6, dtype=np.float32))], b"", 0, options=LOSSLESS))
    assert main([str(nnr), str(tmp_path / "outdir")]) == 3
    err = capsys.readouterr().err
    assert "cannot tell the output format" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "outdir").exists()


def test_save_without_suffix_keeps_the_model_format(tmp_path: Path) -> None:
    model = nnrconv.load(EXAMPLE)
    nnrconv.save(model, tmp_path / "copy")
    assert nnrconv.compare(model, nnrconv.load(tmp_path / "copy", "onnx")).identical
