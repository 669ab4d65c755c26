"""Loading plugins: entry points, a local plugins folder, and in-process objects (tests).

:class:`PluginHost` owns the pluggy ``PluginManager`` and the :class:`~snnarena.registry.Registry`
built from it; the rest of snnarena asks the host, never ``pm.hook`` directly.

Environment variables (read by :meth:`HostConfig.from_env`):

``SNNARENA_LOAD_PLUGINS``
    Comma-separated entry-point or distribution names: load only those. Set but empty: load no
    entry point at all (not even the built-ins, which are entry points too).
``SNNARENA_DISABLE_PLUGINS``
    Comma-separated entry-point or distribution names never to load.
``SNNARENA_PLUGINS_DIR``
    A folder of ``*.py`` plugin files (same as ``--plugins-dir``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from snnarena import hookspecs
from snnarena.registry import HOOK_OF_KIND, KINDS, Entry, Kind, Registry, check_registrable

ENTRY_POINT_GROUP = "snnarena"


@dataclass(frozen=True)
class HostConfig:
    """How to build a :class:`PluginHost`; picklable, so worker processes rebuild the same host."""

    plugins_dirs: tuple[str, ...] = ()
    load_only: tuple[str, ...] | None = None
    disabled: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, plugins_dirs: tuple[str, ...] = ()) -> HostConfig:
        only = os.environ.get("SNNARENA_LOAD_PLUGINS")
        disabled = os.environ.get("SNNARENA_DISABLE_PLUGINS", "")
        dirs = tuple(plugins_dirs)
        if os.environ.get("SNNARENA_PLUGINS_DIR"):
            dirs += (os.environ["SNNARENA_PLUGINS_DIR"],)
        return cls(
            plugins_dirs=dirs,
            load_only=None if only is None else _split(only),
            disabled=_split(disabled),
        )


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be imported, or whose registration raised or clashed."""

    plugin: str
    error: str
    detail: str = ""


@dataclass
class PluginInfo:
    """A loaded plugin: where it came from and what it registered."""

    name: str
    distribution: str | None
    version: str | None
    source: str
    registered: list[tuple[Kind, str]] = field(default_factory=list)


class PluginHost:
    """A pluggy manager plus the registry its plugins filled. Build one with :meth:`load`."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.failures: list[PluginFailure] = []
        self.plugins: dict[str, PluginInfo] = {}
        self.config = HostConfig()

    # -- building -------------------------------------------------------------------------
    @classmethod
    def load(cls, config: HostConfig | None = None) -> PluginHost:
        """Load entry points (minus the disabled ones) and the local plugin folders."""
        host = cls()
        host.config = config or HostConfig.from_env()
        host._load_entry_points()
        for folder in host.config.plugins_dirs:
            host._load_plugins_dir(Path(folder))
        return host

    def add_plugin(
        self,
        plugin: Any,
        name: str,
        distribution: str | None = None,
        version: str | None = None,
        source: str = "object",
    ) -> None:
        """Register one plugin object (a module or an instance with hookimpls) and its classes.

        A failure (bad hook signature, a raising hook, a duplicate name) is recorded in
        :attr:`failures` and the classes the plugin registered before it stay available.
        """
        try:
            self.pm.register(plugin, name=name)
        except Exception as err:  # pluggy validation errors, already-registered names
            self._fail(name, err)
            return
        info = PluginInfo(name, distribution, version, source)
        self.plugins[name] = info
        for kind in KINDS:
            hook = getattr(self.pm.hook, HOOK_OF_KIND[kind])
            for impl in hook.get_hookimpls():
                if impl.plugin_name == name:
                    self._call_register_hook(impl, kind, info)

    def remove_plugin(self, name: str) -> None:
        """Unregister a plugin and every class it registered (used by test fixtures)."""
        self.pm.unregister(name=name)
        info = self.plugins.pop(name, None)
        if info is not None:
            for kind, entry_name in info.registered:
                self.registry.remove(kind, entry_name)

    def _call_register_hook(self, impl: pluggy.HookImpl, kind: Kind, info: PluginInfo) -> None:
        def register(cls: type, name: str | None = None) -> None:
            entry_name = check_registrable(kind, cls, name)
            self.registry.add(
                Entry(kind, entry_name, cls, info.name, info.distribution, info.version)
            )
            info.registered.append((kind, entry_name))

        kwargs = {"register": register} if "register" in impl.argnames else {}
        try:
            impl.function(**kwargs)
        except Exception as err:
            self._fail(info.name, err)

    def _fail(self, plugin: str, err: BaseException) -> None:
        detail = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        self.failures.append(PluginFailure(plugin, f"{type(err).__name__}: {err}", detail))

    def _load_entry_points(self) -> None:
        only, disabled = self.config.load_only, set(self.config.disabled)
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist is not None else None
            version = ep.dist.version if ep.dist is not None else None
            names = {ep.name, dist}
            if names & disabled or (only is not None and not names & set(only)):
                continue
            if ep.name in self.plugins:
                continue  # the same distribution can be found twice on sys.path
            try:
                module = ep.load()
            except Exception as err:
                self._fail(ep.name, err)
                continue
            self.add_plugin(module, ep.name, dist, version, source=f"entry point {ep.value}")

    def _load_plugins_dir(self, folder: Path) -> None:
        if not folder.is_dir():
            self.failures.append(PluginFailure(str(folder), "plugins folder does not exist"))
            return
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_"):
                continue
            name = f"local:{path.stem}"
            try:
                module = _import_file(path)
            except Exception as err:
                self._fail(name, err)
                continue
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
            self.add_plugin(module, name, "local", f"file-{digest}", source=str(path))

    # -- typed access ------------------------------------------------------------------------
    def get(self, kind: Kind, name: str) -> Entry:
        """The entry for ``name`` of ``kind``; ``UnknownPluginError`` lists what is available."""
        return self.registry.get(kind, name)

    def names(self, kind: Kind) -> list[str]:
        return self.registry.names(kind)

    def entries(self, kind: Kind | None = None) -> list[Entry]:
        return list(self.registry.entries(kind))



def _import_file(path: Path) -> ModuleType:
    module_name = f"snnarena_local_plugins.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module
