# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Write the fuzzer's seed corpus: tiny valid NNR bitstreams, one per coding path of the decoder.

Run from the repository root: `python tests/fuzz/make_corpus.py` (rewrites tests/fuzz/corpus/).
Each file is a few hundred bytes, so that mutations reach every syntax structure quickly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from nnrconv import nnc

CORPUS = Path(__file__).parent / "corpus"
ONNX = int(nnc.TopologyStorageFormat.NNR_TPL_ONNX)
UNREC = int(nnc.TopologyStorageFormat.NNR_TPL_UNREC)


def _tensors(seed: int) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        ("conv.weight", (rng.standard_normal((4, 2, 3, 3)) * 0.2).astype(np.float32)),
        ("conv.bias", (rng.standard_normal(4) * 0.05).astype(np.float32)),
        ("fc.weight", (rng.standard_normal((3, 16)) * 0.3).astype(np.float32)),
    ]


def _integers() -> list[tuple[str, np.ndarray]]:
    return [
        ("steps", np.arange(-6, 6, dtype=np.int64).reshape(3, 4)),
        ("mask", np.array([0, 1, 1, 0, 1], dtype=np.uint8)),
        ("half", np.linspace(-1, 1, 12, dtype=np.float16).reshape(3, 4)),
    ]


def seeds() -> dict[str, bytes]:
    """Name -> bitstream, each exercising another part of the decoder."""
    topology = b"\x08\x07tiny-topology" * 3  # opaque to the decoder; deflated when smaller
    opts = nnc.CodingOptions
    made = {
        "lossy_dq.nnr": nnc.encode_model(_tensors(0), topology, ONNX, options=opts(jobs=1)),
        "lossy_qp_nodq.nnr": nnc.encode_model(_tensors(1), topology, ONNX, options=opts(qp=-30, dq=False, jobs=1)),
        "codebook.nnr": nnc.encode_model(_tensors(2), topology, ONNX, options=opts(qp=-24, codebook=True, jobs=1)),
        "blocks_entry_points.nnr": nnc.encode_model(
            [("big.weight", np.random.default_rng(3).standard_normal((16, 24)).astype(np.float32))],
            b"",
            UNREC,
            options=opts(scan_order=1, jobs=1),
        ),
        "lossless_mixed.nnr": nnc.encode_model(
            _tensors(4) + _integers(), topology, ONNX, compress_topology=False, options=opts(lossless=True, jobs=1)
        ),
        "no_topology.nnr": nnc.encode_model(_integers(), b"", UNREC, options=opts(lossless=True, jobs=1)),
        "rd_lambda.nnr": nnc.encode_model(_tensors(5), topology, ONNX, options=opts(qp=-28, lambda_scale=1.0, jobs=1)),
        "profile0.nnr": nnc.encode_model(_tensors(6), b"", UNREC, general_profile_idc=0, options=opts(jobs=1)),
        # A few bytes declaring a large tensor (all rows skipped): mutations grow its dimensions
        # towards the element cap and the memory budget.
        "zeros_declared_1m.nnr": nnc.encode_model(
            [("zeros", np.zeros((1024, 1024), np.float32))], b"", UNREC, options=opts(qp=-30, jobs=1)
        ),
    }
    made["units_aggregate.nnr"] = _unit_zoo()
    made.update(_nncodec_seeds())
    base_stream = made["lossy_dq.nnr"]
    base = nnc.read_base(base_stream, jobs=1)
    changed = [(name, array + np.float32(0.01)) for name, array in _tensors(0)]
    made["update.nnr"] = nnc.encode_update(changed, topology, ONNX, base, options=opts(jobs=1))
    return made


def _unit_zoo() -> bytes:
    """Unit kinds our encoder does not write: an aggregate (nested), a quantization unit, an LPS."""
    ndu = nnc.CompressedDataUnit(
        nnc.NduHeader(nnc.PayloadType.NNR_PT_RAW_FLOAT, topology_elem_id="x", tensor_dimensions=(2,)), b"\0" * 8
    )
    inner = nnc.AggregateUnit((ndu, nnc.QuantizationUnit()))
    outer = nnc.AggregateUnit((nnc.TopologyUnit(), inner), independently_decodable_flag=False)
    return nnc.write_units([nnc.StartUnit(1), nnc.ModelParameterSet(), outer, nnc.LayerParameterSet()])


def _nncodec_seeds() -> dict[str, bytes]:
    """Streams written by the reference encoder NNCodec 2.1.3 (skipped when it is not installed)."""
    sys.path.insert(0, str(Path(__file__).parents[2]))  # run as a script: make `tests` importable
    try:
        from tests.nnc._nncodec_ref import compress
    except ImportError:
        return {}
    params = dict(_tensors(7))
    try:
        return {
            "nncodec_dq.nnr": compress(params),
            "nncodec_blocks_rowskip.nnr": compress(params, scan_order=1, row_skipping=True, use_dq=False),
        }
    except Exception as exc:  # NNCodec missing pieces: keep the other seeds
        print(f"NNCodec seeds skipped: {exc}", file=sys.stderr)
        return {}


def main() -> int:
    CORPUS.mkdir(exist_ok=True)
    for old in CORPUS.glob("*.nnr"):
        old.unlink()
    made = seeds()
    base = nnc.read_base(made["lossy_dq.nnr"], jobs=1)
    for name, data in made.items():
        if name == "units_aggregate.nnr":
            nnc.inspect_units(data)  # syntax only: the NDU names no tensor of a topology
        else:
            nnc.decode_model(data, jobs=1, base=base if name == "update.nnr" else None)  # every seed is valid
        (CORPUS / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
