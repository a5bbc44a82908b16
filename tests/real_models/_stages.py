# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""What the suite does to each real model, shared by the tests and benchmarks/real_models.py."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

import nnrconv
from nnrconv import _api, nnc
from nnrconv._check import CheckReport, check
from nnrconv.core import get_registry
from nnrconv.testing import assert_models_identical
from tests.real_models.catalog import RealModel

SEED = 0


def inputs_of(model: RealModel) -> dict[str, np.ndarray] | None:
    return model.inputs(np.random.default_rng(SEED)) if model.inputs else None


def run(path: Path, inputs: dict[str, np.ndarray], format: str | None = None) -> dict[str, np.ndarray]:
    """Outputs of a model file in its own format's runner."""
    loaded = nnrconv.load(path, format)
    return get_registry().get(loaded.source_format).run(loaded, inputs)


def _native_name(model: RealModel) -> str:
    return model.path.name if not model.native_suffix else model.path.stem + model.native_suffix


def lossless_round_trip(model: RealModel, workdir: Path) -> float:
    """native → .nnr (lossless) → native: identical tensors and outputs. Returns bits/parameter."""
    return lossless_file_round_trip(model.path, inputs_of(model), workdir, _native_name(model))


def lossless_file_round_trip(
    path: Path, feed: dict[str, np.ndarray] | None, workdir: Path, native_name: str = ""
) -> float:
    """`lossless_round_trip` for any model file (a converted one too). Returns bits/parameter."""
    bitstream, back = workdir / f"{path.name}.nnr", workdir / "back" / (native_name or path.name)
    back.parent.mkdir(parents=True, exist_ok=True)
    result = nnrconv.convert(path, bitstream, options=nnc.CodingOptions(lossless=True))
    nnrconv.convert(bitstream, back)
    assert_models_identical(nnrconv.load(path), nnrconv.load(back))
    if feed is not None:
        before, after = run(path, feed), run(back, feed)
        assert before.keys() == after.keys()
        for name in before:
            assert np.array_equal(before[name], after[name], equal_nan=True), f"output {name!r} changed"
    return 8 * result.target_bytes / result.parameters


def mask_agreement(model: RealModel, options: nnc.CodingOptions | None = None) -> float:
    """Share of output pixels on the same side of `model.mask_threshold` before and after coding
    (PP-OCR's DB post-processing binarizes the probability map at 0.3)."""
    assert model.mask_threshold is not None
    feed = inputs_of(model)
    assert feed is not None
    original = nnrconv.load(model.path)
    fmt = get_registry().get(original.source_format)
    restored = _api.decode(_api.encode(original, options=options))
    before, after = fmt.run(original, feed), fmt.run(restored, feed)
    return min(
        float(np.mean((before[name] > model.mask_threshold) == (after[name] > model.mask_threshold))) for name in before
    )


def default_check(model: RealModel) -> CheckReport:
    """The default lossy coding, judged on realistic inputs by the catalog's criterion."""
    report = check(model.path, inputs=inputs_of(model))
    if model.mask_threshold is not None:
        agreement = mask_agreement(model)
        assert agreement >= model.min_mask_agreement, f"mask agreement {agreement:.4f} < {model.min_mask_agreement}"
    elif report.runnable:
        worst = min(o.snr_db for o in report.outputs)
        assert worst >= model.min_output_snr_db, f"output SNR {worst:.1f} dB < {model.min_output_snr_db} dB"
    else:
        coded = [t for t in report.tensors if t.dtype == "FLOAT" and math.prod(t.shape) >= 16]
        worst = min(t.snr_db for t in coded)
        assert worst >= model.min_weight_snr_db, f"weight SNR {worst:.1f} dB < {model.min_weight_snr_db} dB"
    return report


def embedded_round_trip(model: RealModel, workdir: Path) -> int:
    """native → NNR inside native (lossless) → plain native: identical tensors, and identical
    bytes for ONNX (the layout promises byte-exact restoration). Returns the embedded size."""
    assert model.embedded is not None
    inside = workdir / (model.path.stem + model.embedded)
    plain = workdir / "plain" / _native_name(model)
    plain.parent.mkdir(parents=True, exist_ok=True)
    nnrconv.convert(model.path, inside, options=nnc.CodingOptions(lossless=True))
    assert_models_identical(nnrconv.load(model.path), nnrconv.load(inside))
    nnrconv.convert(inside, plain)
    if model.format == "onnx":
        assert plain.read_bytes() == model.path.read_bytes(), "the restored ONNX file differs"
    else:
        assert_models_identical(nnrconv.load(model.path), nnrconv.load(plain))
    return _api._disk_size(inside)


def renamed_inputs(path: Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`feed` keyed by the input names of the model at `path`, in order (converters rename:
    NNEF identifiers cannot hold `:`)."""
    loaded = nnrconv.load(path)
    specs = get_registry().get(loaded.source_format).input_specs(loaded)
    assert len(specs) == len(feed)
    return {spec.name: value for spec, value in zip(specs, feed.values(), strict=True)}


def cross_format(model: RealModel, workdir: Path) -> tuple[Path, float]:
    """Convert to `model.cross` and run both: outputs match within the catalog's tolerance.

    Outputs are matched in order (converters rename them). Returns the converted model and the
    largest absolute error.
    """
    assert model.cross is not None
    feed = inputs_of(model)
    assert feed is not None
    target = workdir / f"{model.path.stem}.{model.cross}"
    shapes = {name: value.shape for name, value in feed.items()} if model.format == "onnx" else None
    nnrconv.convert(model.path, target, input_shapes=shapes)
    reference, converted = run(model.path, feed), run(target, renamed_inputs(target, feed))
    assert len(reference) == len(converted)
    worst = 0.0
    for (name, a), b in zip(reference.items(), converted.values(), strict=True):
        assert a.shape == b.shape, f"output {name!r}: shape {a.shape} became {b.shape}"
        np.testing.assert_allclose(b, a, rtol=model.cross_rtol, atol=model.cross_atol, err_msg=name)
        worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b))))
    return target, worst
