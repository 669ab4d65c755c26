"""Every registered gradient method passes :mod:`snnarena.testing`; each check catches a broken one."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
from conftest import make_mlp
from torch import Tensor, nn

from snnarena import testing
from snnarena.data import DataInfo
from snnarena.factory import build_method
from snnarena.host import HostConfig, PluginHost
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.method import GradientMethod
from snnarena.model import SpikingModel
from snnarena.reference import bptt_accumulate
from snnarena_plugins.bptt import BPTT
from snnarena_plugins.tbptt import TBPTT

#: Methods registered by the built-in plugins (the same entry points the ``host`` fixture loads).
METHODS = PluginHost.load(HostConfig()).names("method")


def _model_factory(host: PluginHost) -> testing.ModelFactory:
    """A small float64 LIF MLP whose every layer spikes on :func:`testing.make_batch` inputs."""
    return lambda: make_mlp(host, neuron_params={"v_threshold": 0.25})


@pytest.mark.parametrize("name", METHODS)
def test_registered_method_conforms(host: PluginHost, name: str) -> None:
    assert name in host.names("method")
    method = build_method(host, name)
    model = _model_factory(host)()
    loss = testing.default_loss(method)
    reason = method.skip(model, model.info, loss)
    if reason is not None:
        pytest.skip(f"{name} does not train the conformance MLP: {reason}")
    testing.run_conformance(lambda: build_method(host, name), _model_factory(host), loss=loss)


# -- deliberately broken methods ------------------------------------------------------------------


class ReadoutOnly(GradientMethod):
    """Trains the readout on frozen features: the hidden layers get no gradient."""

    name = "readout_only"

    def accumulate_gradients(
        self, model: nn.Module, x: Tensor, y: Tensor, loss: SequenceLoss, clock: PhaseClock
    ) -> float:
        with torch.no_grad():
            spikes = model.forward_seq(x).spikes[-1]
        logits = model.readout(spikes.flatten(0, 1)).unflatten(0, spikes.shape[:2])
        value = loss.full(logits, y)
        value.backward()
        return float(value.detach())


class Overwrites(BPTT):
    """Sets ``p.grad`` instead of adding to it."""

    name = "overwrites"

    def accumulate_gradients(
        self, model: nn.Module, x: Tensor, y: Tensor, loss: SequenceLoss, clock: PhaseClock
    ) -> float:
        for p in model.parameters():
            p.grad = None
        return bptt_accumulate(model, x, y, loss, clock)


class Steps(BPTT):
    """Updates the weights inside ``accumulate_gradients``."""

    name = "steps"

    def accumulate_gradients(
        self, model: nn.Module, x: Tensor, y: Tensor, loss: SequenceLoss, clock: PhaseClock
    ) -> float:
        value = bptt_accumulate(model, x, y, loss, clock)
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
        return value


class Unseeded(BPTT):
    """Scales the loss by noise from the OS, outside torch's seeded RNG."""

    name = "unseeded"

    def accumulate_gradients(
        self, model: nn.Module, x: Tensor, y: Tensor, loss: SequenceLoss, clock: PhaseClock
    ) -> float:
        noise = 1.0 + int.from_bytes(os.urandom(4), "little") / 2**32
        value = loss.full(model.forward_seq(x).logits, y) * noise
        value.backward()
        return float(value.detach())


class Leaky(BPTT):
    """Starts every batch from the previous batch's final state."""

    name = "leaky"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.state: list[Any] | None = None

    def accumulate_gradients(
        self, model: nn.Module, x: Tensor, y: Tensor, loss: SequenceLoss, clock: PhaseClock
    ) -> float:
        out = model.forward_seq(x, self.state)
        self.state = [s.detach() if isinstance(s, Tensor) else type(s)(*(t.detach() for t in s)) for s in out.state]
        value = loss.full(out.logits, y)
        value.backward()
        return float(value.detach())


class EmptyReason(BPTT):
    name = "empty_reason"

    def skip(self, model: SpikingModel, info: DataInfo, loss: SequenceLoss) -> str | None:
        return ""


class ClaimsRate(BPTT):
    """Declares it optimises only ``per_step`` but never says so in ``skip``."""

    name = "claims_rate"
    loss_forms = frozenset({"per_step"})

    def skip(self, model: SpikingModel, info: DataInfo, loss: SequenceLoss) -> str | None:
        return None


class FlatBPTT(BPTT):
    name = "flat_bptt"
    memory_class = "O(1)"


class BudgetBPTT(BPTT):
    name = "budget_bptt"
    memory_class = "budget"


class LinearTBPTT(TBPTT):
    name = "linear_tbptt"
    memory_class = "O(T)"


def _batches(host: PluginHost) -> tuple[SpikingModel, testing.Batch, testing.Batch]:
    model = _model_factory(host)()
    return model, testing.make_batch(model, 8, seed=1), testing.make_batch(model, 8, seed=2)


