"""Base class of the gradient-method plugins (BPTT and its alternatives).

A method controls *time*: it decides how the model's steps are unrolled, what is detached,
traced or recomputed, and when the optimizer steps. It never edits a model's source; it drives
``model.forward_seq`` or ``model.stages[l].step`` itself, or wraps the model in :meth:`prepare`.

Contract (``x`` is ``[T, B, ...]``, ``y`` is ``[B]``):

* :meth:`skip` returns ``None`` or a human-readable reason the method does not apply;
* :meth:`prepare` may wrap the model (extra heads, ...); the wrapper must share the model's
  parameters so gradients can be compared with BPTT's;
* :meth:`accumulate_gradients` fills ``p.grad`` for one batch, with no optimizer step, and
  returns the batch loss; it is what gradient fidelity compares to BPTT;
* :meth:`train_step` is one training step; the default zeroes the gradients, accumulates them and
  steps the optimizer once. Online methods that update several times per batch override it.

Every phase is timed through ``clock.phase("forward"|"backward"|"optimizer")``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from torch import Tensor, nn

from snnarena.params import Param, params_of

if TYPE_CHECKING:
    import torch

    from snnarena.data import DataInfo
    from snnarena.loss import SequenceLoss
    from snnarena.measure import PhaseClock
    from snnarena.model import SpikingModel

MemoryClass = Literal["O(T)", "O(1)", "O(K)", "budget"]


class GradientMethod:
    """A way to compute parameter updates for a spiking/recurrent model over ``T`` steps."""

    name: ClassVar[str] = ""
    PARAMS: ClassVar[tuple[Param, ...]] = ()
    #: How the bytes saved for backward grow with ``T`` (checked by ``snnarena.testing``).
    memory_class: ClassVar[MemoryClass] = "O(T)"
    #: Model families the method can train.
    families: ClassVar[frozenset[str]] = frozenset({"feedforward"})
    #: Loss forms the method can optimise (see :mod:`snnarena.loss`).
    loss_forms: ClassVar[frozenset[str]] = frozenset({"per_step", "rate"})

    def __init__(self, **params: Any) -> None:
        """Validate ``params`` against ``PARAMS`` (raising ``ParamError``) and fill in defaults."""
        self.params = params_of(type(self)).resolve(params)

    def skip(self, model: SpikingModel, info: DataInfo, loss: SequenceLoss) -> str | None:
        """A reason not to run on this (model, data, loss), or ``None`` to run."""
        if model.family not in self.families:
            return (
                f"{self.name} trains {', '.join(sorted(self.families))} models; "
                f"{model.name!r} is {model.family}"
            )
        if loss.form not in self.loss_forms:
            return (
                f"{self.name} needs train.loss in {sorted(self.loss_forms)}; "
                f"the suite uses {loss.form!r}"
            )
        return None

    def prepare(self, model: SpikingModel) -> nn.Module:
        """The module to train (default: the model itself). Must share the model's parameters."""
        return model

    def accumulate_gradients(
        self, model: nn.Module, x: Tensor, y: Tensor, loss: SequenceLoss, clock: PhaseClock
    ) -> float:
        """Add this method's gradient for batch ``(x, y)`` to ``p.grad``; return the loss."""
        raise NotImplementedError

    def train_step(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        loss: SequenceLoss,
        optimizer: torch.optim.Optimizer,
        clock: PhaseClock,
    ) -> float:
        """One training step on batch ``(x, y)``; returns the batch loss."""
        optimizer.zero_grad(set_to_none=True)
        value = self.accumulate_gradients(model, x, y, loss, clock)
        with clock.phase("optimizer"):
            optimizer.step()
        return value

    def extra_parameters(self, prepared: nn.Module, model: SpikingModel) -> int:
        """Parameters the method adds to the model (auxiliary heads ...)."""
        base = {id(p) for p in model.parameters()}
        return sum(p.numel() for p in prepared.parameters() if id(p) not in base)
