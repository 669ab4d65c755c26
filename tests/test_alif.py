"""The adaptive LIF neuron (``alif``), LSNNs (``rsnn`` + ``alif``) and the ``bellec`` surrogate.

Values are checked against a trace written out by hand, the neuron without adaptation against
``lif``, and BPTT gradients of an LSNN against autograd through a hand-written unroll (float64).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from snnarena.data import DataInfo
from snnarena.factory import build_method, build_model, build_surrogate, neuron_factory
from snnarena.host import PluginHost
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.model import SpikingModel
from snnarena.suite import SuiteError, parse_suite
from snnarena.testing import make_batch, run_conformance, run_model_conformance

T, BATCH, N_IN, N_CLASSES = 8, 4, 6, 3
EXACT = 1e-12
#: An LSNN layer: half of the neurons adapt, fast adaptation so that it acts within T steps.
LSNN = {"v_threshold": 0.25, "adaptive_fraction": 0.5, "tau_adapt": 5.0, "beta": 1.5, "refractory": 1}


def alif(host: PluginHost, surrogate: str = "atan", **params: Any) -> Any:
    return neuron_factory(host, "alif", params, surrogate)()


def run(neuron: Any, x: Tensor) -> tuple[Tensor, list[Any]]:
    """Spikes ``[T, ...]`` and the state after every step."""
    state, spikes, states = neuron.init_state(x[0]), [], []
    for x_t in x.unbind(0):
        s, state = neuron.step(x_t, state)
        spikes.append(s)
        states.append(state)
    return torch.stack(spikes), states


# -- the equations, by hand -------------------------------------------------------------------------
# λ = 0.5 (τ = 2), ρ = 0.5 (τ_a = 1/ln 2), V_th = 1, β = 2, refractory 1, f = 0.5 of N = 2: neuron 0
# adapts, neuron 1 does not. Per step: H = 0.5 V + X; A = 1 + β_j b; S = Θ(H − A)·1[r = 0];
# V = H − A S; b = 0.5 b + 0.5 m_j S; r = max(r − 1, 0) + S.
HAND_X = [[1.2, 1.5], [1.2, 1.5], [1.2, 0.2], [1.2, 1.5], [0.0, 1.5], [1.5, 1.5]]
HAND = [  # per step, per neuron: (H, A, S, V, b, r)
    [(1.2, 1.0, 1, 0.2, 0.5, 1), (1.5, 1.0, 1, 0.5, 0.0, 1)],
    [(1.3, 2.0, 0, 1.3, 0.25, 0), (1.75, 1.0, 0, 1.75, 0.0, 0)],  # neuron 1: H ≥ A, but refractory
    [(1.85, 1.5, 1, 0.35, 0.625, 1), (1.075, 1.0, 1, 0.075, 0.0, 1)],
    [(1.375, 2.25, 0, 1.375, 0.3125, 0), (1.5375, 1.0, 0, 1.5375, 0.0, 0)],  # neuron 0: adaptation blocks
    [(0.6875, 1.625, 0, 0.6875, 0.15625, 0), (2.26875, 1.0, 1, 1.26875, 0.0, 1)],
    [(1.84375, 1.3125, 1, 0.53125, 0.578125, 1), (2.134375, 1.0, 0, 2.134375, 0.0, 0)],
]
HAND_PARAMS = {"tau": 2.0, "tau_adapt": 1 / math.log(2), "beta": 2.0, "adaptive_fraction": 0.5, "refractory": 1}


def test_alif_follows_a_hand_computed_trace(host):
    neuron = alif(host, **HAND_PARAMS)
    x = torch.tensor(HAND_X, dtype=torch.float64).unsqueeze(1)  # [T, B=1, N=2]
    spikes, states = run(neuron, x)
    expected = torch.tensor(HAND, dtype=torch.float64)  # [T, N, 6]
    assert spikes[:, 0].tolist() == expected[..., 2].tolist()
    v = torch.stack([s.v[0] for s in states])
    b = torch.stack([s.b[0] for s in states])
    r = torch.stack([s.refractory[0] for s in states])
    torch.testing.assert_close(v, expected[..., 3], rtol=0, atol=EXACT)
    torch.testing.assert_close(b, expected[..., 4], rtol=0, atol=EXACT)
    assert r.tolist() == expected[..., 5].tolist()
    thresholds = 1.0 + neuron.betas(x[0]) * torch.cat([torch.zeros(1, 2, dtype=x.dtype), b[:-1]])
    torch.testing.assert_close(thresholds, expected[..., 1], rtol=0, atol=EXACT)
    assert neuron.leak == 0.5 and neuron.rho == pytest.approx(0.5, abs=1e-15)


def test_refractory_steps_pass_no_gradient(host):
    """At step 1 neuron 1 is above threshold but refractory: its spike is 0 and so is ∂S/∂X."""
    x = torch.tensor(HAND_X, dtype=torch.float64).unsqueeze(1).requires_grad_(True)
    spikes, _ = run(alif(host, **HAND_PARAMS), x)
    (grad,) = torch.autograd.grad(spikes[1, 0, 1], x)
    assert spikes[1, 0, 1] == 0 and grad[1, 0, 1] == 0
    free = dict(HAND_PARAMS, refractory=0)
    spikes, _ = run(alif(host, **free), x)
    (grad,) = torch.autograd.grad(spikes[1, 0, 1], x)
    assert spikes[1, 0, 1] == 1 and grad[1, 0, 1] > 0  # without the refractory period it fires


# -- without adaptation it is lif --------------------------------------------------------------------
@pytest.mark.parametrize("decay_input", [False, True])
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("no_adaptation", [{"beta": 0.0}, {"adaptive_fraction": 0.0}], ids=["beta0", "f0"])
def test_alif_without_adaptation_is_soft_reset_lif(host, decay_input, detach_reset, no_adaptation):
    common = {"tau": 3.0, "v_threshold": 0.7, "decay_input": decay_input, "detach_reset": detach_reset}
    lif = neuron_factory(host, "lif", {**common, "reset": "soft"}, "sigmoid")()
    adaptive = neuron_factory(host, "alif", {**common, **no_adaptation}, "sigmoid")()
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(20, 3, 5, generator=g, dtype=torch.float64) * 1.5).requires_grad_(True)
    weights = torch.randn(20, 3, 5, generator=g, dtype=torch.float64)
    s_lif, state_lif = lif.forward_seq(x)
    s_alif, state_alif = adaptive.forward_seq(x)
    assert 0 < float(s_lif.detach().mean()) < 1
    assert torch.equal(s_lif, s_alif) and torch.equal(state_lif.v, state_alif.v)
    (g_lif,) = torch.autograd.grad((s_lif * weights).sum(), x)
    (g_alif,) = torch.autograd.grad((s_alif * weights).sum(), x)
    torch.testing.assert_close(g_lif, g_alif, rtol=0, atol=1e-12)  # two hand-written backwards: round-off only
    assert adaptive.leak == lif.leak


def test_adaptation_changes_the_dynamics(host):
    """The control for the test above: the same input with β > 0 fires less."""
    x = torch.rand(20, 3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1.5
    plain, _ = alif(host, beta=0.0).forward_seq(x)
    adapted, _ = alif(host, beta=1.8, tau_adapt=10.0).forward_seq(x)
    assert adapted.sum() < plain.sum()


# -- which neurons adapt -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fraction", "n", "n_adaptive"),
    [(0.0, 7, 0), (0.3, 7, 2), (0.5, 7, 4), (0.9, 7, 6), (1.0, 7, 7), (0.5, 5, 2)],  # Python's round: 2.5 → 2
)
def test_exactly_the_first_round_fN_neurons_adapt(host, fraction, n, n_adaptive):
    neuron = alif(host, adaptive_fraction=fraction)
    x = torch.full((3, 2, n), 5.0, dtype=torch.float64)  # every neuron spikes at every step
    spikes, states = run(neuron, x)
    assert bool(spikes.all())
    adapting = (states[-1].b != 0).all(dim=0)
    assert adapting.tolist() == [j < n_adaptive for j in range(n)]
    assert neuron.n_adaptive(n) == n_adaptive
    assert neuron.betas(x[0]).tolist() == [1.8] * n_adaptive + [0.0] * (n - n_adaptive)


# -- LSNN: rsnn with alif ----------------------------------------------------------------------------
def lsnn(host: PluginHost, seed: int = 0, **params: Any) -> SpikingModel:
    torch.manual_seed(seed)
    info = DataInfo((N_IN,), N_CLASSES, T, n_train=0, n_test=0)
    make = neuron_factory(host, "alif", {**LSNN, **params}, "bellec", {"width": LSNN["v_threshold"]})
    return build_model(host, "rsnn", info, make, {"hidden": [8, 6]}).double()


def lsnn_reference(model: SpikingModel, x: Tensor) -> Tensor:
    """Logits ``[T, B, C]`` of an LSNN written out (β_j, ρ, refractory mask as in the docstring)."""
    h = x
    for stage in model.stages:
        W, bias, R = stage.synapse.weight, stage.synapse.bias, stage.recurrent.weight
        neuron, n = stage.neuron, stage.synapse.weight.shape[0]
        beta = torch.tensor([LSNN["beta"] if j < round(n * LSNN["adaptive_fraction"]) else 0.0 for j in range(n)])
        rho, th = math.exp(-1 / LSNN["tau_adapt"]), LSNN["v_threshold"]
        v, b, r, s = (x.new_zeros(x.shape[1], n) for _ in range(4))
        outputs = []
        for t in range(x.shape[0]):
            charge = neuron.leak * v + h[t] @ W.T + bias + s @ R.T
            threshold = th + beta.to(x) * b
            s = neuron.surrogate(charge - threshold) * (r == 0)
            v = charge - threshold * s
            b = rho * b + (1 - rho) * s * (beta > 0)
            r = (r - 1).clamp_min(0) + LSNN["refractory"] * s.detach()
            outputs.append(s)
        h = torch.stack(outputs)
    return model.readout(h)


def method_grads(host: PluginHost, model: SpikingModel, method: str, params: dict[str, Any], x: Tensor, y: Tensor):
    model.zero_grad(set_to_none=True)
    m = build_method(host, method, params)
    m.accumulate_gradients(model, x, y, SequenceLoss("per_step"), PhaseClock(enabled=False))
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def max_difference(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[n] - b[n]).abs().max()) for n in a)


def test_bptt_on_an_lsnn_equals_the_hand_written_unroll(host):
    model = lsnn(host)
    x, y = make_batch(model, T, BATCH)
    bptt = method_grads(host, model, "bptt", {}, x, y)
    model.zero_grad(set_to_none=True)
    SequenceLoss("per_step").full(lsnn_reference(model, x), y).backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert all(bool((g != 0).any()) for g in reference.values())
    assert max_difference(bptt, reference) <= EXACT
    single = method_grads(host, model, "bptt", {"step_mode": "single"}, x, y)
    assert max_difference(single, reference) <= EXACT


def test_lsnn_gradient_flows_through_the_adaptation(host):
    """Cutting b's gradient path (β_j b with b detached) changes the BPTT gradient."""
    model = lsnn(host)
    x, y = make_batch(model, T, BATCH)
    full = method_grads(host, model, "bptt", {}, x, y)
    for stage in model.stages:
        stage.neuron.step = _detached_adaptation(stage.neuron)
    cut = method_grads(host, model, "bptt", {}, x, y)
    assert max_difference(full, cut) > 1e-6


