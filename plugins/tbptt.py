"""``tbptt``: truncated BPTT with truncation length ``K``.

The sequence is cut into segments of ``K`` steps. Each segment runs from the previous segment's
final state *detached* (not reset), and its share of the loss (``SequenceLoss.segment``) is
back-propagated at the end of the segment, so at most ``K`` steps of graph are alive: memory
``O(K·L·B·N)``. Gradients of all segments are summed and the optimizer steps once per batch
(``update="batch"``) or after every segment (``update="segment"``). With ``K >= T`` it is BPTT.
The state carried across a boundary is the model's whole state, so a ``recurrent`` model keeps
its previous outputs ``S_l[t−1]`` (detached) as well as its neurons' state.
"""

from __future__ import annotations

from torch import Tensor

import snnarena
from snnarena.claims import Check, Claim, Conditions
from snnarena.loss import LOSS_FORMS, SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.method import GradientMethod, Update
from snnarena.model import SpikingModel
from snnarena.neuron import detach_state
from snnarena.params import Param
from snnarena.registry import Register
from snnarena.task import TASK_KINDS

#: Truncation's defining property (no seed paper states it as a headline number).
DESIGN_CLAIMS = (
    Claim(
        "memory-bounded-by-K",
        "Once T >= K, what it saves for the backward pass does not grow with T (at most 10 % more at the largest T "
        "than at the smallest): the graph never spans more than K steps.",
        "Williams & Peng, Neural Computation 1990 (truncated BPTT); methods.md section 0, memory O(K·L·B·N)",
        "design property of the algorithm, not a paper's measurement",
        Check("growth", "peak_activation_bytes", "<=", 1.1),
        Conditions("any network, T >= K"),
    ),
)


class TBPTT(GradientMethod[SpikingModel]):
    """Truncated BPTT: backward every K steps, state detached at segment boundaries."""

    name = "tbptt"
    memory_class = "O(K)"
    # only step/forward_seq and the state
    families = frozenset({"feedforward", "residual", "recurrent", "convergent", "graph"})
    loss_forms = frozenset(LOSS_FORMS)
    tasks = frozenset(TASK_KINDS)  # passes start/t to the loss: per-step targets split exactly
    CLAIMS = DESIGN_CLAIMS
    PARAMS = (
        Param("K", "int", 8, "truncation length in time steps", low=1),
        Param(
            "update",
            "str",
            "batch",
            "optimizer step once per batch or after every segment",
            choices=("batch", "segment"),
        ),
    )

    @property
    def updates_within_batch(self) -> bool:
        return self.params["update"] == "segment"

    def unroll(
        self, model: SpikingModel, x: Tensor, y: Tensor, loss: SequenceLoss, clock: PhaseClock, update: Update
    ) -> float:
        K, T = self.params["K"], x.shape[0]
        state = model.init_state()
        total = 0.0
        for start in range(0, T, K):
            with clock.phase("forward"):
                out = model.forward_seq(x[start : start + K], state)
                value = loss.segment(out.logits, y, T, start)
            with clock.phase("backward"):
                value.backward()
            update()
            state = detach_state(out.state)
            total += float(value.detach())
        return total


@snnarena.hookimpl
def register_gradient_methods(register: Register) -> None:
    register(TBPTT)
