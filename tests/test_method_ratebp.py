"""Defining properties of ``ratebp`` (research notes §5, §14 V4, V11).

* T = 1: the rate-level gradient is BPTT's (sigmoid α = 4, no BN), for every reset convention;
* the eligibility ``e`` is ``∂r/∂c̄`` for a time-constant input current, so with one hidden layer
  and a static input rate-BP equals BPTT of the rate loss at any T (checks the κ recursions);
* saved bytes flat in T (one rate graph of batch B); it trains; cosine vs BPTT at τ = 2 reported.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from conftest import make_mlp, random_batch

from snnarena.data import DataInfo
from snnarena.factory import build_method, build_model, neuron_factory
from snnarena.host import PluginHost
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock, SavedTensorMeter
from snnarena.model import SpikingModel
from snnarena.reference import collect_gradients, compare_gradients
from snnarena.testing import run_conformance

RATE = SequenceLoss("rate")
RESETS = [
    {"reset": "soft", "detach_reset": True},
    {"reset": "soft", "detach_reset": False, "v_threshold": 0.8},
    {"reset": "hard", "detach_reset": True},
    {"reset": "hard", "detach_reset": False, "v_reset": -0.2},
    {"reset": "soft", "detach_reset": True, "decay_input": True, "tau": 1.5},
]
RESET_IDS = ["soft-detached", "soft", "hard-detached", "hard", "decay-input"]


def active_mlp(
    host: PluginHost,
    *,
    hidden: tuple[int, ...],
    T: int,
    neuron_params: dict[str, Any],
    neuron: str = "lif",
    surrogate: str = "sigmoid",
    dtype: torch.dtype = torch.float64,
    n_in: int = 6,
    seed: int = 0,
) -> SpikingModel:
    """An MLP (sigmoid α = 4 surrogate) with weights scaled so every hidden layer fires at 20-50 %."""
    model = make_mlp(
        host,
        hidden=hidden,
        T=T,
        neuron=neuron,
        neuron_params=neuron_params,
        surrogate=surrogate,
        dtype=dtype,
        n_in=n_in,
        seed=seed,
    )
    with torch.no_grad():
        for stage in model.stages:
            stage.synapse.weight.mul_(3.0)
            stage.synapse.bias.add_(0.5)
    return model


def grads_of(
    host: PluginHost, model: SpikingModel, method: str, params: dict[str, Any], x: torch.Tensor, y: torch.Tensor
) -> tuple[float, dict[str, torch.Tensor]]:
    clone = copy.deepcopy(model)
    value = build_method(host, method, params).accumulate_gradients(clone, x, y, RATE, PhaseClock(enabled=False))
    return value, collect_gradients(clone)


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[n] - b[n]).abs().max()) for n in b)


@pytest.mark.parametrize("step_mode", ["m", "s"])
@pytest.mark.parametrize("neuron_params", RESETS, ids=RESET_IDS)
def test_t1_equals_bptt(host: PluginHost, neuron_params: dict[str, Any], step_mode: str) -> None:
    """V4: T = 1, 3 hidden layers, official sigmoid(α=4) eligibility = the neuron's surrogate."""
    model = active_mlp(host, hidden=(7, 5, 4), T=1, neuron_params=neuron_params)
    x, y = random_batch(T=1)
    ref_loss, ref = grads_of(host, model, "bptt", {}, x, y)
    assert all(float(g.norm()) > 0 for g in ref.values())
    for surrogate in ("neuron", "sigmoid4"):
        value, grads = grads_of(
            host, model, "ratebp", {"step_mode": step_mode, "eligibility_surrogate": surrogate}, x, y
        )
        assert value == pytest.approx(ref_loss, abs=1e-12)
        assert max_diff(grads, ref) <= 1e-10