def _detached_adaptation(neuron: Any) -> Any:
    step = type(neuron).step

    def detached(x: Tensor, state: Any) -> Any:
        return step(neuron, x, state._replace(b=state.b.detach()))

    return detached


@pytest.mark.parametrize("K", [T, 3])
def test_tbptt_on_an_lsnn(host, K):
    model = lsnn(host)
    x, y = make_batch(model, T, BATCH)
    bptt = method_grads(host, model, "bptt", {}, x, y)
    tbptt = method_grads(host, model, "tbptt", {"K": K}, x, y)
    if K >= T:
        assert max_difference(tbptt, bptt) <= EXACT
    else:
        assert max_difference(tbptt, bptt) > 1e-6


def test_lsnn_passes_the_recurrent_model_checks(host):
    run_model_conformance(lambda: lsnn(host))


@pytest.mark.parametrize(("method", "params"), [("bptt", {}), ("tbptt", {"K": 4})])
def test_exact_methods_conform_on_an_lsnn(host, method, params):
    run_conformance(lambda: build_method(host, method, params), lambda: lsnn(host), Ts=(8, 16, 32))


# -- suite validation --------------------------------------------------------------------------------
LSNN_SUITE = """
name = "lsnn"
[train]
steps = 1
batch_size = 8
[grid]
T = [8]
[[methods]]
name = "bptt"
[[models]]
name = "rsnn"
params = {{ hidden = [16] }}
neuron = {{ name = "alif", params = {{ {params} }}, surrogate = {{ name = "bellec", params = {{ width = 0.5 }} }} }}
[[datasets]]
name = "seq_digits"
"""


