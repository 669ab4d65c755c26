"""The hooks a snnarena plugin implements (start here to write a plugin).

A plugin is a module (or an object) with functions marked ``@snnarena.hookimpl`` whose names are
the hooks below. Each hook receives a ``register`` callback and calls it once per class it adds::

    # my_plugin.py
    import snnarena

    @snnarena.hookimpl
    def register_gradient_methods(register):
        register(MyMethod)                  # registered as MyMethod.name, the name suites use
        register(MyMethod, name="my_alias") # or under an explicit name

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
register_executors        :class:`snnarena.executor.Executor`             ``snnarena.executor``
========================  =============================================  =====================

``register(cls, name=None)`` accepts a *class* (not an instance) that subclasses the base class of
the hook's kind; it is registered under ``name`` or, by default, ``cls.name``. Names are unique per
kind and belong to the first plugin that registers them: the built-in plugins load first, then
installed packages' entry points (by entry-point name), then plugin folders. A ``register`` call
that passes something else or a taken name is refused: it is reported by ``snnarena list`` as a
failure of *your* plugin (naming the kind, the name and its owner), and your other registrations
still load. Each hook is called once, when the plugin is loaded.

``snnarena list`` also warns about a plugin that loads but does nothing: a hook name that is not one
of those below (``register_gradient_method``), a ``register_*`` function without
``@snnarena.hookimpl``, or a plugin that registered no class at all.

Every result row records, for each component of the cell, the plugin, distribution and version of
the class actually used. An installed package reports its distribution's version; a plugin file
reports its module's ``__version__`` if it sets one, else ``file-<hash of the file>`` (the hash is
kept either way as the plugin's ``digest``).

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
    """Register neuron layers: subclasses of :class:`snnarena.neuron.Neuron`.

    ``register(cls, name=None)`` takes a ``Neuron`` subclass; suites select it with
    ``neuron = { name = ... }`` inside a model entry. A neuron implements ``init_state(x)`` for an
    input ``x`` of shape ``[B, ...]``, ``step(x, state) -> (spike, state)`` and may override
    ``forward_seq(x[T, B, ...]) -> (spikes[T, B, ...], state)``; its constructor receives the
    surrogate instance and the validated ``PARAMS``.
    """


@hookspec
def register_surrogates(register: Register) -> None:
    """Register spike functions: subclasses of :class:`snnarena.neuron.Surrogate`.

    ``register(cls, name=None)`` takes a ``Surrogate`` subclass. The forward pass is the Heaviside
    step ``Θ(x)``; the subclass implements ``derivative(x)`` (the pseudo-derivative used in the
    backward pass) and ``primitive(x)``, a smooth step whose derivative equals ``derivative``.
    """


@hookspec
def register_models(register: Register) -> None:
    """Register network architectures: subclasses of :class:`snnarena.model.SpikingModel`.

    ``register(cls, name=None)`` takes a ``SpikingModel`` subclass. Its constructor
    ``(info: DataInfo, make_neuron, **params)`` fills ``self.stages`` (synapse → neuron
    :class:`~snnarena.model.Stage` s) and a memoryless ``self.readout``; ``family`` tells gradient
    methods which dynamics to expect and ``skip(info)`` may decline data it cannot take.
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Register datasets: subclasses of :class:`snnarena.data.Dataset`.

    ``register(cls, name=None)`` takes a ``Dataset`` subclass whose ``build(T, seed)`` returns a
    :class:`~snnarena.data.DataBundle` yielding ``[T, B, ...]`` input batches and ``[B]`` labels.
    Suite validation calls its classmethods ``input_size(params)`` (values per sample and step, for
    the memory estimate) and ``check_files(params)`` (problems with the local files it reads).
    """


@hookspec
def register_gradient_methods(register: Register) -> None:
    """Register training methods: subclasses of :class:`snnarena.method.GradientMethod`.

    ``register(cls, name=None)`` takes a ``GradientMethod`` subclass (generic in the module it
    trains: ``GradientMethod[SpikingModel]`` unless ``prepare`` wraps the model) declaring its
    ``memory_class``, ``families`` and ``loss_forms``, and implementing one of:

    * ``accumulate_gradients(model, x[T, B, ...], y[B], loss, clock) -> float``: add the batch's
      gradient to ``p.grad`` and return the loss (the optimizer steps once per batch);
    * ``unroll(model, x, y, loss, clock, update) -> float``: the same, calling ``update()`` after
      each sub-step's backward (segment, time step). The ``updates_within_batch`` property decides
      whether ``train_step`` steps the optimizer at every ``update()`` (online methods) or once per
      batch; ``accumulate_gradients`` (used for gradient fidelity) always sums all sub-steps.

    Optionally ``skip``, ``prepare``, ``extra_parameters`` and ``frozen_parameters(prepared,
    model) -> set[str]``, the parameters the method leaves untrained on purpose: the host fails a
    cell whose first training step leaves any other trainable parameter without a gradient.
    Check the method with :func:`snnarena.testing.run_conformance`.
    """


@hookspec
def register_metrics(register: Register) -> None:
    """Register per-cell measurements: subclasses of :class:`snnarena.metric.Metric`.

    ``register(cls, name=None)`` takes a ``Metric`` subclass declaring its ``columns`` (each a
    :class:`~snnarena.columns.Column` with direction, unit and kind) and returning
    ``{column: value}`` for exactly those from ``compute(ctx: CellContext)``.
    """


@hookspec
def register_executors(register: Register) -> None:
    """Register executors, what runs a suite's cells: subclasses of :class:`snnarena.executor.Executor`.

    ``register(cls, name=None)`` takes an ``Executor`` subclass; a run selects it with
    ``snnarena run --executor NAME`` or a suite's ``[executor]`` table (``name`` plus the options its
    ``PARAMS`` declare). Its constructor receives the run's
    :class:`~snnarena.executor.ExecutionContext` and the validated options; ``records(cells)`` yields
    one :class:`~snnarena.results.CellRecord` per cell as each finishes (run each cell with
    :func:`snnarena.executor.execute_job` on a :meth:`~snnarena.executor.ExecutionContext.job`),
    ``abandon(signal_name)`` stops at once and ``close()`` releases what it started. Workers return
    records; only the process running the suite writes the run directory. Built-in: ``local``,
    ``process``, ``ray`` and ``slurm``.
    """
