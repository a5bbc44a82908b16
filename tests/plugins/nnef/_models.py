# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Small NNEF models written from scratch: graph text plus `.dat` files (ours, nnef's, legacy, vendor)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nnrconv.core import DType
from nnrconv_nnef._dat import DatHeader, LegacyCode, encode_payload

Inputs = dict[str, np.ndarray]
Builder = Callable[[Path], tuple[Path, Inputs]]

_RNG_SEED = 5

CNN_GRAPH = """version 1.0;

graph cnn( input ) -> ( output )
{
    input = external<scalar>(shape = [1, 3, 8, 8]);
    conv1_filter = variable<scalar>(shape = [4, 3, 3, 3], label = 'conv1_filter');
    conv1_bias = variable<scalar>(shape = [1, 4], label = 'conv1_bias');
    bn_mean = variable<scalar>(shape = [1, 4], label = 'bn_mean');
    bn_variance = variable<scalar>(shape = [1, 4], label = 'bn_variance');
    bn_offset = variable<scalar>(shape = [1, 4], label = 'bn_offset');
    bn_scale = variable<scalar>(shape = [1, 4], label = 'bn_scale');
    fc_filter = variable<scalar>(shape = [5, 64], label = 'fc_filter');
    fc_bias = variable<scalar>(shape = [1, 5], label = 'fc_bias');
    conv = conv(input, conv1_filter, conv1_bias, padding = [(1, 1), (1, 1)]);
    norm = batch_normalization(conv, bn_mean, bn_variance, bn_offset, bn_scale, epsilon = 1e-5);
    act = relu(norm);
    pool = max_pool(act, size = [1, 1, 2, 2], stride = [1, 1, 2, 2]);
    flat = reshape(pool, shape = [1, -1]);
    output = linear(flat, fc_filter, fc_bias);
}
"""

MLP_GRAPH = """version 1.0;

graph mlp( x ) -> ( y )
{
    x = external<scalar>(shape = [2, 6]);
    w1 = variable<scalar>(shape = [8, 6], label = 'w1');
    b1 = variable<scalar>(shape = [1, 8], label = 'b1');
    w2 = variable<scalar>(shape = [3, 8], label = 'w2');
    b2 = variable<scalar>(shape = [1, 3], label = 'b2');
    h = tanh(linear(x, w1, b1));
    y = softmax(linear(h, w2, b2));
}
"""

# Labels that make sub-folders, one with a leading '/', and two variables sharing one label.
NESTED_GRAPH = """version 1.0;

graph nested( input ) -> ( output )
{
    input = external<scalar>(shape = [1, 4]);
    w = variable<scalar>(shape = [4, 4], label = 'block1/conv/filter');
    w_again = variable<scalar>(shape = [4, 4], label = 'block1/conv/filter');
    b = variable<scalar>(shape = [1, 4], label = '/block1/conv/bias');
    s = variable<scalar>(shape = [1, 4], label = 'block2/deep/er/scale');
    h = linear(input, w, b);
    g = linear(h, w_again, 0.0);
    output = mul(g, s);
}
"""

# float16, int32, 1-bit bool, legacy headers (linear-quantised uint8, signed integer, float
# with parameters), a vendor item type, and graph.quant.
MIXED_GRAPH = """version 1.0;

graph mixed( x ) -> ( y, half, ints, flags, quantized, legacy_ints, vendor )
{
    x = external<scalar>(shape = [2, 3]);
    w = variable<scalar>(shape = [2, 3], label = 'w');
    legacy_w = variable<scalar>(shape = [2, 3], label = 'legacy/w');
    half = variable<scalar>(shape = [3, 2], label = 'half');
    ints = variable<integer>(shape = [5], label = 'ints');
    flags = variable<logical>(shape = [3, 3], label = 'flags');
    quantized = variable<scalar>(shape = [2, 2], label = 'legacy/quantized');
    legacy_ints = variable<integer>(shape = [4], label = 'legacy/ints');
    vendor = variable<scalar>(shape = [4, 8], label = 'vendor');
    y = add(add(x, w), legacy_w);
}
"""
MIXED_QUANT = '"quantized": linear_quantize(min = -1.0, max = 1.0, bits = 8);\n'


def write_dat(path: Path, array: np.ndarray, header: DatHeader | None = None, payload: bytes | None = None) -> None:
    """A `.dat` file: our canonical header (or `header`) and the array's payload (or `payload`)."""
    if header is None:
        header = DatHeader.for_tensor(DType.from_numpy(array.dtype), array.shape)
    if payload is None:
        payload = encode_payload(header, array)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.pack() + payload)


def write_dat_with_nnef(path: Path, array: np.ndarray) -> None:
    """A `.dat` file written by the ``nnef`` package itself."""
    import nnef

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        nnef.write_tensor(f, array)


