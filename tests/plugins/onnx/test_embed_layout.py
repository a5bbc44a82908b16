# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The `.nnr.onnx` graph rewrite on its own: valid ONNX, and undone byte for byte."""

from pathlib import Path

import numpy as np
import onnx
import pytest

from nnrconv.core import DType
from nnrconv_onnx import _embed
from nnrconv_onnx._weights import payload_array, weight_sites
from tests.plugins.onnx import _models

EXAMPLE = Path(__file__).parents[3] / "examples" / "tiny_cnn.onnx"
BUILDERS = {
    "example": lambda d: (EXAMPLE, {}),
    "constants": _models.constants_model,
    "if": _models.if_model,
    "loop": _models.loop_model,
    "mixed-raw": lambda d: _models.mixed_model(d, raw=True),
}


def _fake_ndus(proto: onnx.ModelProto) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """Stand-in unit bytes (the rewrite does not look inside them) and the original arrays."""
    ndus, arrays = {}, {}
    for index, site in enumerate(weight_sites(proto)):
        if site.proto.data_type == onnx.TensorProto.FLOAT:
            ndus[site.key] = bytes([index % 256]) * (3 + index)
            arrays[site.key] = payload_array(site.proto, DType.FLOAT, site.key)
    return ndus, arrays


@pytest.mark.parametrize("builder", BUILDERS.values(), ids=BUILDERS.keys())
def test_embed_is_valid_onnx_and_restores_exactly(builder, tmp_path):
    path, _ = builder(tmp_path / "m.onnx")
    original = onnx.load(path)
    ndus, arrays = _fake_ndus(original)
    assert ndus, "the model should have float weights"
    embedded = _embed.embed(original, b"\x00\x04\x02\x01", ndus)
    onnx.checker.check_model(embedded, full_check=True)
    assert _embed.is_embedded(embedded) and not _embed.is_embedded(original)
    extracted = _embed.extract(embedded, "m.nnr.onnx")
    assert extracted.parameter_sets == b"\x00\x04\x02\x01" and extracted.ndus == ndus
    decode_nodes = [n for n in _all_nodes(embedded.graph) if n.op_type == _embed.OP_TYPE]
    assert len(decode_nodes) == len(ndus) and all(n.domain == _embed.DOMAIN for n in decode_nodes)
    restored = _embed.restore(embedded, arrays.get, "m.nnr.onnx")
    assert restored.SerializeToString() == _with_raw_payloads(original).SerializeToString()


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attribute.g)
            for sub in attribute.graphs:
                yield from _all_nodes(sub)


def _with_raw_payloads(proto: onnx.ModelProto) -> onnx.ModelProto:
    """What a restore gives: the same model with float weights held as raw_data."""
    from nnrconv_onnx._weights import set_payload

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for site in weight_sites(out):
        if site.proto.data_type == onnx.TensorProto.FLOAT:
            set_payload(site.proto, payload_array(site.proto, DType.FLOAT, site.key), site.key)
    return out


def test_initializers_listed_as_graph_inputs_come_back_in_place(tmp_path):
    original = onnx.load(EXAMPLE)
    for tensor in list(original.graph.initializer)[::3]:
        original.graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims))
    ndus, arrays = _fake_ndus(original)
    embedded = _embed.embed(original, b"", ndus)
    onnx.checker.check_model(embedded, full_check=True)
    coded_inputs = {v.name for v in original.graph.input} & set(ndus)
    assert coded_inputs and not coded_inputs & {v.name for v in embedded.graph.input}
    restored = _embed.restore(embedded, arrays.get, "x")
    assert restored.SerializeToString() == _with_raw_payloads(original).SerializeToString()
