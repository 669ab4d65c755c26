"""snnarena: side-by-side benchmarks of training methods for spiking and recurrent networks.

``import snnarena`` stays light (no torch import) so plugins can import ``snnarena.hookimpl``
cheaply; the Python API (``snnarena.run``, ``snnarena.load``, ``snnarena.make_report``) is
loaded on first use.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from snnarena.hookspecs import hookimpl

try:
    __version__ = version("snnarena")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

_API = ("run", "load", "make_report")

__all__ = ["__version__", "hookimpl", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from snnarena import api

        return getattr(api, name)
    raise AttributeError(f"module 'snnarena' has no attribute {name!r}")
