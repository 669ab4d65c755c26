"""What the loaded plugins registered: one :class:`Entry` per (kind, name).

A :class:`Registry` is built by :class:`snnarena.host.PluginHost` and owned by it; there is no
module-level registry, so two hosts (e.g. one per test) never see each other's plugins.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from snnarena.errors import SnnarenaError

Kind = Literal["neuron", "surrogate", "model", "dataset", "method", "metric", "executor"]
KINDS: tuple[Kind, ...] = ("neuron", "surrogate", "model", "dataset", "method", "metric", "executor")

#: The hook that registers each kind.
HOOK_OF_KIND: dict[Kind, str] = {
    "neuron": "register_neurons",
    "surrogate": "register_surrogates",
    "model": "register_models",
    "dataset": "register_datasets",
    "method": "register_gradient_methods",
    "metric": "register_metrics",
    "executor": "register_executors",
}


class Register(Protocol):
    """The callback a ``register_*`` hook receives: ``register(cls)`` or ``register(cls, name=)``.

    ``cls`` is a class deriving from the hook's base class; it is registered under ``name`` or
    ``cls.name``. A refused call (wrong base, no name, a name another plugin holds) is recorded as a
    failure of the calling plugin and returns normally, so the hook's other registrations go on.
    """

    def __call__(self, cls: type, name: str | None = None) -> None: ...


class UnknownPluginError(SnnarenaError, LookupError):
    """A name that no loaded plugin registered for that kind."""


class RegistrationError(SnnarenaError, TypeError):
    """A ``register(cls, name=)`` call the registry refuses (wrong base class, no name)."""


class NameClashError(SnnarenaError, ValueError):
    """A ``register`` call for a (kind, name) another plugin already holds; the first holder keeps it."""

    def __init__(self, attempted: Entry, holder: Entry) -> None:
        self.attempted = attempted
        self.holder = holder
        owner = f"plugin {holder.plugin!r}"
        if holder.distribution:
            owner += f" of distribution {holder.distribution} {holder.version or ''}".rstrip()
        super().__init__(
            f"duplicate {attempted.kind} name {attempted.name!r}: already registered by {owner}; "
            f"{attempted.obj.__qualname__} was not registered (give it another name: "
            f"register(cls, name=...))"
        )


@dataclass(frozen=True)
class Entry:
    """One registered class and where it came from (recorded in every result row)."""

    kind: Kind
    name: str
    obj: type
    plugin: str
    distribution: str | None = None
    version: str | None = None
    #: Content hash of the plugin's source file (local plugin files only), for provenance.
    digest: str | None = None

    @property
    def summary(self) -> str:
        doc = (self.obj.__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""


@dataclass
class Registry:
    """Entries by kind and name; duplicate names are refused, the first registration wins."""

    _entries: dict[tuple[str, str], Entry] = field(default_factory=dict)

    def add(self, entry: Entry) -> None:
        """Add ``entry``; :class:`NameClashError` if its (kind, name) is taken (the holder stays)."""
        key = (entry.kind, entry.name)
        if key in self._entries:
            raise NameClashError(entry, self._entries[key])
        self._entries[key] = entry

    def remove(self, kind: Kind, name: str) -> None:
        self._entries.pop((kind, name), None)

    def get(self, kind: Kind, name: str) -> Entry:
        try:
            return self._entries[(kind, name)]
        except KeyError:
            allowed = ", ".join(self.names(kind)) or "(none loaded)"
            raise UnknownPluginError(f"unknown {kind} {name!r}; available: {allowed}") from None

    def names(self, kind: Kind) -> list[str]:
        return sorted(name for (k, name) in self._entries if k == kind)

    def entries(self, kind: Kind | None = None) -> Iterator[Entry]:
        for (k, _), entry in sorted(self._entries.items()):
            if kind is None or k == kind:
                yield entry

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._entries


def check_registrable(kind: Kind, cls: Any, name: str | None) -> str:
    """Validate what a plugin passes to ``register`` and return the name to register it under."""
    from snnarena.data import Dataset
    from snnarena.executor import Executor
    from snnarena.method import GradientMethod
    from snnarena.metric import Metric
    from snnarena.model import SpikingModel
    from snnarena.neuron import Neuron, Surrogate

    bases: dict[str, type] = {
        "neuron": Neuron,
        "surrogate": Surrogate,
        "model": SpikingModel,
        "dataset": Dataset,
        "method": GradientMethod,
        "metric": Metric,
        "executor": Executor,
    }
    base = bases[kind]
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise RegistrationError(
            f"{kind} plugins must register subclasses of {base.__qualname__} (from {base.__module__}), got {cls!r}"
        )
    resolved = name if name is not None else getattr(cls, "name", None)
    if not isinstance(resolved, str) or not resolved:
        raise RegistrationError(f"{cls.__qualname__} has no 'name' class attribute and no name= was given")
    return resolved
