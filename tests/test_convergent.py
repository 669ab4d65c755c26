"""The convergent model family: the ``ep_prototypical`` and ``ep_energy`` models (the
:class:`~snnarena.model.LayeredEPModel` contract) and the BPTT-family methods that train them.

Everything runs in float64. The models' closed-form steps are checked against autograd of their
primitive function ``Φ``; the methods' gradients against autograd through hand-written
relaxation loops of the models' equations, with the ``static_classification`` losses on the last
step's output.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snnarena.data import DataInfo
from snnarena.factory import build_method, build_model, no_neuron
from snnarena.host import PluginHost
from snnarena.loss import LossForm, SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.neuron import Neuron
from snnarena.runner import run_suite
from snnarena.suite import parse_suite
from snnarena.testing import check_resumes_from_state, check_step_matches_sequence, make_batch, run_model_conformance
from snnarena_plugins.convergent_models import LayeredEPModel

T, BATCH, N_IN, N_CLASSES = 9, 4, 6, 3
#: Largest difference accepted between two exact float64 computations (round-off).
EXACT = 1e-12
ACTIVATIONS = ("sigm", "tanh", "hardsigm")
MODELS = ("ep_prototypical", "ep_energy")
LOSSES: tuple[LossForm, ...] = ("final", "final_mse")


def _no_neuron() -> Neuron:
    raise AssertionError("convergent models build no neuron")


def convergent(host: PluginHost, name: str, seed: int = 0, scale: float = 1.0, **params: Any) -> LayeredEPModel:
    """A float64 model on ``[N_IN]`` inputs and ``N_CLASSES`` outputs; weights multiplied by ``scale``."""
    torch.manual_seed(seed)
    info = DataInfo((N_IN,), N_CLASSES, T, n_train=0, n_test=0, task="static_classification")
    model = build_model(host, name, info, _no_neuron, {"hidden": [5, 4], **params}).double()
    assert isinstance(model, LayeredEPModel)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return model


def random_state(model: LayeredEPModel, seed: int = 3) -> list[Tensor]:
    """Leaf states ``[B, n_l]`` in ``[−0.5, 1.5)`` (both sides of hardsigm's kinks), some exact zeros."""
    g = torch.Generator().manual_seed(seed)
    state = [torch.rand(BATCH, n, generator=g, dtype=torch.float64) * 2.0 - 0.5 for n in model.layer_sizes]
    state[0][0] = 0.0  # a unit at rest: hardsigm's ρ' must be 1 there, as in the EP code
    return [s.requires_grad_() for s in state]


def static_input(seed: int = 5) -> Tensor:
    return torch.rand(BATCH, N_IN, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def dphi_ds(model: LayeredEPModel, x: Tensor, state: list[Tensor]) -> list[Tensor]:
    return list(torch.autograd.grad(model.phi(x, state).sum(), state))


def gap(got: list[Tensor], expected: list[Tensor]) -> float:
    """The largest entry-wise difference between two states (same layers, same shapes)."""
    assert len(got) == len(expected)
    assert all(a.shape == b.shape for a, b in zip(got, expected, strict=True))
    return max(float((a - b).detach().abs().max()) for a, b in zip(got, expected, strict=True))


def assert_close(got: list[Tensor], expected: list[Tensor], tol: float = EXACT) -> None:
    assert gap(got, expected) <= tol


# -- the defining property: a step is (a function of) ∂Φ/∂s --------------------------------------
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("hidden", [[5], [5, 4, 3]])
@pytest.mark.parametrize("dt", [1.0, 0.3])
def test_prototypical_step_is_rho_of_dphi_ds(host, activation, hidden, dt):
    model = convergent(host, "ep_prototypical", hidden=hidden, activation=activation, dt=dt)
    x, s = static_input(), random_state(model)
    rho = model.activation.rho
    # Φ = ½(1−dt)‖s‖² + dt Ψ, so the drive ∂Ψ/∂s is (∂Φ/∂s − (1−dt)s)/dt
    drives = [(g - (1 - dt) * s_l) / dt for s_l, g in zip(s, dphi_ds(model, x, s), strict=True)]
    expected = [(1 - dt) * s_l + dt * rho(h) for s_l, h in zip(s, drives, strict=True)]
    assert_close(model.dynamics(x, s), expected)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("hidden", [[5], [5, 4, 3]])
def test_energy_step_is_dphi_ds(host, activation, hidden):
    model = convergent(host, "ep_energy", hidden=hidden, activation=activation, dt=0.3)
    x, s = static_input(), random_state(model)
    assert_close(model.dynamics(x, s), dphi_ds(model, x, s))
    # and the step is the Euler step of the energy's gradient flow
    dE = torch.autograd.grad(model.energy(x, s).sum(), s)
    assert_close(model.dynamics(x, s), [s_l - 0.3 * g for s_l, g in zip(s, dE, strict=True)])


def test_energy_clamp_keeps_the_state_in_the_unit_box_and_breaks_the_identity(host):
    model = convergent(host, "ep_energy", clamp=True, dt=1.0, scale=5.0)
    x, s = static_input(), random_state(model)
    stepped = model.dynamics(x, s)
    assert all(bool(((t >= 0) & (t <= 1)).all()) for t in stepped)
    assert gap(stepped, dphi_ds(model, x, s)) > 1e-3


def test_hardsigm_energy_model_leaves_rest(host):
    """ρ'(0) = 1 (the EP code's mask): a clamp-derivative of 0 at the bound would freeze s at rest."""
    model = convergent(host, "ep_energy", activation="hardsigm")
    s = model.relax(static_input(), 3)
    assert all(bool((t != 0).any()) for t in s)


def test_prototypical_parameter_gradients_are_the_ep_terms(host):
    """``∂Φ/∂W_l = Σ_b s_{l+1} s_lᵀ`` (``s_0 = x``) and ``∂Φ/∂b_l = Σ_b s_l``: the tied weight's
    two uses (``W_l`` upwards, ``W_lᵀ`` downwards) appear once in Φ."""
    model = convergent(host, "ep_prototypical", hidden=[5, 4, 3])
    x, s = static_input(), [t.detach() for t in random_state(model)]
    weights = [w.weight for w in model.linears]
    biases = [w.bias for w in model.linears]
    grads = torch.autograd.grad(model.phi(x, s).sum(), [*weights, *biases])
    below = [x, *s[:-1]]
    assert_close(list(grads[: len(weights)]), [up.T @ low for up, low in zip(s, below, strict=True)])
    assert_close(list(grads[len(weights) :]), [up.sum(0) for up in s])


def test_energy_parameter_gradients_are_dt_times_the_ep_terms(host):
    model = convergent(host, "ep_energy", dt=0.3)
    x, s = static_input(), [t.detach() for t in random_state(model)]
    rho = model.activation.rho
    weights = [w.weight for w in model.linears]
    grads = torch.autograd.grad(model.phi(x, s).sum(), weights)
    below = [x, *(rho(t) for t in s[:-1])]
    assert_close(list(grads), [0.3 * rho(up).T @ low for up, low in zip(s, below, strict=True)])


# -- relaxation ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_relax_with_a_nudge_equals_manual_steps(host, name):
    model = convergent(host, name, dt=0.5)
    x = static_input()
    target = F.one_hot(torch.arange(BATCH) % N_CLASSES, N_CLASSES).double()

    def nudge(o: Tensor) -> Tensor:
        return 0.1 * (target - o)

    start = model.relax(x, 4)
    s = list(start)
    for _ in range(5):
        new = model.dynamics(x, s)
        new[-1] = new[-1] + nudge(s[-1])
        s = new
    assert_close(model.relax(x, 5, state=start, nudge=nudge), s)
    assert_close(model.relax(x, 5, state=start), model.relax(x, 9))  # no nudge: the free phase goes on
    assert gap(s, model.relax(x, 9)) > 1e-3  # the nudge matters


@pytest.mark.parametrize("name", MODELS)
def test_free_phase_reaches_a_fixed_point_and_the_nudge_moves_the_output_toward_the_target(host, name):
    model = convergent(host, name, scale=0.5)
    x = static_input()
    with torch.no_grad():
        fixed = model.relax(x, 300)
        after = model.dynamics(x, fixed)
        assert gap(after, fixed) < 1e-6
        target = F.one_hot(torch.arange(BATCH) % N_CLASSES, N_CLASSES).double()
        beta = 0.05 * model.dt  # the EP code's nudge: β (y − o) inside the dt bracket
        nudged = model.relax(x, 300, state=fixed, nudge=lambda o: beta * (target - o))
    before_error = (fixed[-1] - target).norm(dim=-1)
    after_error = (nudged[-1] - target).norm(dim=-1)
    assert bool((after_error < before_error).all())
    assert float((nudged[-1] - fixed[-1]).abs().max()) < 0.1  # a small β moves it a little


# -- the BPTT family on convergent models ------------------------------------------------------------
def relaxation_reference(model: LayeredEPModel, x: Tensor, K: int | None = None) -> Tensor:
    """The output layer ``[T, B, C]`` over ``T = len(x)`` steps from rest, written out from the
    weights (not through ``model.dynamics``); ``K``: the state is detached ``K`` steps before the end."""
    rho = model.activation.rho
    rho_prime = model.activation.rho_prime
    dt, energy = model.dt, model.name == "ep_energy"
    W = [w.weight for w in model.linears]
    b = [w.bias for w in model.linears]
    s = [x.new_zeros(x.shape[1], n) for n in model.layer_sizes]
    outputs = []
    for t in range(x.shape[0]):
        if K is not None and t == x.shape[0] - K:
            s = [v.detach() for v in s]
        r = [rho(v) for v in s] if energy else s
        below = [x[t], *r[:-1]]
        new = []
        for l, v in enumerate(s):
            h = below[l] @ W[l].T + b[l]
            if l + 1 < len(s):
                h = h + r[l + 1] @ W[l + 1]
            new.append((1 - dt) * v + dt * (rho_prime(v) * h if energy else rho(h)))
        s = new
        outputs.append(s[-1])
    return torch.stack(outputs)


def grads(model: nn.Module) -> dict[str, Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def max_difference(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[n] - b[n]).abs().max()) for n in a)


def reference_grads(model: LayeredEPModel, x: Tensor, y: Tensor, loss: SequenceLoss, K: int | None = None):
    model.zero_grad(set_to_none=True)
    value = loss.full(relaxation_reference(model, x, K), y)
    value.backward()
    g = grads(model)
    assert g.keys() == {n for n, _ in model.named_parameters()}
    assert all(bool((t != 0).any()) for t in g.values())
    return float(value.detach()), g


def method_grads(host, model, method: str, params: dict[str, Any], x: Tensor, y: Tensor, loss: SequenceLoss):
    model.zero_grad(set_to_none=True)
    value = build_method(host, method, params).accumulate_gradients(model, x, y, loss, PhaseClock(enabled=False))
    return value, grads(model)


def static_batch(model: LayeredEPModel) -> tuple[Tensor, Tensor]:
    """A static batch as the data delivers it: one input ``[B, N_IN]`` broadcast over ``T`` steps."""
    x, y = make_batch(model, 1, BATCH)
    return x[0].unsqueeze(0).expand(T, *x.shape[1:]), y


def bptt_case(host, name: str, form: LossForm):
    model = convergent(host, name, dt=0.5, activation="tanh")
    x, y = static_batch(model)
    loss = SequenceLoss(form, "static_classification")
    return model, x, y, loss


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("form", LOSSES)
def test_bptt_equals_autograd_through_the_relaxation(host, name, form):
    model, x, y, loss = bptt_case(host, name, form)
    value, reference = reference_grads(model, x, y, loss)
    for step_mode in ("multi", "single"):
        got_value, got = method_grads(host, model, "bptt", {"step_mode": step_mode}, x, y, loss)
        assert got_value == pytest.approx(value, abs=EXACT)
        assert max_difference(got, reference) <= EXACT


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("form", LOSSES)
def test_tbptt_is_bptt_when_K_covers_T_and_the_K_step_truncation_otherwise(host, name, form):
    model, x, y, loss = bptt_case(host, name, form)
    _, full = reference_grads(model, x, y, loss)
    _, got = method_grads(host, model, "tbptt", {"K": T}, x, y, loss)
    assert max_difference(got, full) <= EXACT
    K = 3  # divides T: the last segment is the last K steps, detached from the K-step prefix
    _, truncated = reference_grads(model, x, y, loss, K=K)
    _, got = method_grads(host, model, "tbptt", {"K": K}, x, y, loss)
    assert max_difference(got, truncated) <= EXACT
    assert max_difference(truncated, full) > 1e-6  # the truncation matters on this model


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("params", [{}, {"policy": "msm", "budget_slots": 4}, {"policy": "sqrt"}])
def test_checkpointed_bptt_equals_bptt(host, name, params):
    model, x, y, loss = bptt_case(host, name, "final_mse")
    _, reference = reference_grads(model, x, y, loss)
    _, got = method_grads(host, model, "checkpointed_bptt", params, x, y, loss)
    assert max_difference(got, reference) <= EXACT


# -- model conformance -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("check", [check_step_matches_sequence, check_resumes_from_state])
def test_sequence_checks_hold(host, name, check: Callable[..., None]):
    model = convergent(host, name, dt=0.5)
    check(model, make_batch(model, T, BATCH)[0])


@pytest.mark.parametrize("name", MODELS)
def test_model_conformance(host, name):
    run_model_conformance(lambda: convergent(host, name, dt=0.5))


# -- a whole cell ----------------------------------------------------------------------------------------
CONVERGENT_SUITE = """
name = "convergent"
[train]
steps = 40
batch_size = 32
loss = "final_mse"
optimizer = { name = "adam", lr = 1e-2 }
[grid]
T = [15]
[[methods]]
name = "bptt"
[[models]]
name = "ep_prototypical"
params = { hidden = [64], dt = 0.5 }
[[datasets]]
name = "digits"
params = { encoding = "static" }
"""


def test_bptt_trains_ep_prototypical_on_static_digits(host, tmp_path):
    outcome = run_suite(parse_suite(CONVERGENT_SUITE, host, "convergent.toml"), host, results_root=tmp_path)
    rows = outcome.results
    assert len(rows) == 1
    row = rows.iloc[0]
    assert row["status"] == "done", row["reason"]
    assert row["test_accuracy"] > 0.5  # chance: 0.1; about 0.9 after 40 steps


# -- the convolutional prototypical model ------------------------------------------------------------
def conv_model(host, **params):
    torch.manual_seed(0)
    info = DataInfo((1, 8, 8), 3, 6, n_train=0, n_test=0, task="static_classification")
    return build_model(
        host, "ep_conv", info, no_neuron("ep_conv"), {"channels": [3, 4], "kernel": 3, **params}
    ).double()


def conv_coupling_by_hand(model, x, s):
    """Ψ written out with explicit max-pooling and convolutions (the docstring's formula)."""
    c1, c2, fc = model.synapses
    s1, s2, out = s[0].unflatten(1, (3, 4, 4)), s[1].unflatten(1, (4, 2, 2)), s[2]
    pool = torch.nn.functional.max_pool2d
    psi = (pool(c1(x), 2) * s1).sum((1, 2, 3)) + (pool(c2(s1), 2) * s2).sum((1, 2, 3))
    return psi + (fc(s2.flatten(1)) * out).sum(-1)


@pytest.mark.parametrize("dt", [1.0, 0.4])
def test_conv_step_is_rho_of_the_coupling_gradient(host, dt):
    model = conv_model(host, dt=dt, activation="tanh")
    g = torch.Generator().manual_seed(3)
    x = torch.rand(5, 1, 8, 8, generator=g, dtype=torch.float64)
    s = [torch.rand(5, n, generator=g, dtype=torch.float64) for n in model.layer_sizes]
    leaves = [t.clone().requires_grad_() for t in s]
    drives = torch.autograd.grad(conv_coupling_by_hand(model, x, leaves).sum(), leaves)
    expected = [(1 - dt) * s_l + dt * torch.tanh(h) for s_l, h in zip(s, drives, strict=True)]
    with torch.no_grad():
        assert_close(model.dynamics(x, s), expected)  # drives computed with gradients off too
    assert_close(model.dynamics(x, s), expected)
    half = 0.5 * sum((t**2).sum(-1) for t in s)
    assert_close([model.phi(x, s)], [(1 - dt) * half + dt * conv_coupling_by_hand(model, x, s)])


def test_bptt_trains_the_conv_model_through_its_autograd_drives(host):
    model = conv_model(host)
    g = torch.Generator().manual_seed(4)
    x = torch.rand(5, 1, 8, 8, generator=g, dtype=torch.float64).expand(6, 5, 1, 8, 8)  # static input
    y = torch.randint(0, 3, (5,), generator=g)
    loss = SequenceLoss("final_mse", "static_classification")
    value = build_method(host, "bptt", {}).accumulate_gradients(model, x, y, loss, PhaseClock(enabled=False))
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert all(float(v.abs().sum()) > 0 for v in grads.values()) and math.isfinite(value)
    model.zero_grad()
    manual = model.rest(x[0], model.init_state())
    for _ in range(6):
        manual = model.dynamics(x[0], manual)
    loss.full(manual[-1].unsqueeze(0), y).backward()
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, grads[n], rtol=1e-10, atol=1e-12), n
    run_model_conformance(lambda: conv_model(host))
