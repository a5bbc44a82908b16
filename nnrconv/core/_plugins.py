# Copyright nnrconv contributors
# SPDX-License-Identifier: Apache-2.0
"""Plugin discovery and the format registry.

Plugins come only through the ``nnrconv`` entry-point group; the built-in formats are
entry points of the ``nnrconv`` distribution itself, so they travel the same road as a third
party's. Loading happens once, lazily, on first use.

Environment:
    NNRCONV_LOAD_PLUGINS: when set, only third-party plugins whose distribution names it lists
        (comma-separated) are loaded; set but empty loads none. Built-in formats always load.
    NNRCONV_TRACE_PLUGINS: when set (non-empty), every hook call, its arguments and results are
        logged to stderr.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pluggy

from nnrconv.core import hookspecs
from nnrconv.core._errors import FormatError, PluginError
from nnrconv.core._format import FormatPlugin

__all__ = ["ENTRY_POINT_GROUP", "FormatRegistry", "PluginLoadFailure", "get_plugin_manager", "get_registry"]

ENTRY_POINT_GROUP = "nnrconv"
_BUILTIN_DISTRIBUTION = "nnrconv"
_HEAD_BYTES = 64

_lock = threading.Lock()
_manager: pluggy.PluginManager | None = None
_registry: FormatRegistry | None = None
# plugin name -> (distribution, version), filled while entry points load
_distributions: dict[str, tuple[str, str]] = {}


@dataclass(frozen=True, slots=True)
class PluginLoadFailure:
    """A third-party entry point that failed to import; reported by `nnrconv formats`."""

    entry_point: str
    distribution: str
    error: str


def _allowed_distributions() -> set[str] | None:
    value = os.environ.get("NNRCONV_LOAD_PLUGINS")
    if value is None:
        return None
    return {name.strip().lower() for name in value.split(",") if name.strip()}


def _load_entry_points(pm: pluggy.PluginManager) -> list[PluginLoadFailure]:
    allowed = _allowed_distributions()
    failures: list[PluginLoadFailure] = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else ""
        builtin = dist.lower() == _BUILTIN_DISTRIBUTION
        if not builtin and allowed is not None and dist.lower() not in allowed:
            continue
        if pm.has_plugin(ep.name) or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            if builtin:
                raise PluginError(f"built-in plugin {ep.name!r} ({ep.value}) failed to import: {exc}") from exc
            failures.append(PluginLoadFailure(ep.name, dist, f"{type(exc).__name__}: {exc}"))
            continue
        pm.register(plugin, name=ep.name)
        _distributions[ep.name] = (dist, ep.dist.version if ep.dist is not None else "")
    return failures


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with entry points loaded and hooks validated."""
    global _manager
    with _lock:
        if _manager is None:
            pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
            pm.add_hookspecs(hookspecs)
            failures = _load_entry_points(pm)
            try:
                pm.check_pending()
            except pluggy.PluginValidationError as exc:
                raise PluginError(f"plugin {exc.plugin!r} implements an unknown hook: {exc}") from exc
            if os.environ.get("NNRCONV_TRACE_PLUGINS"):
                pm.trace.root.setwriter(lambda message: sys.stderr.write(message))
                pm.enable_tracing()
            pm.load_failures = failures  # type: ignore[attr-defined]
            _manager = pm
        return _manager


def get_registry() -> FormatRegistry:
    """The process-wide registry of formats, collected from every plugin on first use."""
    global _registry
    if _registry is None:
        pm = get_plugin_manager()
        registry = FormatRegistry()
        for impl in pm.hook.register_formats.get_hookimpls():
            plugin_name = pm.get_name(impl.plugin) or "?"
            _, version = _distributions.get(plugin_name, ("", ""))

            def register(fmt: FormatPlugin, _plugin: str = plugin_name, _version: str = version) -> None:
                registry.add(fmt, plugin=_plugin, version=_version)

            impl.function(register=register)
        registry.load_failures = list(getattr(pm, "load_failures", []))
        _registry = registry
    return _registry


def reset() -> None:
    """Forget loaded plugins (tests use this after changing the environment)."""
    global _manager, _registry
    with _lock:
        _manager = None
        _registry = None
        _distributions.clear()


