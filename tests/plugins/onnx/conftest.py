# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Fixtures of the ONNX plugin tests: every test here needs onnx and onnxruntime."""

from __future__ import annotations

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
