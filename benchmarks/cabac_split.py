# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Bitstream hashes and speed of the compiled DeepCABAC core, to compare two builds of it.

Usage: python benchmarks/cabac_split.py [--hashes-only] [--repeat 3] [--rows 1024] [--cols 2048]
                                        [--json out.json]

Written for the split of the C core into files with one job (issue #15): run it on the build
before and after a refactoring; the SHA-256 of every payload must not change and the speed must
stay within noise.  The fixed cases cover several sizes, dq on/off, scan orders 0..4, row
skipping, codebook indices, lossless integers, incremental updates (temporal context adaptation
and HDSP) and the parameter-set search on/off; each is decoded back and compared.

Speed: encode = CABAC coding of given levels (parameter-set search included, quantization not),
decode = CABAC decoding of the levels with entry points; Mparam/s in wall time and in CPU time
(`time.process_time`, the machine is shared), best of --repeat, at 1 and 2 threads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable

import numpy as np

from nnrconv.nnc import cabac


def _levels(rng: np.random.Generator, shape: tuple[int, ...], scale: float, dq: bool, scan: int = 0) -> np.ndarray:
    """Levels as the quantizer makes them (with DQ they depend on the scan order)."""
    weights = (rng.standard_normal(shape) * scale).astype(np.float32)
    return cabac.quantize(weights, -38, 2, dq_flag=dq, scan_order=scan).levels


def cases() -> list[tuple[str, np.ndarray, cabac.TensorCoding, dict, dict]]:
    """(name, levels, coding, encoder options, decoder options), all fixed by seed."""
    rng = np.random.default_rng(2026)
    out = []
    for shape in [(17,), (64, 3, 3, 3), (257, 33), (300, 700)]:
        for dq in (False, True):
            for scan in range(5):
                levels = _levels(rng, shape, 0.05, dq, scan)
                coding = cabac.TensorCoding(dq_flag=dq, scan_order=scan)
                out.append((f"{shape}-dq{int(dq)}-scan{scan}", levels, coding, {}, {}))
            levels = _levels(rng, shape, 0.05, dq, 1)
            coding = cabac.TensorCoding(dq_flag=dq, scan_order=1)
            out.append((f"{shape}-dq{int(dq)}-scan1-noopt", levels, coding, {"param_opt": False}, {}))
            levels = _levels(rng, shape, 0.05, dq)
            coding = cabac.TensorCoding(dq_flag=dq, scan_order=0, general_profile_idc=0, cabac_unary_length_minus1=3)
            out.append((f"{shape}-dq{int(dq)}-profile0-gtx4", levels, coding, {}, {}))
    for scan in (0, 2):
        weights = (rng.standard_normal((200, 96)) * 0.05).astype(np.float32)
        weights[::3] = 0
        sparse = cabac.quantize(weights, -38, 2, dq_flag=True, scan_order=scan).levels
        coding = cabac.TensorCoding(dq_flag=True, scan_order=scan)
        out.append((f"rowskip-scan{scan}", sparse, coding, {"row_skip": True}, {}))
    for size, zero in [(1, 0), (16, 0), (16, 15), (16, 5), (200, 77)]:
        indices = (rng.integers(0, size, (120, 50)) - zero).astype(np.int32)
        for scan in (0, 1):
            coding = cabac.TensorCoding(scan_order=scan, codebook_size=size, codebook_zero_offset=zero)
            out.append((f"codebook{size}-zero{zero}-scan{scan}", indices, coding, {}, {}))
    for scan in (0, 3):
        lossless = rng.integers(-3000, 3000, (130, 90)).astype(np.int32)
        lossless[rng.random(lossless.shape) < 0.4] = 0
        out.append((f"lossless-scan{scan}", lossless, cabac.TensorCoding(scan_order=scan), {}, {}))
    for shape in [(96, 80), (400, 256)]:
        for dq in (False, True):
            hist = (rng.random(shape) < 0.3).astype(np.uint8)
            for scan in (0, 2):
                base = _levels(rng, shape, 0.05, dq, scan)
                update = _levels(rng, shape, 0.01, dq, scan)
                coding = cabac.TensorCoding(dq_flag=dq, scan_order=scan, parent_node_id_present_flag=True)
                tca = {"base": base}
                out.append((f"tca{shape}-dq{int(dq)}-scan{scan}", update, coding, tca, tca))
                hdsp = {"history": hist}
                out.append((f"hdsp{shape}-dq{int(dq)}-scan{scan}", update, coding, hdsp, hdsp))
                both = {"base": base, "history": hist}
                out.append((f"tca-hdsp{shape}-dq{int(dq)}-scan{scan}", update, coding, both, both))
    return out


def _encode(levels: np.ndarray, coding: cabac.TensorCoding, options: dict, threads: int = 1) -> bytes:
    enc = cabac.PayloadEncoder()
    enc.encode_levels(levels, coding, threads=threads, **options)
    return enc.finish()


def _decode(payload: bytes, shape, coding, options: dict, eps=None, threads: int = 1) -> np.ndarray:
    dec = cabac.PayloadDecoder(payload)
    levels = dec.decode_levels(shape, coding, entry_points=eps, threads=threads, **options)
    dec.finish()
    return levels


def hashes() -> dict[str, str]:
    """SHA-256 of every case's payload (coded on 1 and 2 threads); raises if a round trip differs."""
    result = {}
    for name, levels, coding, enc_opts, dec_opts in cases():
        payload = _encode(levels, coding, enc_opts)
        if _encode(levels, coding, enc_opts, threads=2) != payload:
            raise AssertionError(f"{name}: 2 threads give another payload")
        layout = cabac.TensorLayout(levels.shape, coding, None, dec_opts.get("base"), dec_opts.get("history"))
        (eps,) = cabac.entry_points(payload, [layout])
        for eps_in, threads in [(None, 1), (eps or None, 2)]:
            if not np.array_equal(_decode(payload, levels.shape, coding, dec_opts, eps_in, threads), levels):
                raise AssertionError(f"{name}: decoded levels differ (threads {threads})")
        digest = hashlib.sha256(payload).hexdigest()
        eps_digest = hashlib.sha256(repr(eps).encode()).hexdigest()[:16]
        result[name] = f"{digest} eps:{eps_digest}"
    return result


def _best(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    wall = cpu = float("inf")
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - w0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu


def speed(rows: int, cols: int, repeat: int) -> list[dict]:
    """Encode / decode speed on one Gaussian tensor per setting, Mparam/s."""
    rng = np.random.default_rng(7)
    rows_out = []
    for dq, scan in [(True, 0), (True, 2), (False, 2)]:
        levels = _levels(rng, (rows, cols), 0.05, dq, scan)
        coding = cabac.TensorCoding(dq_flag=dq, scan_order=scan)
        payload = _encode(levels, coding, {})
        (eps,) = cabac.entry_points(payload, [cabac.TensorLayout(levels.shape, coding)])
        for threads in (1, 2):
            if threads == 2 and not scan:
                continue
            n = levels.size / 1e6
            ew, ec = _best(lambda: _encode(levels, coding, {}, threads), repeat)  # noqa: B023
            dw, dc = _best(lambda: _decode(payload, levels.shape, coding, {}, eps or None, threads), repeat)  # noqa: B023
            rows_out.append(
                {
                    "case": f"dq{int(dq)}-scan{scan}",
                    "threads": threads,
                    "enc_wall": n / ew,
                    "enc_cpu": n / ec,
                    "dec_wall": n / dw,
                    "dec_cpu": n / dc,
                }
            )
    return rows_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hashes-only", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--cols", type=int, default=2048)
    parser.add_argument("--json", help="write hashes and speeds to this file")
    args = parser.parse_args(argv)
    digests = hashes()
    combined = hashlib.sha256("".join(f"{k}={v}\n" for k, v in digests.items()).encode()).hexdigest()
    print(f"{len(digests)} payloads, all round trips exact; combined SHA-256 {combined}")
    speeds = [] if args.hashes_only else speed(args.rows, args.cols, args.repeat)
    if speeds:
        print(f"{'case':14} {'thr':>3} {'enc wall':>9} {'enc cpu':>9} {'dec wall':>9} {'dec cpu':>9}  (Mparam/s)")
        for r in speeds:
            print(
                f"{r['case']:14} {r['threads']:>3} {r['enc_wall']:9.1f} {r['enc_cpu']:9.1f} "
                f"{r['dec_wall']:9.1f} {r['dec_cpu']:9.1f}"
            )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"combined": combined, "hashes": digests, "speed": speeds}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
