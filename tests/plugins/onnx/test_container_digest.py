# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The container digest of `.nnr.onnx`: damage to the graph around the coded units is exit 4.

NNCodec-independent: these files are read by nnrconv and by plain ONNX tools only.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnrconv
from nnrconv.cli import main
from nnrconv.core import BitstreamError
from nnrconv_onnx import _digest, _io

EXAMPLE = Path(__file__).parents[3] / "examples" / "tiny_cnn.onnx"


@pytest.fixture
def sealed(tmp_path: Path) -> Path:
    path = tmp_path / "m.nnr.onnx"
    assert main(["convert", str(EXAMPLE), str(path), "-q"]) == 0
    return path


def _unsealed(path: Path) -> bytes:
    """The file as nnrconv wrote it before container digests: the same bytes without the entry."""
    proto = onnx.load(path)
    _digest.strip(proto)
    return proto.SerializeToString()


def _graph_offsets(data: bytes) -> list[int]:
    """Byte offsets inside the graph that are no NNR data unit: names, op types, attributes."""
    proto = onnx.ModelProto.FromString(data)
    wanted = [n.op_type.encode() for n in proto.graph.node if n.domain != "org.mpeg.nnr"]
    wanted += [b"org.mpeg.nnr", proto.graph.name.encode(), proto.graph.input[0].name.encode()]
    return [data.index(w) + len(w) // 2 for w in wanted if w and w in data]


def test_damage_to_the_graph_is_refused_naming_what_differs(
    sealed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = sealed.read_bytes()
    out = tmp_path / "out.onnx"
    offsets = _graph_offsets(data)
    assert len(offsets) >= 4
    for offset in offsets:
        damaged = bytearray(data)
        damaged[offset] ^= 0x01
        sealed.write_bytes(damaged)
        assert main(["convert", str(sealed), str(out), "-q"]) == 4
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(sealed) in err and not out.exists()
        assert "differs from the container digest" in err or "damaged" in err
    # The node around a flipped op type is named, with its first output and byte offset.
    node = onnx.ModelProto.FromString(data).graph.node[-1]
    damaged = bytearray(data)
    at = data.rindex(node.op_type.encode())
    damaged[at] ^= 0x20
    sealed.write_bytes(damaged)
    with pytest.raises(BitstreamError, match=rf"graph\.node\[\d+\] \(\w+ -> '{node.output[0]}'\) \(byte offset \d+\)"):
        nnrconv.load(sealed)


def test_every_random_bit_flip_is_refused(sealed: Path, tmp_path: Path) -> None:
    """Anywhere in the file: coded units, graph, metadata, the digest itself. Without the digest,
    some of the same flips load silently (measured: 28 of 300 on the PP-OCR classifier)."""
    data = sealed.read_bytes()
    rng = random.Random(12)
    for _ in range(200):
        damaged = bytearray(data)
        damaged[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        sealed.write_bytes(damaged)
        with pytest.raises(BitstreamError):
            model = nnrconv.load(sealed)
            for tensor in model:
                tensor.numpy()


def test_plain_onnx_tools_read_it_and_the_restored_model(sealed: Path, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    proto = onnx.load(sealed)  # a valid ModelProto: the digest is one more metadata entry
    assert [p.key for p in proto.metadata_props].count(_digest.KEY) == 1
    restored = tmp_path / "plain.onnx"
    assert main(["convert", str(sealed), str(restored), "-q"]) == 0
    plain = onnx.load(restored)
    assert _digest.KEY not in {p.key for p in plain.metadata_props}  # nothing stale is written
    onnx.checker.check_model(plain)
    session = ort.InferenceSession(str(restored), providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in spec.shape]
    assert session.run(None, {spec.name: np.zeros(shape, np.float32)})
    # A tool that rereads and rewrites the model unchanged keeps the digest valid.
    onnx.save(proto, tmp_path / "resaved.nnr.onnx")
    assert nnrconv.load(tmp_path / "resaved.nnr.onnx").metadata[_digest.KEY] == "verified"


def test_files_without_digest_load_unverified(sealed: Path, tmp_path: Path) -> None:
    assert nnrconv.load(sealed).metadata[_digest.KEY] == "verified"
    older = tmp_path / "older.nnr.onnx"
    older.write_bytes(_unsealed(sealed))
    model = nnrconv.load(older)
    assert model.metadata[_digest.KEY] == "unverified (no container digest)"
    reference = nnrconv.load(sealed)
    for name, tensor in model.tensors.items():
        assert tensor.numpy().tobytes() == reference.tensors[name].numpy().tobytes()


def test_size_cost_is_within_half_a_percent_plus_1_kb(sealed: Path) -> None:
    cost = len(sealed.read_bytes()) - len(_unsealed(sealed))
    assert 0 < cost <= 0.005 * len(_unsealed(sealed)) + 1024


def test_many_nodes_are_grouped_within_the_size_limit(tmp_path: Path) -> None:
    """3,000 tiny nodes: one CRC each would exceed the limit; groups of nodes keep within it."""
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(3000):
        nodes.append(helper.make_node("Add", [prev, f"b{i}"], [f"y{i}"]))
        prev = f"y{i}"
    inits = [numpy_helper.from_array(rng.standard_normal((64,)).astype(np.float32), "w")]
    nodes.append(helper.make_node("Mul", [prev, "w"], ["out"]))
    for i in range(3000):
        nodes.append(helper.make_node("Constant", [], [f"b{i}"], value_float=float(i)))
    graph = helper.make_graph(
        nodes[3000:] + nodes[:3000],
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [64])],
        inits,
    )
    source, path = tmp_path / "chain.onnx", tmp_path / "chain.nnr.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), source)
    assert main(["convert", str(source), str(path), "-q"]) == 0
    cost = len(path.read_bytes()) - len(_unsealed(path))
    assert cost <= 0.005 * len(_unsealed(path)) + 1024
    data = bytearray(path.read_bytes())
    data[data.index(b"y2500")] ^= 0x08
    path.write_bytes(data)
    with pytest.raises(BitstreamError, match=r"graph\.node\[\d+\] .*… graph\.node\[\d+\]"):
        nnrconv.load(path)


def test_external_data_is_covered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the size threshold the coded units go to `<file>.data`; that file is covered too."""
    monkeypatch.setattr(_io, "EXTERNAL_MIN_BYTES", 16)
    from nnrconv_onnx import _format

    monkeypatch.setattr(_format, "EXTERNAL_DATA_THRESHOLD", 1000)
    path = tmp_path / "m.nnr.onnx"
    assert main(["convert", str(EXAMPLE), str(path), "-q"]) == 0
    external = tmp_path / "m.nnr.onnx.data"
    assert external.exists()
    assert nnrconv.load(path).metadata[_digest.KEY] == "verified"
    data = bytearray(external.read_bytes())
    data[len(data) // 2] ^= 0x04
    external.write_bytes(data)
    with pytest.raises(BitstreamError, match=r"external data m\.nnr\.onnx\.data|integrity"):
        model = nnrconv.load(path)
        for tensor in model:
            tensor.numpy()
