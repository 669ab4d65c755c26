"""The hooks a snnarena plugin implements.

A plugin is a module (or an object) with functions marked ``@snnarena.hookimpl`` whose names are
the hooks below. Each hook receives a ``register`` callback and calls it once per class it adds::

    # my_plugin.py
    import snnarena

    @snnarena.hookimpl
    def register_gradient_methods(register):
        register(MyMethod)          # MyMethod.name is the name suites use

Expose the module through the ``snnarena`` entry-point group of your package::

    [project.entry-points.snnarena]
    my_method = "my_package.my_plugin"

or drop the file into a folder given to ``snnarena --plugins-dir``. The built-in plugins use the
very same entry-point path. Each registered class names itself with a ``name`` class attribute,
declares its parameters as ``PARAMS`` (see :mod:`snnarena.params`) and follows the base class of
its kind:

========================  =============================================  =====================
hook                      registers subclasses of                        base class module
========================  =============================================  =====================
register_neurons          :class:`snnarena.neuron.Neuron`                 ``snnarena.neuron``
register_surrogates       :class:`snnarena.neuron.Surrogate`              ``snnarena.neuron``
register_models           :class:`snnarena.model.SpikingModel`            ``snnarena.model``
register_datasets         :class:`snnarena.data.Dataset`                  ``snnarena.data``
register_gradient_methods :class:`snnarena.method.GradientMethod`         ``snnarena.method``
register_metrics          :class:`snnarena.metric.Metric`                 ``snnarena.metric``
========================  =============================================  =====================

A hook implementation may take fewer arguments than its spec (pluggy passes only those it names),
so new optional arguments can be added to a spec without breaking existing plugins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from snnarena.registry import Register

PROJECT = "snnarena"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_neurons(register: Register) -> None:
    """Register :class:`~snnarena.neuron.Neuron` subclasses (``register(LIF)``)."""


@hookspec
def register_surrogates(register: Register) -> None:
    """Register :class:`~snnarena.neuron.Surrogate` subclasses (spike functions)."""


@hookspec
def register_models(register: Register) -> None:
    """Register :class:`~snnarena.model.SpikingModel` subclasses built from a neuron."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register :class:`~snnarena.data.Dataset` subclasses that build a ``DataBundle``."""


@hookspec
def register_gradient_methods(register: Register) -> None:
    """Register :class:`~snnarena.method.GradientMethod` subclasses (BPTT and alternatives)."""


@hookspec
def register_metrics(register: Register) -> None:
    """Register :class:`~snnarena.metric.Metric` subclasses, measured on every finished cell."""
