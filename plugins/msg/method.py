"""``dvm``: differentiation via the manifold (Sun et al., NeurIPS 2024), the training method of ``msg``.

Forward: the spiking stages run step by step without gradient, keeping only the time-mean input of
every stage, ``m^l = mean_t s^{l−1}_t`` ``[N, ·]`` (``s^{−1} = x``). Then, with gradient, per stage
``v^l = step · (Â m^l W_l + b_l)`` — which equals ``step · mean_t(Â s^{l−1}_t W_l + b_l)`` because
the convolution is affine, so the linear map runs once on the mean, not on every step — and
``z^l = Exp_{z^{l−1}}(P v^l)`` through :class:`~.manifolds.ManifoldStep`, whose backward is the
closed-form Jacobians: ``∂L/∂v^l = J_vᵀ ∂L/∂z^l``, ``∂L/∂z^{l−1} = J_zᵀ ∂L/∂z^l``. The loss is the
task's ``rate`` loss of ``r = Log_0(z^L) W_out + b``, which is ``msg``'s time-averaged output
(so the value equals the loss of ``forward_seq``). Spikes get no gradient: a weight's influence
on deeper layers through the spikes is dropped by design. Saved for backward: ``m^l``, ``z^l``,
``v^l`` per stage — nothing per time step (memory and backward time independent of ``T``).
"""

from __future__ import annotations

from torch import Tensor

from snnarena.data import DataInfo
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.method import GradientMethod
from snnarena.model import SpikingModel
from snnarena.task import GRAPH_TASKS

from .model import MSG


class DvM(GradientMethod[MSG]):
    """The DvM backward of MSG: spikes as constants, closed-form expmap Jacobians, O(1) in ``T``."""

    name = "dvm"
    memory_class = "O(1)"
    families = frozenset({"graph"})
    tasks = GRAPH_TASKS
    loss_forms = frozenset({"rate"})

    def skip(self, model: SpikingModel, info: DataInfo, loss: SequenceLoss) -> str | None:
        reason = super().skip(model, info, loss)
        if reason is None and not isinstance(model, MSG):
            return f"dvm differentiates through msg's manifold layers; {model.name!r} has none (train it with bptt)"
        return reason

    def accumulate_gradients(self, model: MSG, x: Tensor, y: Tensor, loss: SequenceLoss, clock: PhaseClock) -> float:
        with clock.phase("forward"):
            means = model.input_means(x)
            currents = [stage.synapse(m) for stage, m in zip(model.stages, means, strict=True)]
            r = model.represent(currents, dvm=True)
            value = loss.full(r.unsqueeze(0).expand(x.shape[0], *r.shape), y)
        with clock.phase("backward"):
            value.backward()
        return float(value.detach())
