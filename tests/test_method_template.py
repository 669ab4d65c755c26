"""GradientMethod's template for online methods (unroll + update) and the affine skip helper."""

from __future__ import annotations

import pytest
import torch
from conftest import make_mlp, random_batch
from torch import Tensor

from snnarena.host import PluginHost
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.method import GradientMethod, Update, affine_skip_reason
from snnarena.model import SpikingModel
from snnarena.reference import bptt_accumulate, collect_gradients

CLOCK = PhaseClock(enabled=False)
LOSS = SequenceLoss("per_step")


class Halves(GradientMethod[SpikingModel]):
    """A toy online method: BPTT on each half of the sequence from rest, ``update()`` after each."""

    name = "halves"

    def __init__(self, within: bool) -> None:
        super().__init__()
        self.within = within

    @property
    def updates_within_batch(self) -> bool:
        return self.within

    def unroll(
        self, model: SpikingModel, x: Tensor, y: Tensor, loss: SequenceLoss, clock: PhaseClock, update: Update
    ) -> float:
        total = 0.0
        for half in x.chunk(2):
            total += bptt_accumulate(model, half, y, loss, clock)
            update()
        return total


def _steps_and_weights(host: PluginHost, within: bool) -> tuple[int, Tensor]:
    model = make_mlp(host, weight_scale=3.0)
    x, y = random_batch(T=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    steps: list[int] = []
    optimizer.register_step_post_hook(lambda *_: steps.append(1))
    Halves(within).train_step(model, x, y, LOSS, optimizer, CLOCK)
    return len(steps), torch.cat([p.detach().flatten() for p in model.parameters()])


def test_unroll_gives_accumulate_gradients_and_both_kinds_of_train_step(host: PluginHost) -> None:
    model = make_mlp(host, weight_scale=3.0)
    x, y = random_batch(T=8)
    Halves(within=False).accumulate_gradients(model, x, y, LOSS, CLOCK)
    summed = collect_gradients(model)
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for half in x.chunk(2):  # accumulate_gradients: no update between halves, the gradients add up
        model.zero_grad(set_to_none=True)
        bptt_accumulate(model, half, y, LOSS, CLOCK)
        expected = {n: expected[n] + g for n, g in collect_gradients(model).items()}
    for n in summed:
        torch.testing.assert_close(summed[n], expected[n])
    once, per_batch = _steps_and_weights(host, within=False)
    twice, per_half = _steps_and_weights(host, within=True)
    assert (once, twice) == (1, 2)
    assert not torch.equal(per_batch, per_half)


def test_a_method_without_either_entry_point_says_so(host: PluginHost) -> None:
    model = make_mlp(host)
    x, y = random_batch(T=2)
    with pytest.raises(NotImplementedError, match="implements neither accumulate_gradients nor unroll"):
        GradientMethod().accumulate_gradients(model, x, y, LOSS, CLOCK)


def test_affine_skip_reason(host: PluginHost) -> None:
    mlp = make_mlp(host)
    assert affine_skip_reason("m", mlp, batch_norm="why", readout=True) is None
    mlp.stages[1].synapse = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Tanh())
    assert affine_skip_reason("m", mlp, batch_norm="why", readout=False) == (
        "m needs affine synapses; stage 1 has 1: Tanh"
    )
    mlp = make_mlp(host)
    mlp.readout = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.ReLU())
    assert affine_skip_reason("m", mlp, batch_norm="why", readout=False) is None
    assert "m needs an affine readout; it has 1: ReLU" == affine_skip_reason("m", mlp, batch_norm="why", readout=True)
    mlp.stages[0].synapse = torch.nn.Sequential(torch.nn.Linear(6, 7), torch.nn.BatchNorm1d(7))
    assert affine_skip_reason("m", mlp, batch_norm="why", readout=True) == "m does not support BatchNorm layers (why)"
