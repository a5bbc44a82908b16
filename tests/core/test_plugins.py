# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
import inspect
from pathlib import Path

import pytest

from nnrconv.core import FormatError, FormatPlugin, FrameworkMissingError, PluginError, get_registry, hookspecs
from nnrconv.core._plugins import FormatRegistry


class _Fmt(FormatPlugin):
    name = "fake"
    patterns = ("*.fake",)
    topology_code = 2


class _Other(FormatPlugin):
    name = "other"
    patterns = ("*.fake", "*.other")


def test_builtin_formats_arrive_through_entry_points():
    registry = get_registry()
    assert "onnx" in registry.names()
    assert registry.plugin_of("onnx") == "onnx"  # the entry-point name, as for a third party
    assert registry.for_topology(2).name == "onnx"


def test_duplicate_format_name_names_both_plugins():
    registry = FormatRegistry()
    registry.add(_Fmt(), plugin="first")
    with pytest.raises(PluginError, match=r"'second'.*'fake'.*'first'"):
        registry.add(_Fmt(), plugin="second")


def test_topology_code_has_one_owner():
    class Clash(FormatPlugin):
        name = "clash"
        topology_code = 2

    registry = FormatRegistry()
    registry.add(_Fmt(), plugin="a")
    with pytest.raises(PluginError, match="topology code 2"):
        registry.add(Clash(), plugin="b")


def test_registering_a_non_format_is_a_contract_error():
    with pytest.raises(PluginError, match="FormatPlugin instances"):
        FormatRegistry().add(object(), plugin="bad")  # type: ignore[arg-type]


def test_detection_by_name_reports_ambiguity(tmp_path: Path):
    registry = FormatRegistry()
    registry.add(_Fmt(), plugin="a")
    registry.add(_Other(), plugin="b")
    (tmp_path / "m.other").write_bytes(b"x")
    assert registry.for_input(tmp_path / "m.other").name == "other"
    (tmp_path / "m.fake").write_bytes(b"x")
    # Both claim *.fake by name and neither recognises the content: first sniffer wins.
    assert registry.for_input(tmp_path / "m.fake").name == "fake"
    with pytest.raises(FormatError, match="unknown format"):
        (tmp_path / "m.zzz").write_bytes(b"x")
        registry.for_input(tmp_path / "m.zzz")
    with pytest.raises(FormatError, match="ambiguous output format"):
        registry.for_output(tmp_path / "new.fake")


def test_missing_framework_names_the_install_command():
    class Needs(FormatPlugin):
        name = "needs"
        requires = ("surely_not_an_installed_module_xyz",)
        install = "pip install 'nnrconv[needs]'"

    fmt = Needs()
    assert not fmt.available
    with pytest.raises(FrameworkMissingError, match=r"surely_not_an_installed_module_xyz.*pip install"):
        fmt.ensure_available()


HOOKS = [name for name, obj in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(obj, "nnrconv_spec")]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook):
    func = getattr(hookspecs, hook)
    assert func.__doc__ and len(func.__doc__.strip()) > 40
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    signature = f"{hook}{inspect.signature(func)}".replace("'", "")
    assert f"`{hook}(" in readme, f"README lacks a section for hook {hook}"
    assert signature.split(" ->")[0] in readme.replace("'", ""), f"README lacks the signature {signature}"
