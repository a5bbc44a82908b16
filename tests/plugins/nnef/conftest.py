# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Fixtures of the NNEF plugin tests: every test here needs the nnef parser."""

from __future__ import annotations

import pytest

pytest.importorskip("nnef")
