# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Size of `.nnr.onnx` over `.nnr` on the real PP-OCR models and the bundled example.

A `.nnr.onnx` carries the same data units as the `.nnr`, plus the ONNX graph as plain protobuf
(an NNR topology unit holds it deflated), plus what the embedding layout adds per coded weight.
The layout's own cost is what a `.nnr` with an undeflated topology does not have: it stays
within 2 % + 16 KiB on every model. Against the deflated `.nnr`, the same bound holds where the
graph is small next to the weights (the PP-OCR detector and recogniser, the example).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import nnrconv
from nnrconv import _api, nnc
from tests.real_models.catalog import BY_ID

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny_cnn.onnx"
BUDGET_FIXED, BUDGET_SHARE = 16 * 1024, 0.02
MODELS = {"example": EXAMPLE, **{i: BY_ID[i].path for i in ("ppocr-cls", "ppocr-det", "ppocr-rec")}}
# Where the deflated graph is small next to the data units, the bound holds against `.nnr` too.
AGAINST_DEFLATED = {("example", True), ("ppocr-det", True), ("ppocr-rec", True), ("example", False)}


# The default (lossy) coding on the small models only: coding is what takes time, not the layout.
CASES = [(name, True) for name in MODELS] + [("example", False), ("ppocr-cls", False)]


@pytest.mark.parametrize(("name", "lossless"), CASES, ids=[f"{n}-{'lossless' if x else 'default'}" for n, x in CASES])
def test_embedded_onnx_overhead(name: str, lossless: bool, tmp_path: Path) -> None:
    path = MODELS[name]
    if not path.exists():
        pytest.skip(BY_ID[name].install)
    options = nnc.CodingOptions(lossless=lossless)
    model = nnrconv.load(path)
    deflated = len(_api.encode(model, options=options))
    plain_topology = len(_api.encode(model, options=options, compress_topology=False))
    embedded = tmp_path / "m.nnr.onnx"
    nnrconv.convert(path, embedded, options=options)
    size = embedded.stat().st_size
    assert size - plain_topology <= BUDGET_SHARE * plain_topology + BUDGET_FIXED
    if (name, lossless) in AGAINST_DEFLATED:
        assert size - deflated <= BUDGET_SHARE * deflated + BUDGET_FIXED
    if lossless:  # and the plain model comes back byte for byte
        plain = tmp_path / "plain.onnx"
        nnrconv.convert(embedded, plain)
        assert plain.read_bytes() == path.read_bytes()
