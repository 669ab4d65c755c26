"""snnarena: side-by-side benchmarks of training methods for spiking and recurrent networks."""

from importlib.metadata import PackageNotFoundError, version

from snnarena.hookspecs import hookimpl

try:
    __version__ = version("snnarena")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__", "hookimpl"]
