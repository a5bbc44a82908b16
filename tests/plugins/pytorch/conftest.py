# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Fixtures of the PyTorch plugin tests: every test here needs torch."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
