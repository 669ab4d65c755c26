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

Loading order and clashes: the entry points of snnarena's own distribution (the built-ins) load
first, then other distributions' entry points (by name), then plugin folders. A (kind, name) belongs
to the first plugin that registers it; a later ``register`` of a taken name is refused and recorded
in :attr:`PluginHost.failures` against the plugin that made it, and that plugin's other
registrations still load. Mistakes that lose nothing at load time but make a plugin do nothing (a
misspelled hook, a ``register_*`` function without ``@snnarena.hookimpl``, a plugin that registers
nothing) are recorded in :attr:`PluginHost.warnings`.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.metadata
import importlib.util
import inspect
import os
import re
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from snnarena import hookspecs
from snnarena.registry import (
    HOOK_OF_KIND,
    KINDS,
    Entry,
    Kind,
    NameClashError,
    RegistrationError,
    Registry,
    check_registrable,
)

ENTRY_POINT_GROUP = "snnarena"
#: The distribution whose entry points (the built-in plugins) load first and so keep their names.
BUILTIN_DISTRIBUTION = "snnarena"
HOOK_NAMES: tuple[str, ...] = tuple(HOOK_OF_KIND.values())


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


@dataclass(frozen=True)
class PluginWarning:
    """A plugin that loaded but probably does not do what its author meant (e.g. a misspelled hook)."""

    plugin: str
    message: str


@dataclass
class PluginInfo:
    """A loaded plugin: where it came from and what it registered.

    ``version`` is the distribution's version for entry points; for a local plugin file it is the
    module's ``__version__`` or, without one, ``file-<digest>``. ``digest`` is the first 16 hex
    digits of the SHA-256 of a local plugin file (``None`` for entry points and objects).
    """

    name: str
    distribution: str | None
    version: str | None
    source: str
    registered: list[tuple[Kind, str]] = field(default_factory=list)
    digest: str | None = None


class PluginHost:
    """A pluggy manager plus the registry its plugins filled. Build one with :meth:`load`."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.failures: list[PluginFailure] = []
        self.warnings: list[PluginWarning] = []
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
        digest: str | None = None,
    ) -> None:
        """Register one plugin object (a module or an instance with hookimpls) and its classes.

        A failure (bad hook signature, a raising hook, a refused or clashing ``register``) is
        recorded in :attr:`failures`; every registration that was accepted stays available. Likely
        mistakes (unknown hook names, unmarked ``register_*`` functions, nothing registered) are
        recorded in :attr:`warnings`.
        """
        try:
            self.pm.register(plugin, name=name)
        except Exception as err:  # pluggy validation errors, already-registered names
            self._fail(name, err)
            return
        info = PluginInfo(name, distribution, version, source, digest=digest)
        self.plugins[name] = info
        failures_before = len(self.failures)
        implemented = self._run_register_hooks(info)
        self.warnings.extend(_hook_warnings(self.pm, plugin, name))
        if not info.registered and len(self.failures) == failures_before:
            self.warnings.append(PluginWarning(name, _nothing_registered(implemented)))

    def _run_register_hooks(self, info: PluginInfo) -> int:
        """Call each ``register_*`` hook the plugin implements; return how many it implements."""
        implemented = 0
        for kind in KINDS:
            hook = getattr(self.pm.hook, HOOK_OF_KIND[kind])
            for impl in hook.get_hookimpls():
                if impl.plugin_name == info.name:
                    implemented += 1
                    self._call_register_hook(impl, kind, info)
        return implemented

    def remove_plugin(self, name: str) -> None:
        """Unregister a plugin, every class it registered and its failures and warnings (test fixtures)."""
        self.pm.unregister(name=name)
        info = self.plugins.pop(name, None)
        if info is not None:
            for kind, entry_name in info.registered:
                self.registry.remove(kind, entry_name)
        self.failures = [f for f in self.failures if f.plugin != name]
        self.warnings = [w for w in self.warnings if w.plugin != name]

    def _call_register_hook(self, impl: pluggy.HookImpl, kind: Kind, info: PluginInfo) -> None:
        def register(cls: type, name: str | None = None) -> None:
            try:
                entry_name = check_registrable(kind, cls, name)
                self.registry.add(Entry(kind, entry_name, cls, info.name, info.distribution, info.version, info.digest))
            except (RegistrationError, NameClashError) as err:
                # refused, not raised: the hook goes on registering its other classes
                self._refuse(info.name, err)
                return
            info.registered.append((kind, entry_name))

        kwargs = {"register": register} if "register" in impl.argnames else {}
        try:
            impl.function(**kwargs)
        except Exception as err:
            self._fail(info.name, err)

    def _fail(self, plugin: str, err: BaseException) -> None:
        detail = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        self.failures.append(PluginFailure(plugin, f"{type(err).__name__}: {err}", detail))

    def _refuse(self, plugin: str, err: Exception) -> None:
        """Record a refused ``register`` call, with the plugin's line that made it as the detail."""
        caller = traceback.extract_stack()[:-2][-1:]  # the frame that called register()
        detail = "".join(traceback.format_list(caller)) + f"{type(err).__name__}: {err}\n"
        self.failures.append(PluginFailure(plugin, f"{type(err).__name__}: {err}", detail))

    def _load_entry_points(self) -> None:
        only, disabled = self.config.load_only, set(self.config.disabled)
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=_load_order):
            dist = ep.dist.name if ep.dist is not None else None
            version = ep.dist.version if ep.dist is not None else None
            names = {ep.name, dist}
            if names & disabled or (only is not None and not names & set(only)):
                continue
            if ep.name in self.plugins:
                self._entry_point_name_taken(ep.name, dist)
                continue
            try:
                module = ep.load()
            except Exception as err:
                self._fail(ep.name, err)
                continue
            self.add_plugin(module, ep.name, dist, version, source=f"entry point {ep.value}")

    def _entry_point_name_taken(self, name: str, dist: str | None) -> None:
        """A second entry point with a loaded plugin's name: refused unless it is the same distribution."""
        holder = self.plugins[name].distribution
        if dist is not None and holder is not None and _normalize(dist) == _normalize(holder):
            return  # the same distribution found twice on sys.path
        self.failures.append(
            PluginFailure(
                f"{dist}:{name}",
                f"entry point {name!r} of distribution {dist} not loaded: plugin name {name!r} is already "
                f"taken by distribution {holder}; rename the entry point in [project.entry-points.snnarena]",
            )
        )

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
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            version = getattr(module, "__version__", None)
            if not isinstance(version, str) or not version:
                version = f"file-{digest}"
            self.add_plugin(module, name, "local", version, source=str(path), digest=digest)

    # -- typed access ------------------------------------------------------------------------
    def get(self, kind: Kind, name: str) -> Entry:
        """The entry for ``name`` of ``kind``; ``UnknownPluginError`` lists what is available."""
        return self.registry.get(kind, name)

    def names(self, kind: Kind) -> list[str]:
        return self.registry.names(kind)

    def entries(self, kind: Kind | None = None) -> list[Entry]:
        return list(self.registry.entries(kind))