def test_t1_convnet_equals_bptt(host: PluginHost) -> None:
    torch.manual_seed(0)
    info = DataInfo((1, 6, 6), 3, 1, n_train=0, n_test=0)
    make = neuron_factory(host, "lif", {"tau": 2.0, "detach_reset": True}, "sigmoid")
    model = build_model(host, "convnet", info, make, {"channels": [3], "fc": 5}).double()
    with torch.no_grad():
        for p in model.stages.parameters():
            p.mul_(3.0) if p.dim() > 1 else p.add_(0.5)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 4, 1, 6, 6, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 3, (4,), generator=g)
    _, ref = grads_of(host, model, "bptt", {}, x, y)
    _, grads = grads_of(host, model, "ratebp", {}, x, y)
    assert all(float(v.norm()) > 0 for v in ref.values())
    assert max_diff(grads, ref) <= 1e-10


@pytest.mark.parametrize(
    "neuron, neuron_params", [("lif", p) for p in RESETS] + [("if", {"detach_reset": True})], ids=RESET_IDS + ["if"]
)
def test_static_input_one_layer_equals_bptt(host: PluginHost, neuron: str, neuron_params: dict[str, Any]) -> None:
    """Static input, one hidden layer: e = Σ_t ∂r/∂I[t], so rate-BP ≡ BPTT (rate loss) at T = 8.

    Holds with the neuron's own surrogate (atan here) for every reset convention; this checks the
    κ recursions of the eligibility against autograd.
    """
    T = 8
    params = {"tau": 2.0, **neuron_params} if neuron == "lif" else neuron_params
    model = active_mlp(host, hidden=(9,), T=T, neuron=neuron, neuron_params=params, surrogate="atan")
    x0, y = random_batch(T=1)
    x = x0.expand(T, -1, -1).clone()
    ref_loss, ref = grads_of(host, model, "bptt", {}, x, y)
    with torch.no_grad():
        assert 0.1 < float(model.forward_seq(x).spikes[0].mean()) < 0.9
    for step_mode in ("m", "s"):
        value, grads = grads_of(host, model, "ratebp", {"step_mode": step_mode}, x, y)
        assert value == pytest.approx(ref_loss, abs=1e-12)
        assert max_diff(grads, ref) <= 1e-10
    # the 2-layer case is only an approximation (the 2nd layer's input varies over time)
    deep = active_mlp(host, hidden=(9, 7), T=T, neuron=neuron, neuron_params=params, surrogate="atan")
    _, ref = grads_of(host, deep, "bptt", {}, x, y)
    _, grads = grads_of(host, deep, "ratebp", {}, x, y)
    assert compare_gradients(grads, ref).cosine < 1 - 1e-9


def test_official_grad_scale(host: PluginHost) -> None:
    model = active_mlp(host, hidden=(7, 5), T=4, neuron_params={"tau": 2.0, "detach_reset": True})
    x, y = random_batch(T=4)
    v1, exact = grads_of(host, model, "ratebp", {}, x, y)
    v2, scaled = grads_of(host, model, "ratebp", {"official_grad_scale": True}, x, y)
    assert v1 == v2
    assert max_diff({n: g * 4 for n, g in scaled.items()}, exact) <= 1e-12


def test_cosine_vs_bptt_at_tau2(host: PluginHost) -> None:
    """Sanity check at τ = 2, 3 hidden layers, T = 8, time-varying input: cosine > 0 (printed).

    The neurons use the atan surrogate, so the official sigmoid(α=4) eligibility differs from it.
    """
    model = active_mlp(host, hidden=(7, 5, 4), T=8, neuron_params={"tau": 2.0, "detach_reset": True}, surrogate="atan")
    x, y = random_batch(T=8)
    _, ref = grads_of(host, model, "bptt", {}, x, y)
    for params in ({}, {"eligibility_surrogate": "sigmoid4", "step_mode": "s"}):
        _, grads = grads_of(host, model, "ratebp", params, x, y)
        fid = compare_gradients(grads, ref)
        layers = {n: round(c, 4) for n, c in fid.per_layer.items() if n.endswith("weight")}
        print(f"\nratebp{params} vs bptt, tau=2: cosine={fid.cosine:.4f} norm_ratio={fid.norm_ratio:.4f} {layers}")
        assert fid.cosine > 0