class FormatRegistry:
    """Formats by name, in registration order, with detection by name and content."""

    def __init__(self) -> None:
        self._formats: dict[str, FormatPlugin] = {}
        self._plugins: dict[str, str] = {}
        self.load_failures: list[PluginLoadFailure] = []

    def add(self, fmt: FormatPlugin, *, plugin: str = "", version: str = "") -> None:
        """Register a format instance; contract violations raise PluginError naming the plugin."""
        if not isinstance(fmt, FormatPlugin):
            raise PluginError(
                f"plugin {plugin!r}: register_formats must register FormatPlugin instances, got {type(fmt).__name__}"
            )
        name = getattr(fmt, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r}: format {type(fmt).__name__} has no name")
        if name in self._formats:
            raise PluginError(
                f"plugin {plugin!r}: format name {name!r} is already registered by plugin {self._plugins[name]!r}"
            )
        code = fmt.topology_code
        if code is not None:
            for other in self._formats.values():
                if other.topology_code == code:
                    raise PluginError(
                        f"plugin {plugin!r}: format {name!r} claims NNR topology code {code}, "
                        f"already owned by format {other.name!r}"
                    )
        fmt._version = version  # type: ignore[attr-defined]
        self._formats[name] = fmt
        self._plugins[name] = plugin

    def remove(self, name: str) -> None:
        """Forget a format (the test kit's `registered` undoes its registration with this)."""
        self._formats.pop(name, None)
        self._plugins.pop(name, None)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._formats.values())

    def __len__(self) -> int:
        return len(self._formats)

    def names(self) -> list[str]:
        return list(self._formats)

    def plugin_of(self, name: str) -> str:
        return self._plugins[name]

    def get(self, name: str) -> FormatPlugin:
        """The format called `name`; FormatError lists the known names otherwise."""
        try:
            return self._formats[name.lower()]
        except KeyError:
            raise FormatError(f"unknown format {name!r}; known formats: {', '.join(self._formats)}") from None

    def for_topology(self, code: int) -> FormatPlugin | None:
        """The format owning an NNR topology_storage_format code, if any plugin claims it."""
        return next((f for f in self._formats.values() if f.topology_code == code), None)

    def for_input(self, path: Path, candidates: Iterable[FormatPlugin] | None = None) -> FormatPlugin:
        """Detect the format of an existing input: content first, then the file name.

        Raises:
            FormatError: no format recognises the input, or several recognise it by name only.
        """
        formats = list(self._formats.values() if candidates is None else candidates)
        head = b""
        if path.is_file():
            with open(path, "rb") as f:
                head = f.read(_HEAD_BYTES)
        for fmt in formats:
            if fmt.sniff(path, head):
                return fmt
        by_name = [f for f in formats if f.matches_name(path)]
        if len(by_name) == 1:
            return by_name[0]
        if len(by_name) > 1:
            names = ", ".join(f.name for f in by_name)
            raise FormatError(f"{path}: ambiguous format (could be {names}); choose one with --from")
        raise FormatError(f"{path}: unknown format; use --from with one of: {', '.join(self._formats)}")

    def for_output(self, path: Path) -> FormatPlugin:
        """The format an output path asks for, by name; the longest matching pattern wins.

        Embedded patterns (``*.nnr.onnx``) count too: `FormatPlugin.matches_embedded` then tells
        the caller to write the container with NNR-coded tensors.
        """
        best: list[tuple[int, FormatPlugin]] = []
        for fmt in self._formats.values():
            patterns = (*fmt.patterns, *fmt.embedded_patterns)
            lengths = [len(p) for p in patterns if fnmatch.fnmatchcase(path.name.lower(), p.lower())]
            if lengths:
                best.append((max(lengths), fmt))
        if not best:
            raise FormatError(f"{path}: cannot tell the output format from the name; use --to")
        best.sort(key=lambda pair: -pair[0])
        if len(best) > 1 and best[0][0] == best[1][0]:
            names = ", ".join(f.name for _, f in best if _ == best[0][0])
            raise FormatError(f"{path}: ambiguous output format (could be {names}); choose one with --to")
        return best[0][1]
