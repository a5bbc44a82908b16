# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Smallest transparent size at equal TASK quality: nnrconv's allocation vs NNCodec's global QP.

Usage: python benchmarks/rate_vs_task.py [--models cls,rec,det] [--no-nncodec]

Real models (PP-OCR v4 det/rec and the v2.0 direction classifier from rapidocr-onnxruntime 1.4.4,
basic-pitch 0.4.0's ONNX note transcriber) on inputs generated here: words rendered with Pillow
(DejaVu when installed), played notes synthesised with numpy; 16 calibration samples and a
separate scoring set. Task criteria, on every scoring sample:
  cls  same orientation decision (argmax of 0/180 degrees);
  rec  same decoded text (greedy CTC: argmax per step, repeats collapsed, blanks dropped);
  det  same text mask: the 0.3-thresholded probability map has IoU >= 0.99 with the original's;
  pitch same transcription: note map > 0.3 (frames) and onset map > 0.5, each IoU >= 0.99.
For each model, the coarsest setting that keeps the task unchanged *and every finer setting too*
(scanned from fine to coarse up to the first failure; a bisection assumes a monotone criterion,
which these are not: PP-OCR det passes at global QP -32 but fails at -33, and a bisection
landing on such a lucky point favours whichever method it happens to):
  global QP   one QP for every tensor (1-D tensors QP - 8), NNCodec's way, DQ on; its bits are
              NNCodec 2.1.3's own bitstream at that QP (nnrconv's is byte-identical per tensor);
  no data     nnrconv's equal-slope plan, sensitivities probed on seeded N(0,1) feeds;
  16 samples  the same, probed on the 16 calibration samples; also one global QP over
              error-compensated layers (GPTQ-style, from the 16 samples' layer inputs, scanned
              from COMPENSATED_START finer than NNCodec's) and the plan where each unit may be
              coded plain or compensated (what `--output-snr` with `--calibration` searches), the
              smallest reported.
The allocator's knob is its output-noise goal (`Allocator.plan_for_noise`, log10 in steps of
0.25), scanned on the task like the QP (in steps of 1); bits/param count the coded float
tensors (NDU units) over their parameters.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nnrconv
from nnrconv import _api, nnc
from nnrconv._rate import Allocator, OutputProbe, RateCurves, calibration_feeds, lossy_tensors, make_units
from nnrconv._rate._compensate import Compensation
from nnrconv._rate._hessian import layer_hessians
from nnrconv._rate._mixed import MixedCurves

COMPENSATED_START = 12
"""The compensated global QP is scanned from this many QP finer than the plain one's closure."""

WORDS = [
    "invoice",
    "total",
    "amount",
    "paid",
    "date",
    "order",
    "number",
    "street",
    "avenue",
    "market",
    "coffee",
    "bread",
    "milk",
    "price",
    "station",
    "platform",
    "departure",
    "arrival",
    "gate",
    "seat",
    "window",
    "ticket",
    "hotel",
    "room",
    "floor",
    "exit",
    "parking",
    "monday",
    "friday",
    "january",
    "august",
    "2024",
    "1999",
    "42",
    "17.50",
    "3.14",
    "open",
    "closed",
    "sale",
    "discount",
    "welcome",
    "library",
    "museum",
    "garden",
    "bridge",
    "river",
    "north",
    "south",
    "east",
    "west",
    "center",
    "office",
    "bank",
    "pharmacy",
]