def test_an_lsnn_suite_is_valid(host):
    text = LSNN_SUITE.format(params="v_threshold = 0.5, adaptive_fraction = 0.4, tau_adapt = 50.0, refractory = 2")
    (cell,) = parse_suite(text, host, "lsnn.toml").cells
    assert cell.neuron == "alif" and cell.neuron_params["adaptive_fraction"] == 0.4


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("adaptive_fraction = 1.5", "adaptive_fraction: expected a finite number in [0.0, 1.0], got 1.5"),
        ("adaptive_fraction = -0.1", "adaptive_fraction: expected a finite number in [0.0, 1.0], got -0.1"),
        ("refractory = -1", "refractory: expected an integer >= 0, got -1"),
        ("refractory = 1.5", "refractory: expected an integer >= 0, got 1.5"),
        ("tau_adapt = 0.5", "tau_adapt: expected a finite number >= 1.0, got 0.5"),
        ("beta = -1.0", "beta: expected a finite number >= 0.0, got -1.0"),
    ],
)
def test_bad_alif_parameters_fail_suite_validation(host, params, message):
    with pytest.raises(SuiteError) as info:
        parse_suite(LSNN_SUITE.format(params=params), host, "lsnn.toml")
    assert f"lsnn.toml: models[0].neuron.params.{message}" in str(info.value)


