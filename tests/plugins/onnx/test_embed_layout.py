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
    # Byte for byte, payloads in the fields they came in (typed float_data stays float_data).
    assert restored.SerializeToString() == original.SerializeToString()


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attribute.g)
            for sub in attribute.graphs:
                yield from _all_nodes(sub)


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
    assert restored.SerializeToString() == original.SerializeToString()


def test_files_of_the_first_layout_still_load(tmp_path):
    from nnrconv_onnx import _embed_v1

    original = onnx.load(EXAMPLE)
    ndus, arrays = _fake_ndus(original)
    old = _embed_v1.embed(original, b"\x01", ndus)
    assert any(op.domain == _embed.DOMAIN and op.version == 1 for op in old.opset_import)
    assert _embed.is_embedded(old) and _embed.extract(old, "old.nnr.onnx").ndus == ndus
    restored = _embed.restore(old, arrays.get, "old.nnr.onnx")
    assert [t.name for t in restored.graph.initializer] == [t.name for t in original.graph.initializer]


def test_each_coded_weight_costs_one_node_and_no_repeated_name(tmp_path):
    path, _ = _models.constants_model(tmp_path / "m.onnx")
    original = onnx.load(path)
    ndus, _ = _fake_ndus(original)
    embedded = _embed.embed(original, b"", ndus)
    assert len(list(_all_nodes(embedded.graph))) == len(list(_all_nodes(original.graph)))
    # Beyond the units themselves and the parameter-set metadata: at most ~64 bytes per weight.
    extra = embedded.ByteSize() - original.ByteSize()
    payloads = sum(len(u) for u in ndus.values()) - sum(
        len(s.proto.raw_data) + 4 * len(s.proto.float_data) for s in weight_sites(original) if s.key in ndus
    )
    assert extra - payloads <= 64 * len(ndus) + 64
