# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""`nnrconv run` and `nnrconv.session` on PyTorch programs and TorchScript from `.nnr` and embedded files."""

from pathlib import Path

import numpy as np
import pytest
import torch

import nnrconv
from nnrconv.core import UnsupportedError
from tests._run_kit import assert_runs_like_plain, compressed, plain_outputs
from tests.plugins.pytorch import _models

SUFFIX = {"pt2": "m.nnr.pt2", "script": "m.nnr.pt"}


@pytest.mark.parametrize("container", ["pt2", "script"])
def test_run_from_nnr_and_embedded_matches_the_plain_model(tmp_path: Path, container: str) -> None:
    source, _, _ = _models.save("cnn", container, tmp_path)
    assert_runs_like_plain(source, tmp_path, SUFFIX[container])


@pytest.mark.parametrize("container", ["pt2", "script"])
def test_session_is_the_torch_object(tmp_path: Path, container: str) -> None:
    source, _, _ = _models.save("cnn", container, tmp_path)
    feed, expected = plain_outputs(source, tmp_path / "x.npz")
    (x,) = (torch.from_numpy(v) for v in feed.values())
    for path in compressed(source, tmp_path, SUFFIX[container]):
        runtime = nnrconv.session(path)
        with torch.no_grad():
            if container == "pt2":
                assert isinstance(runtime, torch.export.ExportedProgram)
                got = runtime.module()(x)
            else:
                assert isinstance(runtime, torch.jit.ScriptModule)
                got = runtime(x)
        np.testing.assert_allclose(got.numpy(), next(iter(expected.values())), rtol=1e-5, atol=1e-5)


def test_a_state_dict_has_nothing_to_run(tmp_path: Path) -> None:
    source, _, _ = _models.save("cnn", "state_dict", tmp_path)
    with pytest.raises(UnsupportedError):
        nnrconv.session(source)
