"""Importing a plugin's optional dependency (an extra of the snnarena package) with a clear error.

``import_extra("geoopt", extra="graph", needed_for="the msg model")`` returns the module, or raises
:class:`ExtraMissing` (a :class:`~snnarena.errors.ConfigurationError`) that names the extra and the
command installing it. Importing it silences one known message of third-party packages at import
time (``torch.jit.script`` is deprecated, printed by geoopt and PyTorch Geometric), which would
otherwise appear once per worker process in every run.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType

from snnarena.errors import ConfigurationError


class ExtraMissing(ConfigurationError):
    """An optional dependency is not installed; the message names the extra that provides it."""


def install_hint(extra: str) -> str:
    """The command that installs snnarena's optional ``extra``."""
    return f'pip install "snnarena[{extra}]"'


def import_extra(module: str, *, extra: str, needed_for: str) -> ModuleType:
    """``module``, or :class:`ExtraMissing` saying that ``needed_for`` needs snnarena's ``extra``."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
            return importlib.import_module(module)
    except ImportError as err:
        raise ExtraMissing(
            f"{needed_for} needs {module.split('.')[0]}, part of snnarena's optional `{extra}` extra ({err}); "
            f"install it with `{install_hint(extra)}`"
        ) from None