# -- the bellec surrogate ----------------------------------------------------------------------------
GRID = torch.linspace(-3, 3, 2001, dtype=torch.float64)


@pytest.mark.parametrize("params", [{}, {"gamma": 0.3, "width": 0.5}, {"gamma": 1.0, "width": 2.0}])
def test_bellec_backward_is_the_derivative_of_its_primitive(host, params):
    surrogate = build_surrogate(host, "bellec", params)
    x = GRID.clone().requires_grad_(True)
    surrogate(x).sum().backward()
    p = GRID.clone().requires_grad_(True)
    surrogate.primitive(p).sum().backward()
    torch.testing.assert_close(x.grad, p.grad, atol=1e-10, rtol=1e-8)
    assert surrogate(torch.tensor([-1.0, -1e-9, 0.0, 2.0])).tolist() == [0.0, 0.0, 1.0, 1.0]


def test_bellec_is_the_lsnn_pseudo_derivative(host):
    """dS/dx = γ max(0, 1 − |v_s|) / V_th with v_s = x / V_th (Bellec et al.'s normalisation)."""
    v_th, gamma = 0.5, 0.3
    surrogate = build_surrogate(host, "bellec", {"gamma": gamma, "width": v_th})
    v_s = GRID / v_th
    expected = gamma * (1 - v_s.abs()).clamp_min(0) / v_th
    torch.testing.assert_close(surrogate.derivative(GRID), expected, rtol=0, atol=1e-15)
    assert float(surrogate.derivative(torch.tensor(0.0))) == pytest.approx(gamma / v_th)
    triangle = build_surrogate(host, "triangle", {"alpha": 1 / v_th})  # the same shape, γ = 1
    torch.testing.assert_close(triangle.derivative(GRID) * gamma, expected, rtol=0, atol=1e-15)
