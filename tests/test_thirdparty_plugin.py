# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""A third-party plugin, installed with pip, is found through the entry-point group and converts."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PLUGIN = Path(__file__).parent / "thirdparty" / "nnrconv-npz"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(PLUGIN)],
        check=True,
    )  # fmt: skip
    return target


def nnrconv(site, *args, load=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    env.pop("NNRCONV_LOAD_PLUGINS", None)
    if load is not None:
        env["NNRCONV_LOAD_PLUGINS"] = load
    return subprocess.run([sys.executable, "-m", "nnrconv", *map(str, args)], capture_output=True, text=True, env=env)


def test_plugin_is_listed_with_its_distribution_version(site):
    out = nnrconv(site, "formats").stdout
    row = next(line for line in out.splitlines() if line.startswith("npz"))
    assert "0.2.0" in row and "available" in row
    assert "onnx" in out


def test_environment_variable_disables_third_party_autoload(site):
    out = nnrconv(site, "formats", load="").stdout
    assert not any(line.startswith("npz") for line in out.splitlines())
    assert any(line.startswith("onnx") for line in out.splitlines())
    assert any(line.startswith("npz") for line in nnrconv(site, "formats", load="nnrconv-npz").stdout.splitlines())


def test_convert_through_the_plugin_and_nnr(site, tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"layer1.weight": rng.standard_normal((8, 4)).astype(np.float32), "layer1.bias": np.zeros(8, np.float32)}
    np.savez(tmp_path / "w.npz", **arrays)
    first = nnrconv(site, tmp_path / "w.npz", tmp_path / "w.nnr", "--lossless")
    assert first.returncode == 0, first.stderr
    second = nnrconv(site, tmp_path / "w.nnr", tmp_path / "back.npz")
    assert second.returncode == 0, second.stderr
    with np.load(tmp_path / "back.npz") as back:
        assert sorted(back.files) == sorted(arrays)
        for name, array in arrays.items():
            assert back[name].tobytes() == array.tobytes() and back[name].shape == array.shape
