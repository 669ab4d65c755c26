# docs/examples/online_method_plugin.py
"""``readout_online``: train only the readout, online, on top of a fixed spiking network.

A reservoir baseline: the stages run without autograd and keep their initial weights; only the
memoryless readout ``o[t] = readout(S_L[t])`` learns. Right after step ``t`` the step's share of
the per-step loss, ``L[t] = CE(o[t], y) / T``, is back-propagated into the readout, so for a
linear readout ``o[t] = W S_L[t] + b``

    ∇W = Σ_t (∂L[t]/∂o[t]) S_L[t]ᵀ,   ∇b = Σ_t ∂L[t]/∂o[t]

which is exactly BPTT's gradient of the readout (it has no memory); the stages get none and are
declared frozen. Only one step's readout graph is alive: saved memory ``O(B·(N_L + C))``, constant
in ``T`` (memory class ``O(1)``). ``update="batch"`` sums the ``T`` gradients and steps the
optimizer once per batch; ``update="step"`` steps it after every time step, so the later steps of
a batch already use the updated readout.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import snnarena
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.method import GradientMethod, Update
from snnarena.model import SpikingModel
from snnarena.params import Param
from snnarena.registry import Register
from snnarena.task import TASK_KINDS

__version__ = "1.0"


class ReadoutOnline(GradientMethod[SpikingModel]):
    """Per-step backward into the readout only; the spiking stages stay as initialised."""

    name = "readout_online"
    memory_class = "O(1)"
    loss_forms = frozenset({"per_step"})  # L[t] needs a loss that splits over steps
    tasks = frozenset(TASK_KINDS)  # it passes t to loss.step, so per-step targets split exactly
    PARAMS = (
        Param("update", "str", "batch", "optimizer step once per batch or after every step", choices=("batch", "step")),
    )

    @property
    def updates_within_batch(self) -> bool:
        return self.params["update"] == "step"  # True: the optimizer steps at every update()

    def frozen_parameters(self, prepared: SpikingModel, model: SpikingModel) -> set[str]:
        # names as in prepared.named_parameters(): every trainable parameter of the stages
        return {name for name, p in prepared.named_parameters() if name.startswith("stages.") and p.requires_grad}

    def unroll(
        self, model: SpikingModel, x: Tensor, y: Tensor, loss: SequenceLoss, clock: PhaseClock, update: Update
    ) -> float:
        # x: [T, B, ...] inputs, y: the whole sequence's targets. A backward and an update() per step.
        T = x.shape[0]
        state: list[Any] = model.init_state()  # a fresh state for every batch
        total = 0.0
        for t, x_t in enumerate(x.unbind(0)):
            with clock.phase("forward"):
                with torch.no_grad():  # the fixed network: no graph, nothing saved for backward
                    h = x_t
                    for l, stage in enumerate(model.stages):
                        h, state[l] = stage.step(h, state[l])  # h: spikes S_l[t] [B, ...]
                value = loss.step(model.readout(h), y, T, t=t)  # step t's share, e.g. CE(o[t], y) / T
            with clock.phase("backward"):
                value.backward()
            update()  # steps the optimizer here if updates_within_batch, else does nothing
            total += float(value.detach())
        return total


@snnarena.hookimpl
def register_gradient_methods(register: Register) -> None:
    register(ReadoutOnline)
