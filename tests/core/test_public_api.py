# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Every public module exports exactly what it declares, under its own module name."""

import importlib

import pytest

MODULES = ["nnrconv", "nnrconv.core", "nnrconv.nnc"]


@pytest.mark.parametrize("module_name", MODULES)
def test_all_names_exist_and_are_published_under_the_package(module_name):
    module = importlib.import_module(module_name)
    for name in module.__all__:
        obj = getattr(module, name)
        owner = getattr(obj, "__module__", None)
        if isinstance(obj, type) or callable(obj):
            assert owner == module_name or not owner.startswith(module_name + "._"), f"{name} leaks {owner}"


@pytest.mark.parametrize("module_name", MODULES)
def test_no_public_name_is_left_out_of_all(module_name):
    module = importlib.import_module(module_name)
    public = {n for n in vars(module) if not n.startswith("_")}
    submodules = {n for n in public if type(getattr(module, n)).__name__ == "module"}
    assert public - submodules - {"annotations"} == set(module.__all__)