def _normalize(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _load_order(ep: importlib.metadata.EntryPoint) -> tuple[bool, str, str]:
    """Built-ins first (so they keep their names), then by entry-point and distribution name."""
    dist = _normalize(ep.dist.name) if ep.dist is not None else ""
    return (dist != BUILTIN_DISTRIBUTION, ep.name, dist)


def _hook_warnings(pm: pluggy.PluginManager, plugin: Any, name: str) -> list[PluginWarning]:
    """Warnings for hooks a plugin meant to implement but that pluggy will never call."""
    warnings = [PluginWarning(name, message) for message in _unknown_hooks(pm, plugin)]
    warnings += [PluginWarning(name, message) for message in _unmarked_functions(pm, plugin)]
    return warnings


def _unknown_hooks(pm: pluggy.PluginManager, plugin: Any) -> list[str]:
    """``@hookimpl`` functions whose name is no snnarena hook (what ``pm.check_pending`` rejects)."""
    messages = []
    for caller in pm.get_hookcallers(plugin) or []:
        if caller.has_spec():
            continue
        impls = [i for i in caller.get_hookimpls() if i.plugin is plugin and not i.optionalhook]
        if impls:
            messages.append(f"{caller.name} is not a snnarena hook, so it is never called{_did_you_mean(caller.name)}")
    return messages


def _unmarked_functions(pm: pluggy.PluginManager, plugin: Any) -> list[str]:
    """``register_*`` functions of the plugin itself that lack ``@snnarena.hookimpl``."""
    messages = []
    for attr in sorted(dir(plugin)):
        if not attr.startswith("register_") or pm.parse_hookimpl_opts(plugin, attr) is not None:
            continue
        function = getattr(plugin, attr)
        if not inspect.isroutine(function) or not _defined_by(function, plugin):
            continue
        hint = "" if attr in HOOK_NAMES else _did_you_mean(attr)
        messages.append(
            f"{attr} is not marked @snnarena.hookimpl, so it is never called: did you forget @snnarena.hookimpl?{hint}"
        )
    return messages


def _defined_by(function: Any, plugin: Any) -> bool:
    """Whether ``function`` belongs to ``plugin`` (not a name a module imported from elsewhere)."""
    if isinstance(plugin, ModuleType):
        return getattr(function, "__module__", None) == plugin.__name__
    return True


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, HOOK_NAMES, n=1)
    hooks = ", ".join(HOOK_NAMES)
    return f" (did you mean {close[0]}?)" if close else f" (the hooks are: {hooks})"


def _nothing_registered(implemented: int) -> str:
    if implemented:
        return "registered nothing: its hooks ran but never called register(cls)"
    return (
        "registered nothing: it implements none of the snnarena hooks "
        f"({', '.join(HOOK_NAMES)}; see snnarena.hookspecs)"
    )


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
