"""``bptt``: exact backpropagation through time with surrogate gradients (the reference).

All ``T`` steps are unrolled and kept for one backward pass: memory ``O(T·L·B·N)``, compute
``O(T·L)`` forward plus about twice that backward. ``step_mode="multi"`` runs each stage over
the whole sequence at once; ``"single"`` unrolls ``model.step`` one time step at a time. Both
give the same gradient. It drives nothing but ``step``/``forward_seq`` and the state, so it trains
``feedforward`` and ``recurrent`` models alike.
"""

from __future__ import annotations

import torch
from torch import Tensor

import snnarena
from snnarena.loss import LOSS_FORMS, SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.method import GradientMethod
from snnarena.model import SpikingModel
from snnarena.params import Param
from snnarena.reference import bptt_accumulate
from snnarena.registry import Register
from snnarena.task import TASK_KINDS


class BPTT(GradientMethod[SpikingModel]):
    """Backpropagation through time over the whole sequence."""

    name = "bptt"
    memory_class = "O(T)"
    # only step/forward_seq and the state
    families = frozenset({"feedforward", "residual", "recurrent", "convergent", "graph"})
    loss_forms = frozenset(LOSS_FORMS)
    tasks = frozenset(TASK_KINDS)
    PARAMS = (
        Param(
            "step_mode",
            "str",
            "multi",
            "multi: layer by layer over all steps; single: step by step",
            choices=("multi", "single"),
        ),
    )

    def accumulate_gradients(
        self, model: SpikingModel, x: Tensor, y: Tensor, loss: SequenceLoss, clock: PhaseClock
    ) -> float:
        if self.params["step_mode"] == "multi":
            return bptt_accumulate(model, x, y, loss, clock)
        with clock.phase("forward"):
            state = model.init_state()
            logits = []
            for x_t in x.unbind(0):
                out = model.step(x_t, state)
                state = out.state
                logits.append(out.logits)
            value = loss.full(torch.stack(logits), y)
        with clock.phase("backward"):
            value.backward()
        return float(value.detach())


@snnarena.hookimpl
def register_gradient_methods(register: Register) -> None:
    register(BPTT)
