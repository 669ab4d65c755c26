"""``sltt``: Spatial Learning Through Time and SLTT-K (Meng et al., ICCV 2023, arXiv 2302.14311).

BPTT's error at the membrane splits into a spatial part (from the next layer at the same step)
and a temporal part (from the same neuron at the next step). SLTT keeps only the spatial part:
the neuron state is detached before every step, ``H[t] = λ sg(V[t−1]) + I[t]``, and the per-step
loss ``L[t] = CE(o[t], y)/T`` is back-propagated right after step ``t``, so

``∇W^l ≈ Σ_t δ^l[t] S^{l−1}[t]ᵀ``   (OTTT with a trace decay of 0).

Only one step's graph is alive: saved memory ``O(L·B·N)``, constant in ``T``; backward compute
``O(T·L)``. **SLTT-K** (``k`` set): per batch ``k`` distinct steps are drawn from torch's global RNG
(``torch.randperm(T)[:k]``, as the official ``train_SLTTK.py``); the other steps run under
``torch.no_grad()`` and only the chosen ones back-propagate their loss, still divided by ``T``
(not ``k``): backward compute ``O(k·L)``, independent of ``T``. The returned loss sums all ``T``
steps. One optimizer step per batch. BatchNorm is applied per step, as in the official code.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import snnarena
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.method import GradientMethod
from snnarena.model import SpikingModel
from snnarena.neuron import detach_state
from snnarena.params import Param
from snnarena.registry import Register
from snnarena.task import TASK_KINDS


class SLTT(GradientMethod[SpikingModel]):
    """Spatial-only gradient at each step; SLTT-K back-propagates only ``k`` random steps."""

    name = "sltt"
    memory_class = "O(1)"
    loss_forms = frozenset({"per_step"})
    tasks = frozenset(TASK_KINDS)  # passes t to the loss: per-step targets split exactly
    PARAMS = (
        Param(
            "k",
            "int",
            None,
            "SLTT-K: back-propagate only k randomly drawn steps per batch; null: every step (SLTT)",
            low=1,
            nullable=True,
        ),
    )

    def backward_steps(self, T: int) -> set[int]:
        """The steps that back-propagate for one batch (draws from the global RNG if ``k`` is set)."""
        k = self.params["k"]
        if k is None:
            return set(range(T))
        return {int(t) for t in torch.randperm(T)[:k]}

    def accumulate_gradients(
        self, model: SpikingModel, x: Tensor, y: Tensor, loss: SequenceLoss, clock: PhaseClock
    ) -> float:
        T = x.shape[0]
        chosen = self.backward_steps(T)
        state: list[Any] = model.init_state()
        total = 0.0
        for t in range(T):
            with clock.phase("forward"), torch.set_grad_enabled(t in chosen):
                out = model.step(x[t], detach_state(state))
                value = loss.step(out.logits, y, T, t)
            if t in chosen:
                with clock.phase("backward"):
                    value.backward()
            state = out.state
            total += float(value.detach())
        return total


@snnarena.hookimpl
def register_gradient_methods(register: Register) -> None:
    register(SLTT)