def _peak(host: PluginHost, step_mode: str, T: int) -> int:
    model = make_mlp(host, n_in=20, hidden=(16, 16), T=T, neuron_params={"tau": 2.0, "detach_reset": True})
    x, y = random_batch(T=T, batch=8, n_in=20)
    method = build_method(host, "ratebp", {"step_mode": step_mode})
    with SavedTensorMeter(exclude=list(model.parameters()) + [x]) as meter:
        method.accumulate_gradients(model, x, y, RATE, PhaseClock(enabled=False))
    return meter.peak_bytes


def test_saved_bytes_flat_in_T(host: PluginHost) -> None:
    """V11: one rate graph of batch B whatever T (both step modes)."""
    Ts = (8, 16, 32, 64)
    peaks = {mode: [_peak(host, mode, T) for T in Ts] for mode in ("m", "s")}
    print("\nratebp saved-bytes peak per T", Ts, peaks)
    for mode, values in peaks.items():
        assert min(values) > 0
        assert max(values) / min(values) <= 1.15, mode


def test_ratebp_trains(host: PluginHost) -> None:
    """Loss falls on a small fixed problem (3 Gaussian clusters, direct coding, T = 4)."""
    torch.manual_seed(0)
    T, n_in = 4, 6
    centers = torch.randn(3, n_in) * 1.5
    y = torch.arange(48) % 3
    static = (centers[y] + 0.5 * torch.randn(48, n_in)).abs()
    x = static.expand(T, -1, -1).clone()
    model = active_mlp(
        host, hidden=(16,), T=T, neuron_params={"tau": 2.0, "detach_reset": True}, dtype=torch.float32, n_in=n_in
    )
    method = build_method(host, "ratebp", {})
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    clock = PhaseClock(enabled=False)
    losses = [method.train_step(model, x, y, RATE, optimizer, clock) for _ in range(40)]
    print(f"\nratebp training loss: {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert sum(losses[-5:]) / 5 < 0.6 * losses[0]
    with torch.no_grad():
        accuracy = float((model.forward_seq(x).logits.mean(0).argmax(-1) == y).double().mean())
    assert accuracy > 0.6


def test_skip_reasons(host: PluginHost) -> None:
    method = build_method(host, "ratebp", {})
    mlp = active_mlp(host, hidden=(7,), T=4, neuron_params={})
    info = DataInfo((6,), 3, 4, n_train=0, n_test=0)
    assert method.skip(mlp, info, RATE) is None
    reason = method.skip(mlp, info, SequenceLoss("per_step"))
    assert isinstance(reason, str) and "rate" in reason
    torch.manual_seed(0)
    conv_info = DataInfo((1, 6, 6), 3, 4, n_train=0, n_test=0)
    make = neuron_factory(host, "lif", {}, "sigmoid")
    bn = build_model(host, "convnet", conv_info, make, {"channels": [3], "fc": 5, "norm": "batch"})
    reason = method.skip(bn, conv_info, RATE)
    assert isinstance(reason, str) and "BatchNorm" in reason


@pytest.mark.parametrize(
    "params", [{"step_mode": "m"}, {"step_mode": "s", "eligibility_surrogate": "sigmoid4"}], ids=["m", "s-sigmoid4"]
)
def test_conformance(host: PluginHost, params: dict[str, Any]) -> None:
    """snnarena.testing's checks (rate loss): gradients reach every parameter, accumulate,
    reproducible, no state leak across batches, flat saved bytes (memory_class O(1))."""
    run_conformance(
        lambda: build_method(host, "ratebp", params),
        lambda: active_mlp(host, hidden=(7, 5), T=8, neuron_params={"tau": 2.0, "detach_reset": True}),
    )