def test_checks_pass_on_bptt(host: PluginHost) -> None:
    """The reference passes each check separately (so the failures below are the methods')."""
    model, b1, b2 = _batches(host)
    loss = SequenceLoss()
    factory = _model_factory(host)
    testing.check_gradients_reach_parameters(BPTT(), model, *b1, loss)
    testing.check_accumulates(BPTT(), factory(), *b1, loss)
    testing.check_reproducible(BPTT, factory, b1, loss)
    testing.check_no_state_leak(BPTT, factory, b1, b2, loss)
    testing.check_skip_reason(BPTT(), model, model.info, loss)
    peaks = testing.check_memory_class(BPTT, factory, Ts=(8, 16, 32))
    assert peaks[32] > 3 * peaks[8]


@pytest.mark.parametrize(
    "method,match",
    [
        (ReadoutOnly(), r"readout_only: parameter 'stages.0.synapse.weight' received no gradient"),
        (Steps(), r"steps: accumulate_gradients changed parameter"),
    ],
)
def test_gradient_check_catches(host: PluginHost, method: GradientMethod, match: str) -> None:
    model, b1, _ = _batches(host)
    with pytest.raises(AssertionError, match=match):
        testing.check_gradients_reach_parameters(method, model, *b1, SequenceLoss())


def test_accumulate_check_catches_overwriting(host: PluginHost) -> None:
    model, b1, _ = _batches(host)
    with pytest.raises(AssertionError, match=r"overwrites: a second accumulate_gradients call did not add"):
        testing.check_accumulates(Overwrites(), model, *b1, SequenceLoss())


def test_reproducibility_check_catches_unseeded_noise(host: PluginHost) -> None:
    _, b1, _ = _batches(host)
    with pytest.raises(AssertionError, match=r"unseeded: same seed gave"):
        testing.check_reproducible(Unseeded, _model_factory(host), b1, SequenceLoss())


def test_state_leak_check_catches_carried_state(host: PluginHost) -> None:
    _, b1, b2 = _batches(host)
    with pytest.raises(AssertionError, match=r"leaky: the gradient of .* changes by .* when batch 1 ran first"):
        testing.check_no_state_leak(Leaky, _model_factory(host), b1, b2, SequenceLoss())


@pytest.mark.parametrize(
    "method,match",
    [
        (EmptyReason(), r"empty_reason: skip\(\) returned ''"),
        (ClaimsRate(), r"claims_rate: loss form 'rate' is not in loss_forms"),
    ],
)
def test_skip_check_catches(host: PluginHost, method: GradientMethod, match: str) -> None:
    model, _, _ = _batches(host)
    with pytest.raises(AssertionError, match=match):
        testing.check_skip_reason(method, model, model.info, SequenceLoss())


@pytest.mark.parametrize(
    "factory,match",
    [
        (FlatBPTT, r"flat_bptt declares O\(1\) but its saved-bytes peak varies"),
        (BudgetBPTT, r"budget_bptt declares a memory budget but its saved-bytes peak grows"),
        (
            lambda: LinearTBPTT(K=4, update="batch"),
            r"linear_tbptt declares O\(T\) but its saved-bytes peak grows 1.00x",
        ),
    ],
)
def test_memory_check_catches_a_wrong_class(host: PluginHost, factory: testing.MethodFactory, match: str) -> None:
    with pytest.raises(AssertionError, match=match):
        testing.check_memory_class(factory, _model_factory(host), Ts=(8, 16, 32))


def test_run_conformance_fails_on_a_broken_method(host: PluginHost) -> None:
    with pytest.raises(AssertionError, match="leaky"):
        testing.run_conformance(Leaky, _model_factory(host), Ts=(8, 16))


class ReadoutOnlyDeclared(ReadoutOnly):
    """ReadoutOnly that declares the hidden layers it leaves frozen."""

    name = "readout_only_declared"

    def frozen_parameters(self, prepared: nn.Module, model: SpikingModel) -> set[str]:
        return {n for n, _ in prepared.named_parameters() if n.startswith("stages.")}


def test_gradient_check_accepts_declared_frozen_parameters(host: PluginHost) -> None:
    model, b1, _ = _batches(host)
    testing.check_gradients_reach_parameters(ReadoutOnlyDeclared(), model, *b1, SequenceLoss())

    class Typo(ReadoutOnly):
        name = "typo"

        def frozen_parameters(self, prepared: nn.Module, model: SpikingModel) -> set[str]:
            return {"stages.9.weight"}

    with pytest.raises(AssertionError, match=r"typo: frozen_parameters names parameters .*stages\.9\.weight"):
        testing.check_gradients_reach_parameters(Typo(), model, *b1, SequenceLoss())
