# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""The weights of any model, or of a bitstream without topology, can be written as a state dict."""

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

import nnrconv
from nnrconv import nnc

EXAMPLE = Path(__file__).parents[3] / "examples" / "tiny_cnn.onnx"
LOSSLESS = nnc.CodingOptions(lossless=True)


def test_onnx_weights_as_state_dict_and_safetensors(tmp_path):
    expected = {t.name: numpy_helper.to_array(t) for t in onnx.load(EXAMPLE).graph.initializer}
    nnrconv.convert(EXAMPLE, tmp_path / "w.pt", options=LOSSLESS)
    state = torch.load(tmp_path / "w.pt", weights_only=True)
    assert list(state) == list(expected)
    for name, array in expected.items():
        assert np.array_equal(state[name].numpy(), array) and state[name].numpy().dtype == array.dtype
    nnrconv.convert(EXAMPLE, tmp_path / "w.safetensors", options=LOSSLESS)
    back = nnrconv.load(tmp_path / "w.safetensors")
    assert all(np.array_equal(back.tensors[n].numpy(), a) for n, a in expected.items())
