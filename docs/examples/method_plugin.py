# docs/examples/method_plugin.py
"""``tail_bptt``: BPTT through the last ``K`` steps only, after a gradient-free warm-up.

The first ``T − K`` steps run without autograd (``torch.no_grad``): they only bring the neuron
state to where the last ``K`` steps start. The last ``K`` steps are unrolled with autograd and
their share of the per-step loss ``L = (1/T) Σ_t CE(o[t], y)`` is back-propagated:

    ∇ ≈ ∇_θ (1/T) Σ_{t ≥ T−K} CE(o[t], y)       (the state entering step T − K held fixed)

Saved memory is ``O(K·L·B·N)``, constant in ``T`` (memory class ``O(K)``); compute is one forward
over ``T`` steps plus a backward over ``K``. With ``K ≥ T`` it is exact BPTT. The rate loss
``CE(mean_t o[t], y)`` does not split over steps, so only ``per_step`` is supported.
"""

from __future__ import annotations

import torch
from torch import Tensor

import snnarena
from snnarena.claims import Check, Claim, Conditions
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.method import GradientMethod
from snnarena.model import SpikingModel
from snnarena.params import Param
from snnarena.registry import Register
from snnarena.task import TASK_KINDS

__version__ = "1.0"


class TailBPTT(GradientMethod[SpikingModel]):
    """BPTT through the last K steps after a no-grad warm-up of the first T − K."""

    name = "tail_bptt"
    memory_class = "O(K)"
    families = frozenset({"feedforward", "recurrent"})  # it only drives model.step
    loss_forms = frozenset({"per_step"})
    tasks = frozenset(TASK_KINDS)  # it passes t/start to the loss, so per-step targets split exactly
    PARAMS = (Param("K", "int", 8, "time steps back-propagated (the last K of each sequence)", low=1),)
    # what the method promises, checked by `snnarena claims tail_bptt` on any run with two or more T
    CLAIMS = (
        Claim(
            "memory-flat-in-T",
            "Its saved memory does not grow with T (at most 10 % more at the largest T than at the smallest).",
            "docs/plugins.md, this example's docstring (memory class O(K))",
            "follows from the algorithm: only the last K steps are unrolled with autograd",
            Check("growth", "peak_activation_bytes", "<=", 1.1),
            Conditions("any network, T > K"),
        ),
    )

    def accumulate_gradients(
        self, model: SpikingModel, x: Tensor, y: Tensor, loss: SequenceLoss, clock: PhaseClock
    ) -> float:
        # x: [T, B, ...] inputs, y: the whole sequence's targets. Adds to p.grad, steps no optimizer.
        T = x.shape[0]
        warmup = max(T - self.params["K"], 0)
        state = model.init_state()  # a fresh state for every batch: nothing leaks across batches
        with clock.phase("forward"):
            head_loss = 0.0
            with torch.no_grad():
                for t, x_t in enumerate(x[:warmup].unbind(0)):
                    out = model.step(x_t, state)
                    state = out.state
                    head_loss += float(loss.step(out.logits, y, T, t=t))
            logits = []
            for x_t in x[warmup:].unbind(0):
                out = model.step(x_t, state)
                state = out.state
                logits.append(out.logits)
            tail_loss = loss.segment(torch.stack(logits), y, T, start=warmup)  # steps warmup .. T−1
        with clock.phase("backward"):
            tail_loss.backward()
        return head_loss + float(tail_loss.detach())


@snnarena.hookimpl
def register_gradient_methods(register: Register) -> None:
    register(TailBPTT)
