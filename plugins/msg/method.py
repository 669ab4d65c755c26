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

from snnarena.claims import Check, Claim, Conditions
from snnarena.data import DataInfo
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.method import GradientMethod
from snnarena.model import SpikingModel
from snnarena.task import GRAPH_TASKS

from .model import MSG

_SOURCE = "Sun et al., NeurIPS 2024 (arXiv 2410.17941)"
_GRAPHS = Conditions(
    "MSG (1-2 layers, dim 32) on Amazon Computers/Photo and Coauthor CS/Physics, T = 5, IF neurons",
    datasets=("amazon", "coauthor"),
    models=("msg",),
    T=(5,),
)
#: The paper replaces BPTT over the spikes by differentiation via the manifold, whose backward has
#: no time recursion: its cost does not depend on T.
PAPER_CLAIMS = (
    Claim(
        "backward-time-flat-in-T",
        "The backward pass does not depend on T: slope of log backward time in log T below 0.25.",
        f"{_SOURCE}, abstract ('BPTT regarding the spikes is replaced by the proposed differentiation via "
        "manifold') and its method section (backward through closed-form Jacobians, no time recursion)",
        "abstract, confirmed (qualitative); the O(1)-in-T backward read in the official code",
        Check("slope", "backward_ms", "<", 0.25),
        _GRAPHS,
    ),
    Claim(
        "memory-flat-in-T",
        "What it saves for the backward pass does not grow with T: at most 10 % more at the largest T than at the "
        "smallest.",
        f"{_SOURCE}, method section (spikes are constants in the backward pass)",
        "read in the official code (ZhenhHuang/MSG); not a number of the paper",
        Check("growth", "peak_activation_bytes", "<=", 1.1),
        _GRAPHS,
    ),
)


class DvM(GradientMethod[MSG]):
    """The DvM backward of MSG: spikes as constants, closed-form expmap Jacobians, O(1) in ``T``."""

    name = "dvm"
    memory_class = "O(1)"
    families = frozenset({"graph"})
    tasks = GRAPH_TASKS
    loss_forms = frozenset({"rate"})
    CLAIMS = PAPER_CLAIMS

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
