"""``tbptt``: truncated BPTT with truncation length ``K``.

The sequence is cut into segments of ``K`` steps. Each segment runs from the previous segment's
final state *detached* (not reset), and its share of the loss (``SequenceLoss.segment``) is
back-propagated at the end of the segment, so at most ``K`` steps of graph are alive: memory
``O(K·L·B·N)``. Gradients of all segments are summed and the optimizer steps once per batch
(``update="batch"``) or after every segment (``update="segment"``). With ``K >= T`` it is BPTT.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

import snnarena
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.method import GradientMethod
from snnarena.neuron import detach_state
from snnarena.params import Param
from snnarena.registry import Register


class TBPTT(GradientMethod):
    """Truncated BPTT: backward every K steps, state detached at segment boundaries."""

    name = "tbptt"
    memory_class = "O(K)"
    PARAMS = (
        Param("K", "int", 8, "truncation length in time steps", low=1),
        Param("update", "str", "batch", "optimizer step once per batch or after every segment",
              choices=("batch", "segment")),
    )

    def _segments(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        loss: SequenceLoss,
        clock: PhaseClock,
        optimizer: torch.optim.Optimizer | None,
    ) -> float:
        K, T = self.params["K"], x.shape[0]
        state = model.init_state()
        total = 0.0
        for start in range(0, T, K):
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
            with clock.phase("forward"):
                out = model.forward_seq(x[start : start + K], state)
                value = loss.segment(out.logits, y, T)
            with clock.phase("backward"):
                value.backward()
            if optimizer is not None:
                with clock.phase("optimizer"):
                    optimizer.step()
            state = detach_state(out.state)
            total += float(value.detach())
        return total

    def accumulate_gradients(
        self, model: nn.Module, x: Tensor, y: Tensor, loss: SequenceLoss, clock: PhaseClock
    ) -> float:
        return self._segments(model, x, y, loss, clock, optimizer=None)

    def train_step(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        loss: SequenceLoss,
        optimizer: torch.optim.Optimizer,
        clock: PhaseClock,
    ) -> float:
        if self.params["update"] == "batch":
            return super().train_step(model, x, y, loss, optimizer, clock)
        return self._segments(model, x, y, loss, clock, optimizer=optimizer)


@snnarena.hookimpl
def register_gradient_methods(register: Register) -> None:
    register(TBPTT)
