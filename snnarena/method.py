"""Base class of the gradient-method plugins (BPTT and its alternatives).

A method controls *time*: it decides how the model's steps are unrolled, what is detached,
traced or recomputed, and when the optimizer steps. It never edits a model's source; it drives
``model.forward_seq`` or ``model.stages[l].step`` itself, or wraps the model in :meth:`prepare`.

Contract (``x`` is ``[T, B, ...]``, ``y`` the task's targets: ``[B]`` for sequence classification,
``[T, B]`` or ``[T, B, D]`` for per-step tasks, see :mod:`snnarena.task`):

* :meth:`skip` returns ``None`` or a human-readable reason the method does not apply;
* :meth:`prepare` may wrap the model (extra heads, ...); the wrapper must share the model's
  parameters so gradients can be compared with BPTT's. ``GradientMethod[P]`` is generic in the
  type ``P`` of the module :meth:`prepare` returns (the model itself by default), which is what
  :meth:`accumulate_gradients` and :meth:`train_step` receive;
* :meth:`accumulate_gradients` fills ``p.grad`` for one batch, with no optimizer step, and
  returns the batch loss; it is what gradient fidelity compares to BPTT;
* :meth:`train_step` is one training step; the default zeroes the gradients, accumulates them and
  steps the optimizer once;
* every trainable parameter of the prepared module must receive a gradient in a training step
  (the host checks the first step of every cell) unless :meth:`frozen_parameters` names it.

Online methods, which may update the weights several times per batch (after every segment or time
step), implement :meth:`unroll` instead of :meth:`accumulate_gradients`: it runs the batch and
calls ``update()`` after each sub-step's backward. The base class derives both entry points from
it: :meth:`accumulate_gradients` passes an ``update`` that does nothing (the gradients of all
sub-steps add up), and :meth:`train_step` steps the optimizer at every ``update()`` when
:meth:`updates_within_batch` is true, once per batch otherwise.

Every phase is timed through ``clock.phase("forward"|"backward"|"optimizer")``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar, cast

from torch import Tensor, nn

from snnarena.model import SpikingModel, non_affine_layers
from snnarena.params import Param, params_of

if TYPE_CHECKING:
    import torch

    from snnarena.claims import Claim
    from snnarena.data import DataInfo
    from snnarena.loss import SequenceLoss
    from snnarena.measure import PhaseClock

MemoryClass = Literal["O(T)", "O(1)", "O(K)", "budget"]
#: Called by :meth:`GradientMethod.unroll` after each sub-step's backward (see the module docstring).
Update = Callable[[], None]
#: The module a method trains: what :meth:`GradientMethod.prepare` returns.
PreparedT = TypeVar("PreparedT", bound=nn.Module)


def _no_update() -> None:
    """The ``update`` of :meth:`GradientMethod.accumulate_gradients`: gradients keep adding up."""


@dataclass(frozen=True)
class Preset:
    """A named configuration of a method, as its paper or official code runs it (``ottt@paper``).

    A preset is data: the method's parameters, and for the cells of the method the neuron, the
    surrogate, the loss form, the optimizer settings and model parameters it replaces in a suite's
    ``paper`` protocol (``None``: the suite's). ``sources`` cites where each value comes from, keyed
    like ``params.K``, ``neuron.params.tau``, ``surrogate.name``, ``loss``, ``optimizer.lr``,
    ``model.weight_standardization``.
    """

    doc: str
    params: Mapping[str, Any] = field(default_factory=dict)
    #: ``{"name": "lif", "params": {...}}`` or ``None``.
    neuron: Mapping[str, Any] | None = None
    #: ``{"name": "sigmoid", "params": {...}}`` or ``None``.
    surrogate: Mapping[str, Any] | None = None
    loss: str | None = None
    #: ``{"name": "sgd", "lr": 0.1, "momentum": 0.9, ...}`` (the suite's ``train.optimizer`` keys) or ``None``.
    optimizer: Mapping[str, Any] | None = None
    #: Model parameters the paper's architecture needs (``{"weight_standardization": True}``), set on
    #: the models of the preset's cells (a model without them is refused), or ``None``.
    model: Mapping[str, Any] | None = None
    sources: Mapping[str, str] = field(default_factory=dict)


class GradientMethod(Generic[PreparedT]):
    """A way to compute parameter updates for a spiking/recurrent model over ``T`` steps."""

    name: ClassVar[str] = ""
    PARAMS: ClassVar[tuple[Param, ...]] = ()
    #: Named configurations (``"paper"`` ...): see :class:`Preset`.
    PRESETS: ClassVar[Mapping[str, Preset]] = MappingProxyType({})
    #: The paper's headline claims as data, checked by ``snnarena claims``: see :class:`snnarena.claims.Claim`.
    CLAIMS: ClassVar[tuple[Claim, ...]] = ()
    #: How the bytes saved for backward grow with ``T`` (checked by ``snnarena.testing``).
    memory_class: ClassVar[MemoryClass] = "O(T)"
    #: Model families the method can train.
    families: ClassVar[frozenset[str]] = frozenset({"feedforward"})
    #: Loss forms the method can optimise (see :mod:`snnarena.loss`).
    loss_forms: ClassVar[frozenset[str]] = frozenset({"per_step", "rate"})
    #: Tasks the method can train (see :mod:`snnarena.task`); a method that passes ``start``/``t``
    #: to ``SequenceLoss.segment``/``step`` and is tested on per-step targets may add the per-step ones.
    tasks: ClassVar[frozenset[str]] = frozenset({"classification"})

    def __init__(self, **params: Any) -> None:
        """Validate ``params`` against ``PARAMS`` (raising ``ParamError``) and fill in defaults."""
        self.params = params_of(type(self)).resolve(params)

    @classmethod
    def check_environment(cls) -> str | None:
        """Why this method cannot run on this machine (an optional dependency missing ...), or
        ``None`` (the default). Suite validation calls it for every method a suite names and refuses
        the suite with the reason, before anything trains."""
        return None

    @classmethod
    def check_T(cls, params: Mapping[str, Any], T: int) -> str | None:
        """Why this method cannot run ``T`` steps with resolved ``params`` (a window longer than
        the sequence ...), or ``None`` (the default). Suite validation calls it for every method
        variant and ``T`` and refuses the suite with the reason, naming the parameter."""
        return None

    def skip(self, model: SpikingModel, info: DataInfo, loss: SequenceLoss) -> str | None:
        """A reason not to run on this (model, data, loss), or ``None`` to run."""
        if model.family not in self.families:
            return f"{self.name} trains {', '.join(sorted(self.families))} models; {model.name!r} is {model.family}"
        if loss.task not in self.tasks:
            return f"{self.name} trains {', '.join(sorted(self.tasks))} tasks; the dataset's task is {loss.task}"
        if loss.form not in self.loss_forms:
            return f"{self.name} needs train.loss in {sorted(self.loss_forms)}; the suite uses {loss.form!r}"
        return None

    def prepare(self, model: SpikingModel) -> PreparedT:
        """The module to train (default: the model itself). Must share the model's parameters."""
        return cast(PreparedT, model)

    def frozen_parameters(self, prepared: PreparedT, model: SpikingModel) -> set[str]:
        """Qualified names (as in ``prepared.named_parameters()``) of trainable parameters this
        method leaves without a gradient on purpose; any other one that gets no gradient in the
        first training step fails the cell. Default: none."""
        return set()

    def accumulate_gradients(
        self, model: PreparedT, x: Tensor, y: Tensor, loss: SequenceLoss, clock: PhaseClock
    ) -> float:
        """Add this method's gradient for batch ``(x, y)`` to ``p.grad``; return the loss.

        The default runs :meth:`unroll` with an ``update`` that does nothing.
        """
        return self.unroll(model, x, y, loss, clock, _no_update)

    def unroll(
        self, model: PreparedT, x: Tensor, y: Tensor, loss: SequenceLoss, clock: PhaseClock, update: Update
    ) -> float:
        """Run batch ``(x, y)``, adding gradients to ``p.grad`` and calling ``update()`` after each
        sub-step's backward (segment, time step ...); return the batch loss.

        Implement this *or* :meth:`accumulate_gradients`. ``update()`` may step the optimizer and
        clear ``p.grad``, so a sub-step must not read gradients of an earlier one.
        """
        raise NotImplementedError(f"{type(self).__name__} implements neither accumulate_gradients nor unroll")

    @property
    def updates_within_batch(self) -> bool:
        """True: :meth:`train_step` steps the optimizer at every ``update()`` of :meth:`unroll`;
        False (default): once per batch, on the summed gradient."""
        return False

    def train_step(
        self,
        model: PreparedT,
        x: Tensor,
        y: Tensor,
        loss: SequenceLoss,
        optimizer: torch.optim.Optimizer,
        clock: PhaseClock,
    ) -> float:
        """One training step on batch ``(x, y)``; returns the batch loss."""
        optimizer.zero_grad(set_to_none=True)
        if self.updates_within_batch:
            return self.unroll(model, x, y, loss, clock, lambda: _optimizer_step(optimizer, clock, zero=True))
        value = self.accumulate_gradients(model, x, y, loss, clock)
        _optimizer_step(optimizer, clock, zero=False)
        return value

    def extra_parameters(self, prepared: PreparedT, model: SpikingModel) -> int:
        """Parameters the method adds to the model (auxiliary heads ...)."""
        base = {id(p) for p in model.parameters()}
        return sum(p.numel() for p in prepared.parameters() if id(p) not in base)


def _optimizer_step(optimizer: torch.optim.Optimizer, clock: PhaseClock, zero: bool) -> None:
    """Step ``optimizer`` (timed as the ``optimizer`` phase); ``zero``: clear the gradients after."""
    with clock.phase("optimizer"):
        optimizer.step()
    if zero:
        optimizer.zero_grad(set_to_none=True)


def affine_skip_reason(method: str, model: SpikingModel, *, batch_norm: str, readout: bool) -> str | None:
    """Why ``method``, which needs every stage's synapse (and, with ``readout``, the readout) to be
    affine in its input and no BatchNorm layer, cannot train ``model``; ``None`` if it can.

    ``batch_norm`` says why BatchNorm does not fit the method (shown in the reason).
    """
    if model.has_batch_norm():
        return f"{method} does not support BatchNorm layers ({batch_norm})"
    for index, stage in enumerate(model.stages):
        bad = non_affine_layers(stage.synapse)
        if bad:
            return f"{method} needs affine synapses; stage {index} has {', '.join(bad)}"
    bad = non_affine_layers(model.readout) if readout else []
    if bad:
        return f"{method} needs an affine readout; it has {', '.join(bad)}"
    return None