def legacy_header(code: int, bits: int, shape: tuple[int, ...], params: tuple[float, ...]) -> DatHeader:
    """A pre-1.0.3 header: quantisation code in the item-type word, float parameters after it."""
    reserved = struct.pack("<8f", *params, *([0.0] * (8 - len(params)))) + bytes(44)
    extents = (*shape, *([0] * (8 - len(shape))))
    length = (int(np.prod(shape)) * bits + 7) // 8
    return DatHeader((1, 0), length, len(shape), extents, bits, code, reserved)


def _folder(path: Path, graph: str, quant: str | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "graph.nnef").write_text(graph)
    if quant is not None:
        (path / "graph.quant").write_text(quant)
    return path


def _normal(rng: np.random.Generator, *shape: int, scale: float = 0.5) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def cnn_model(path: Path) -> tuple[Path, Inputs]:
    rng = np.random.default_rng(_RNG_SEED)
    folder = _folder(path, CNN_GRAPH)
    arrays = {
        "conv1_filter": _normal(rng, 4, 3, 3, 3),
        "conv1_bias": _normal(rng, 1, 4),
        "bn_mean": _normal(rng, 1, 4),
        "bn_variance": rng.uniform(0.5, 2.0, (1, 4)).astype(np.float32),
        "bn_offset": _normal(rng, 1, 4),
        "bn_scale": rng.uniform(0.5, 1.5, (1, 4)).astype(np.float32),
        "fc_filter": _normal(rng, 5, 64, scale=0.1),
        "fc_bias": _normal(rng, 1, 5),
    }
    for label, array in arrays.items():
        write_dat(folder / f"{label}.dat", array)
    return folder, {"input": _normal(rng, 1, 3, 8, 8, scale=1.0)}


def mlp_model(path: Path) -> tuple[Path, Inputs]:
    """Weights written by the nnef package's own writer."""
    rng = np.random.default_rng(_RNG_SEED + 1)
    folder = _folder(path, MLP_GRAPH)
    for label, shape in {"w1": (8, 6), "b1": (1, 8), "w2": (3, 8), "b2": (1, 3)}.items():
        write_dat_with_nnef(folder / f"{label}.dat", _normal(rng, *shape))
    return folder, {"x": _normal(rng, 2, 6, scale=1.0)}


def nested_model(path: Path) -> tuple[Path, Inputs]:
    rng = np.random.default_rng(_RNG_SEED + 2)
    folder = _folder(path, NESTED_GRAPH)
    write_dat(folder / "block1/conv/filter.dat", _normal(rng, 4, 4))
    write_dat(folder / "block1/conv/bias.dat", _normal(rng, 1, 4))
    write_dat(folder / "block2/deep/er/scale.dat", _normal(rng, 1, 4))
    return folder, {"input": _normal(rng, 1, 4, scale=1.0)}


VENDOR_ITEM_TYPE = 0x5254_4030  # tract's 'TR' vendor code with a block-quantised payload kind


def mixed_model(path: Path) -> tuple[Path, Inputs]:
    rng = np.random.default_rng(_RNG_SEED + 3)
    folder = _folder(path, MIXED_GRAPH, MIXED_QUANT)
    write_dat(folder / "w.dat", _normal(rng, 2, 3))
    legacy_w = _normal(rng, 2, 3)
    write_dat(folder / "legacy/w.dat", legacy_w, legacy_header(LegacyCode.FLOAT, 32, (2, 3), (-1.5, 1.5)))
    write_dat(folder / "half.dat", _normal(rng, 3, 2).astype(np.float16))
    write_dat(folder / "ints.dat", np.array([1, -2, 3, -400000, 5], np.int32))
    flags = rng.random((3, 3)) > 0.5
    write_dat(folder / "flags.dat", flags)
    quantized = rng.integers(0, 256, (2, 2), dtype=np.uint8)
    write_dat(folder / "legacy/quantized.dat", quantized, legacy_header(LegacyCode.LINEAR, 8, (2, 2), (-1.0, 1.0)))
    legacy_ints = np.array([-7, 0, 7, 100], np.int16)
    write_dat(folder / "legacy/ints.dat", legacy_ints, legacy_header(LegacyCode.INTEGER, 16, (4,), (1.0,)))
    vendor = DatHeader((1, 0), 20, 2, (4, 8, 0, 0, 0, 0, 0, 0), 0xFFFF_FFFF, VENDOR_ITEM_TYPE)
    write_dat(folder / "vendor.dat", np.zeros(0), vendor, payload=bytes(range(20)))
    return folder, {"x": _normal(rng, 2, 3, scale=1.0)}


MODELS: dict[str, Builder] = {
    "cnn_bn": cnn_model,
    "mlp": mlp_model,
    "nested_labels": nested_model,
    "mixed_legacy": mixed_model,
}
# Models nnef-tools' interpreter can run.
RUNNABLE = ("cnn_bn", "mlp", "nested_labels")