def _font(size: int):  # type: ignore[no-untyped-def]
    from PIL import ImageFont

    for path in ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf"):
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def text_line(rng: np.random.Generator, width: int, height: int = 48) -> np.ndarray:
    """A rendered line of 1-3 words, (3, height, width) normalised as PP-OCR does ((x/255-0.5)/0.5)."""
    from PIL import Image, ImageDraw

    words = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 4))))
    size = int(rng.integers(22, 34))
    bg = int(rng.integers(200, 256))
    img = Image.new("RGB", (width, height), (bg, bg, bg))
    draw = ImageDraw.Draw(img)
    ink = tuple(int(v) for v in rng.integers(0, 80, 3))
    draw.text((int(rng.integers(2, 12)), (height - size) // 2 - 2), words, fill=ink, font=_font(size))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = arr + rng.normal(0, 0.02, arr.shape).astype(np.float32)
    return ((arr - 0.5) / 0.5).transpose(2, 0, 1).astype(np.float32)


def page(rng: np.random.Generator, side: int = 320) -> np.ndarray:
    """A page with several rendered lines at random places, (3, side, side), PP-OCR-normalised."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (side, side), tuple(int(v) for v in rng.integers(190, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 7))):
        size = int(rng.integers(14, 30))
        words = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 4))))
        xy = (int(rng.integers(0, side // 2)), int(rng.integers(0, side - size)))
        draw.text(xy, words, fill=tuple(int(v) for v in rng.integers(0, 90, 3)), font=_font(size))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return ((arr - 0.5) / 0.5).transpose(2, 0, 1).astype(np.float32)


# -- the models and their tasks ----------------------------------------------------------------


def _models_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("rapidocr_onnxruntime")  # its __init__ needs OpenCV: do not import it
    if spec is None or spec.origin is None:
        raise SystemExit("install the models: pip install --no-deps rapidocr-onnxruntime==1.4.4")
    return Path(spec.origin).parent / "models"


def _ctc(probs: np.ndarray) -> list[tuple[int, ...]]:
    out = []
    for row in probs.argmax(-1):
        seq, last = [], -1
        for k in row:
            if k != last and k != 0:
                seq.append(int(k))
            last = k
        out.append(tuple(seq))
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def notes(rng: np.random.Generator, samples: int = 43844, rate: int = 22050) -> np.ndarray:
    """Two seconds of played notes, (samples, 1) in [-1, 1]: 3-7 notes (MIDI 45-84, some
    overlapping) with decaying harmonics and a little noise, what basic-pitch transcribes."""
    t = np.arange(samples) / rate
    audio = np.zeros(samples)
    for _ in range(int(rng.integers(3, 8))):
        pitch = int(rng.integers(45, 85))
        f0 = 440.0 * 2.0 ** ((pitch - 69) / 12)
        start, length = rng.uniform(0.0, 1.6), rng.uniform(0.2, 0.9)
        on = (t >= start) & (t < start + length)
        env = np.where(on, np.exp(-(t - start) * rng.uniform(1.5, 5.0)), 0.0)
        tone = sum(
            a * np.sin(2 * np.pi * k * f0 * t) for k, a in enumerate((1.0, 0.5, 0.25, 0.12), 1) if k * f0 < rate / 2
        )
        audio += rng.uniform(0.3, 1.0) * env * tone
    audio = 0.8 * audio / max(1e-9, float(np.abs(audio).max()))
    return (audio + 0.003 * rng.standard_normal(samples)).astype(np.float32)[:, None]


def _single(test: Callable[[np.ndarray, np.ndarray], bool]) -> Callable[[dict, dict], bool]:
    """A criterion on a model's only output."""
    return lambda a, b: test(next(iter(a.values())), next(iter(b.values())))


def make_case(name: str, scoring: int) -> dict:
    rng = np.random.default_rng({"cls": 1, "rec": 2, "det": 3, "pitch": 4}[name])
    if name == "cls":

        def sample(r):  # type: ignore[no-untyped-def]
            x = text_line(r, 192)
            return x[:, ::-1, ::-1].copy() if r.random() < 0.5 else x

        file = _models_dir() / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
        same = _single(lambda a, b: bool(np.all(a.argmax(-1) == b.argmax(-1))))
        shape = (1, 3, 48, 192)
    elif name == "rec":

        def sample(r):  # type: ignore[no-untyped-def]
            return text_line(r, 320)

        file, same = _models_dir() / "ch_PP-OCRv4_rec_infer.onnx", _single(lambda a, b: _ctc(a) == _ctc(b))
        shape = (1, 3, 48, 320)
    elif name == "det":

        def sample(r):  # type: ignore[no-untyped-def]
            return page(r)

        file = _models_dir() / "ch_PP-OCRv4_det_infer.onnx"
        same = _single(lambda a, b: _iou(a > 0.3, b > 0.3) >= 0.99)
        shape = (1, 3, 320, 320)
    else:
        sample, shape = notes, (1, 43844, 1)
        file = _basic_pitch()

        def same(a: dict, b: dict) -> bool:
            # outputs in name order: contour, note, onset (basic-pitch's frame and onset thresholds)
            note, onset = sorted(a)[1], sorted(a)[2]
            return _iou(a[note] > 0.3, b[note] > 0.3) >= 0.99 and _iou(a[onset] > 0.5, b[onset] > 0.5) >= 0.99

    calib = np.stack([sample(rng) for _ in range(16)])
    score = np.stack([sample(rng) for _ in range(scoring)])
    return {"file": file, "calib": calib, "score": score, "same": same, "shape": shape}


def _basic_pitch() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("basic_pitch")  # importing it loads TensorFlow: only locate it
    if spec is None or spec.origin is None:
        raise SystemExit("install the model: pip install --no-deps basic-pitch==0.4.0")
    return Path(spec.origin).parent / "saved_models" / "icassp_2022" / "nmp.onnx"


# -- searches ----------------------------------------------------------------------------------


def closure(ok: Callable[[float], bool], start: float, step: float, stop: float) -> float | None:
    """The last x of start, start + step, ... (up to `stop`) before the first one failing `ok`:
    the coarsest setting whose finer settings on the grid all pass (None if `start` fails)."""
    last = None
    x = start
    while x <= stop and ok(x):
        last, x = x, x + step
    return last


def run_case(name: str, scoring: int, use_nncodec: bool, center_snr: float = 30.0) -> dict:
    case = make_case(name, scoring)
    model = nnrconv.load(case["file"])
    fmt = _api._plugin(model.source_format)
    tensors = lossy_tensors({n: t.numpy() for n, t in model.tensors.items()})
    params = sum(a.size for a in tensors.values())
    input_name = fmt.input_specs(model)[0].name
    score_probe = OutputProbe(fmt, model, [{input_name: case["score"]}])
    reference = score_probe.reference[0]
    curves = RateCurves(tensors, jobs=2)
    units = make_units(tensors)
    judge = Allocator(units, curves, score_probe)

    verdicts: dict = {}

    def transparent(qps, over=curves) -> bool:  # type: ignore[no-untyped-def]
        key = (id(over), tuple(sorted((u.names, q) for u, q in qps.items())))  # fine goals repeat plans
        if key not in verdicts:
            verdicts[key] = case["same"](reference, score_probe.outputs(over.reconstruction(qps))[0])
        return verdicts[key]

    def coded_bits(plan: dict[str, nnc.TensorChoice] | None, qp: int | None, replaced=None) -> int:  # type: ignore[no-untyped-def]
        options = nnc.CodingOptions(plan=plan) if plan is not None else nnc.CodingOptions(qp=qp)
        _, ndus = nnc.encode_parts({**tensors, **(replaced or {})}, options)
        return 8 * sum(len(u) for u in ndus.values())

    def allocated_bits(allocator, qps) -> int:  # type: ignore[no-untyped-def]
        result = allocator._result(qps, "", 0, 0.0, 0, 0, 0.0)
        return coded_bits(result.plan, None, result.replaced)

    row: dict = {"model": name, "params": params}
    started = time.perf_counter()
    q = int(closure(lambda q: transparent(judge.uniform(int(q))), -100, 1, 0) or -100)
    row["global_qp"] = q
    print(f"{name}: global QP {q} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    row["global_bpp"] = coded_bits(None, q) / params
    if use_nncodec:
        from tests.nnc import _nncodec_ref as ref

        mark = time.perf_counter()
        data = ref.compress(tensors, qp=q, nonweight_qp=q - 8, use_dq=True, row_skipping=True)
        row["nncodec_seconds"] = time.perf_counter() - mark
        row["nncodec_bpp"] = 8 * len(data) / params
    mark = time.perf_counter()
    coded_bits(None, q)
    row["qp_seconds"] = time.perf_counter() - mark
    for label, feeds_real in (("nodata", False), ("calib", True)):
        mark = time.perf_counter()
        if feeds_real:
            feeds = [{input_name: case["calib"]}]
        else:
            specs = fmt.input_specs(model)
            feeds, _ = calibration_feeds(None, specs, shapes={input_name: case["shape"]})
        probe = OutputProbe(fmt, model, feeds)
        allocator = Allocator(units, curves, probe)
        center, _ = allocator.global_for_snr(center_snr)
        allocator.probe_sensitivities(center)
        prepared = time.perf_counter() - mark
        x = closure(lambda x, a=allocator: transparent(a.plan_for_noise(10.0**x)), -9.0, 0.25, 0.0)
        bits = coded_bits(None, q)
        if x is not None:
            qps = allocator.plan_for_noise(10.0**x)
            bits = coded_bits({n: nnc.TensorChoice(qp=t) for n, t in _plan(qps, curves).items()}, None)
        if feeds_real:  # the same searches over error-compensated curves (layer inputs of the 16)
            twin_curves = RateCurves(
                tensors, jobs=2, compensation=Compensation(tensors, layer_hessians(fmt, model, feeds, tensors))
            )
            twin = Allocator(units, twin_curves, probe)
            qc = closure(lambda q, a=twin: transparent(a.uniform(int(q)), a.curves), q - COMPENSATED_START, 1, 0)
            row["compensated_qp"] = qc
            if qc is not None:
                row["compensated_global_bpp"] = allocated_bits(twin, twin.uniform(int(qc))) / params
            mixed = Allocator(units, MixedCurves(curves, twin_curves), probe)  # what `prepare` builds
            mixed.probe_sensitivities(center)
            xc = closure(lambda x, a=mixed: transparent(a.plan_for_noise(10.0**x), a.curves), -9.0, 0.25, 0.0)
            if xc is not None:
                row["compensated_plan_bpp"] = allocated_bits(mixed, mixed.plan_for_noise(10.0**xc)) / params
            options = [row.get("compensated_global_bpp", math.inf), row.get("compensated_plan_bpp", math.inf)]
            bits = min(bits, int(min(options) * params)) if min(options) < math.inf else bits
        # never worse than one global QP: that candidate is the plan with every unit at q
        row[f"{label}_bpp"] = min(bits, coded_bits(None, q)) / params
        row[f"{label}_seconds"] = prepared
        done = time.perf_counter() - started
        print(f"{name}: {label} {row[f'{label}_bpp']:.3f} bits ({done:.0f} s)", file=sys.stderr, flush=True)
    row["seconds"] = time.perf_counter() - started
    return row


def _plan(qps, curves) -> dict[str, int]:  # type: ignore[no-untyped-def]
    from nnrconv._rate._curves import tensor_qp

    return {n: tensor_qp(curves.tensors[n], q) for u, q in qps.items() for n in u.names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="cls,rec,det,pitch")
    parser.add_argument("--scoring", type=int, default=48)
    parser.add_argument("--no-nncodec", action="store_true")
    parser.add_argument("--center-snr", type=float, default=30.0, help="output SNR (dB) where sensitivities are probed")
    args = parser.parse_args(argv)
    rows = []
    for name in args.models.split(","):
        row = run_case(name, args.scoring, not args.no_nncodec, args.center_snr)
        rows.append(row)
        print(row, file=sys.stderr, flush=True)
    base = "nncodec_bpp" if not args.no_nncodec else "global_bpp"
    print(
        "| model | params | NNCodec best QP | bits/param | nnrconv no data | ratio | nnrconv 16 samples | ratio "
        "| of which: compensated global QP, mixed plan | allocation time (s) | --qp time (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for r in rows:
        b = r[base]
        keys = ("compensated_global_bpp", "compensated_plan_bpp")
        comp = ", ".join(f"{r[k]:.3f} ({r[k] / b:.2f})" if k in r else "fails" for k in keys)
        print(
            f"| {r['model']} | {r['params']:,} | {r['global_qp']} | {b:.3f} | {r['nodata_bpp']:.3f} | "
            f"{r['nodata_bpp'] / b:.2f} | {r['calib_bpp']:.3f} | {r['calib_bpp'] / b:.2f} | {comp} | "
            f"{r['calib_seconds']:.1f} | {r['qp_seconds']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
