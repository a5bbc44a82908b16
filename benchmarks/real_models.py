# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Every real model of the catalog (tests/real_models/catalog.py): sizes and check results.

Usage: python benchmarks/real_models.py [--only ID,ID] [--markdown]

Per model: parameters, original file size, bits per parameter of the whole `.nnr` (lossless and
default lossy coding; topology included, so graphs with large topologies stay above 32 in
lossless mode), the default check on the catalog's realistic inputs (worst output SNR, or for a
segmentation map the share of pixels on the same side of its threshold, or for a state dict the
worst weight SNR), whether the criterion holds, and the lossless `.nnr.<format>` size over the
`.nnr` (and over a `.nnr` with a plain topology: the layout's own cost), and the conversion to
another format with the largest output difference. A stage that fails prints its error instead.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nnrconv
from nnrconv import _api, nnc
from nnrconv.core import NNRConvError
from tests.real_models import _stages
from tests.real_models.catalog import CATALOG, RealModel


def _bits(model: RealModel, options: nnc.CodingOptions, workdir: Path) -> tuple[float, int, int]:
    result = nnrconv.convert(model.path, workdir / f"{model.id}.nnr", force=True, options=options)
    return 8 * result.target_bytes / result.parameters, result.parameters, result.target_bytes


def _check(model: RealModel) -> str:
    try:
        report = _stages.default_check(model)
        passed = "pass"
    except AssertionError:
        passed = "FAIL"
        report = None
    if model.mask_threshold is not None:
        return f"mask@{model.mask_threshold} {_stages.mask_agreement(model):.2%} ({passed})"
    if report is None:
        from nnrconv._check import check

        report = check(model.path, inputs=_stages.inputs_of(model))
    if report.runnable:
        return f"output {min(o.snr_db for o in report.outputs):.1f} dB ({passed})"
    coded = [t.snr_db for t in report.tensors if t.dtype == "FLOAT" and math.prod(t.shape) >= 16]
    return f"weights {min(coded):.1f} dB ({passed})"


def _embedded_overhead(model: RealModel, nnr_bytes: int, workdir: Path) -> str:
    """Lossless `.nnr.<format>` over the `.nnr`, and over a `.nnr` whose topology is not deflated
    (what the embedding layout itself adds: the native graph stays plain in a native file)."""
    if model.embedded is None:
        return "-"
    inside = workdir / (model.path.stem + model.embedded)
    options = nnc.CodingOptions(lossless=True)
    nnrconv.convert(model.path, inside, force=True, options=options)
    plain_topology = len(_api.encode(nnrconv.load(model.path), options=options, compress_topology=False))
    size = _api._disk_size(inside)
    extra, layout = size - nnr_bytes, size - plain_topology
    return f"{extra / 1024:+.1f} KB ({extra / nnr_bytes:+.1%}); layout {layout / 1024:+.1f} KB"


def _cross(model: RealModel, workdir: Path) -> str:
    if model.cross is None:
        return "-"
    try:
        _, worst = _stages.cross_format(model, workdir / f"{model.id}-cross")
    except (AssertionError, NNRConvError) as exc:
        return f"FAIL: {str(exc).splitlines()[0][:80]}"
    return f"{model.cross}: max abs diff {worst:.2g}"


def _row(model: RealModel, workdir: Path) -> list[str]:
    cells = [model.id, model.format]
    if not model.path.exists():
        return [*cells, f"missing: {model.install}"]
    try:
        lossless, parameters, nnr_bytes = _bits(model, nnc.CodingOptions(lossless=True), workdir)
        lossy, _, _ = _bits(model, nnc.CodingOptions(), workdir)
        cells += [f"{parameters:,}", f"{_api._disk_size(model.path) / 1024:.0f} KB", f"{lossless:.2f}", f"{lossy:.2f}"]
        (workdir / f"{model.id}-cross").mkdir(exist_ok=True)
        cells += [_check(model), _embedded_overhead(model, nnr_bytes, workdir), _cross(model, workdir)]
    except NNRConvError as exc:
        cells.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated catalog ids")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    wanted = set(filter(None, args.only.split(",")))
    header = ["model", "format", "parameters", "file", "lossless b/p", "default b/p", "default check"]
    header += ["lossless embedded over .nnr", "cross-format"]
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        for number, model in enumerate(m for m in CATALOG if not wanted or m.id in wanted):
            row = _row(model, Path(tmp))
            if args.markdown:
                if number == 0:
                    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
                print("| " + " | ".join(row) + " |", flush=True)
            else:
                if number == 0:
                    print("  ".join(header))
                print("  ".join(row), flush=True)


if __name__ == "__main__":
    main()
