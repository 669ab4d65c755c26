"""Defining properties of ``eprop`` (research notes §11 e-prop, §14 V9 and V11), in float64.

* with symmetric feedback e-prop equals BPTT's factorised gradient — autograd BPTT of the same
  network with ``detach_reset`` and the recurrent spikes ``S[t−1]`` detached — for lif (soft and
  hard reset), if and alif (with a LIF/ALIF mix, ``decay_input`` and refractory steps), on sequence
  classification and both per-step tasks; full BPTT differs (the test can tell them apart);
* the plugin's eligibility traces equal a hand-written per-synapse recursion and autograd's
  ``dS_j[t]/dθ_ji`` on a 3-neuron network;
* saved bytes flat in T for eprop, linear for BPTT; conformance; skip reasons;
* random feedback: reproducible per seed, not symmetric, still learns.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from snnarena.data import DataInfo
from snnarena.errors import ConfigurationError
from snnarena.factory import build_method, build_model, neuron_factory
from snnarena.host import PluginHost
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.model import RecurrentState, SpikingModel
from snnarena.params import ParamError
from snnarena.reference import collect_gradients, compare_gradients
from snnarena.runner import run_suite
from snnarena.suite import parse_suite
from snnarena.testing import make_batch, make_targets, run_conformance, saved_bytes_over_T
from snnarena_plugins.eprop import (
    EligibilityTraces,
    RandomFeedback,
    TrainedLayer,
)

T, BATCH, N_IN, N_CLASSES = 8, 4, 6, 3
EXACT = 1e-10
QUIET = PhaseClock(enabled=False)

#: Neuron settings, each with a low threshold so that the layer spikes on inputs in [0, 2).
NEURONS: dict[str, tuple[str, dict[str, Any]]] = {
    "lif": ("lif", {"v_threshold": 0.25, "tau": 2.0}),
    "lif-hard-decay-input": ("lif", {"v_threshold": 0.1, "tau": 3.0, "reset": "hard", "decay_input": True}),
    "if": ("if", {"v_threshold": 0.5}),
    "alif-mix": ("alif", {"v_threshold": 0.25, "tau": 3.0, "beta": 0.3, "tau_adapt": 5.0, "adaptive_fraction": 0.6}),
    "alif-refractory": (
        "alif",
        {"v_threshold": 0.05, "tau": 4.0, "beta": 0.2, "tau_adapt": 8.0, "refractory": 2, "decay_input": True},
    ),
}


def rsnn(
    host: PluginHost,
    neuron: str = "lif",
    *,
    detach_reset: bool = True,
    n_out: int = N_CLASSES,
    seed: int = 0,
    **model_params: Any,
) -> SpikingModel:
    kind, params = NEURONS[neuron]
    torch.manual_seed(seed)
    info = DataInfo((N_IN,), n_out, T, n_train=0, n_test=0)
    make = neuron_factory(host, kind, {**params, "detach_reset": detach_reset}, "atan")
    return build_model(host, "rsnn", info, make, {"hidden": [7], **model_params}).double()


def eprop_grads(
    host: PluginHost, model: SpikingModel, x: Tensor, y: Tensor, loss: SequenceLoss, **params: Any
) -> tuple[float, dict[str, Tensor]]:
    model.zero_grad(set_to_none=True)
    method = build_method(host, "eprop", params)
    value = method.accumulate_gradients(method.prepare(model), x, y, loss, QUIET)
    return value, collect_gradients(model)


def factorised_bptt_grads(model: SpikingModel, x: Tensor, y: Tensor, loss: SequenceLoss) -> dict[str, Tensor]:
    """Autograd BPTT with the recurrent spikes ``S[t−1]`` detached (the reset's spike is detached
    by the model's ``detach_reset = true``): the gradient e-prop factorises exactly."""
    model.zero_grad(set_to_none=True)
    stage = model.stages[0]
    state: RecurrentState | None = None
    logits = []
    for x_t in x.unbind(0):
        if state is not None:
            state = state._replace(output=state.output.detach())
        s, state = stage.step(x_t, state)
        logits.append(model.readout(s))
    loss.full(torch.stack(logits), y).backward()
    return collect_gradients(model)


def bptt_grads(host: PluginHost, model: SpikingModel, x: Tensor, y: Tensor, loss: SequenceLoss) -> dict[str, Tensor]:
    model.zero_grad(set_to_none=True)
    build_method(host, "bptt").accumulate_gradients(model, x, y, loss, QUIET)
    return collect_gradients(model)


def max_diff(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[n] - b[n]).abs().max()) for n in a)


def task_batch(model: SpikingModel, task: str) -> tuple[Tensor, Tensor, SequenceLoss]:
    x, y = make_batch(model, T, BATCH)
    if task != "classification":
        y = make_targets(task, T, BATCH, model.info.n_classes)
        y = y.to(x.dtype) if y.is_floating_point() else y
    return x, y, SequenceLoss("per_step", task)


# -- e-prop = BPTT's factorised gradient ------------------------------------------------------------
@pytest.mark.parametrize("task", ["classification", "per_step_classification", "per_step_regression"])
@pytest.mark.parametrize("neuron", sorted(NEURONS))
def test_symmetric_eprop_equals_factorised_bptt(host: PluginHost, neuron: str, task: str) -> None:
    model = rsnn(host, neuron)
    x, y, loss = task_batch(model, task)
    reference = factorised_bptt_grads(model, x, y, loss)
    for name, g in reference.items():
        assert (g != 0).any(), f"{name}: the reference gradient is zero, the test would prove nothing"
    with torch.no_grad():
        expected = float(loss.full(model.forward_seq(x).logits, y))
    value, grads = eprop_grads(host, model, x, y, loss)
    assert value == pytest.approx(expected, rel=1e-12)
    assert max_diff(grads, reference) <= EXACT


@pytest.mark.parametrize("neuron", ["lif", "alif-mix"])
def test_eprop_drops_the_recurrent_path_of_full_bptt(host: PluginHost, neuron: str) -> None:
    """The approximation is real: full BPTT's input and recurrent gradients differ from e-prop's."""
    model = rsnn(host, neuron)
    x, y, loss = task_batch(model, "classification")
    _, grads = eprop_grads(host, model, x, y, loss)
    cos = compare_gradients(grads, bptt_grads(host, model, x, y, loss)).per_layer
    assert cos["stages.0.recurrent.weight"] < 1 - 1e-6
    assert cos["stages.0.synapse.weight"] < 1 - 1e-6
    assert cos["readout.weight"] == pytest.approx(1.0, abs=1e-12)  # the readout's gradient is exact


@pytest.mark.parametrize("neuron", ["lif", "lif-hard-decay-input", "alif-mix"])
def test_without_recurrence_eprop_is_bptt(host: PluginHost, neuron: str) -> None:
    """``recurrent = false``: nothing is dropped, e-prop = BPTT of the detach_reset network."""
    model = rsnn(host, neuron, recurrent=False)
    x, y, loss = task_batch(model, "per_step_regression")
    _, grads = eprop_grads(host, model, x, y, loss)
    assert max_diff(grads, bptt_grads(host, model, x, y, loss)) <= EXACT


@pytest.mark.parametrize("neuron", ["lif", "alif-mix"])
def test_the_reset_never_enters_the_traces(host: PluginHost, neuron: str) -> None:
    """E-prop's gradient does not depend on the neuron's detach_reset; BPTT's factorised one does."""
    x, y, loss = task_batch(rsnn(host, neuron), "classification")
    _, detached = eprop_grads(host, rsnn(host, neuron, detach_reset=True), x, y, loss)
    _, attached = eprop_grads(host, rsnn(host, neuron, detach_reset=False), x, y, loss)
    assert max_diff(detached, attached) == 0.0
    with_reset = factorised_bptt_grads(rsnn(host, neuron, detach_reset=False), x, y, loss)
    assert max_diff(with_reset, detached) > 1e-6


# -- hand-written traces = autograd on 3 neurons ------------------------------------------------------
def three_neurons(host: PluginHost, neuron: str) -> SpikingModel:
    """3 neurons, 2 inputs, batch 1; alif: 2 adapting neurons (round(0.6·3)) and decay_input."""
    torch.manual_seed(7)
    info = DataInfo((2,), 2, 8, n_train=0, n_test=0)
    params: dict[str, Any] = {"v_threshold": 1.0, "tau": 3.0, "detach_reset": True}
    if neuron == "alif":
        params |= {"v_threshold": 1 / 3, "beta": 0.4, "tau_adapt": 4.0, "adaptive_fraction": 0.6, "decay_input": True}
    model = build_model(host, "rsnn", info, neuron_factory(host, neuron, params, "atan"), {"hidden": [3]}).double()
    with torch.no_grad():  # a strong input and recurrence: every neuron spikes now and then
        model.stages[0].synapse.weight.abs_().mul_(2.0)
        model.stages[0].recurrent.weight.mul_(2.0)
    return model


def plugin_traces(model: SpikingModel, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """The plugin's ``e[t]`` ``[N, P]`` (batch 1) and ``p[t]`` ``[P]`` for every step."""
    layer = TrainedLayer(model)
    state: RecurrentState | None = None
    traces: EligibilityTraces | None = None
    es, ps = [], []
    with torch.no_grad():
        for x_t in x.unbind(0):
            p = layer.presynaptic(x_t, state)
            s, state, psi = layer.step(x_t, state)
            if traces is None:
                traces = EligibilityTraces.zeros(layer.neuron, s, p.shape[1])
            es.append(traces.step(p, psi, s).full()[0])
            ps.append(p[0])
    return es, ps


def autograd_traces(model: SpikingModel, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """``dS_j[t]/dθ_ji`` by autograd through the layer's equations written out with ``θ = (W | b | R)``,
    ``S[t−1]`` detached in the recurrent input and in the reset; also ``ψ_j[t]`` per step."""
    stage = model.stages[0]
    neuron = stage.neuron
    theta = torch.cat([stage.synapse.weight, stage.synapse.bias[:, None], stage.recurrent.weight], 1)
    theta = theta.detach().requires_grad_(True)
    n = theta.shape[0]
    alif = neuron.name == "alif"
    beta = neuron.betas(theta[:, 0]) if alif else torch.zeros(n, dtype=theta.dtype)
    scale = 1.0 / neuron.tau if getattr(neuron, "decay_input", False) else 1.0
    v = b = s = torch.zeros(n, dtype=theta.dtype)
    es, psis = [], []
    for x_t in x[:, 0].unbind(0):
        p = torch.cat([x_t, torch.ones(1, dtype=x.dtype), s.detach()])
        h = neuron.decay * v + scale * (theta @ p)
        a = neuron.v_threshold + beta * b
        s = neuron.surrogate(h - a)
        psis.append(neuron.surrogate.derivative(h - a).detach())
        v = h - a * s.detach()
        if alif:
            b = neuron.rho * b + (1 - neuron.rho) * (beta > 0).to(s.dtype) * s
        (e,) = torch.autograd.grad(s.sum(), theta, retain_graph=True)
        es.append(e)
    return es, psis


def hand_written_traces(
    neuron: Any, ps: list[Tensor], psis: list[Tensor], spikes: list[Tensor], beta: list[float]
) -> list[Tensor]:
    """Bellec et al.'s recursion, one synapse at a time in plain floats (module docstring of eprop):
    ``ε^H = λ ε^V + c p_i``; ``e = ψ (ε^H − β_j ε^b)``; ``ε^V = ε^H − β_j S_j ε^b``;
    ``ε^b ← ρ ε^b + (1 − ρ) m_j e`` (LIF: β = 0, ε^b unused)."""
    lam = neuron.decay
    c = 1.0 / neuron.tau if getattr(neuron, "decay_input", False) else 1.0
    rho = getattr(neuron, "rho", 0.0)
    n, P = len(beta), len(ps[0])
    eps_v = [[0.0] * P for _ in range(n)]
    eps_b = [[0.0] * P for _ in range(n)]
    out = []
    for p, psi, s in zip(ps, psis, spikes, strict=True):
        e = torch.zeros(n, P, dtype=torch.float64)
        for j in range(n):
            for i in range(P):
                eps_h = lam * eps_v[j][i] + c * float(p[i])
                e[j, i] = float(psi[j]) * (eps_h - beta[j] * eps_b[j][i])
                eps_v[j][i] = eps_h - beta[j] * float(s[j]) * eps_b[j][i]
                if beta[j] > 0:
                    eps_b[j][i] = rho * eps_b[j][i] + (1 - rho) * float(e[j, i])
        out.append(e)
    return out


@pytest.mark.parametrize("neuron", ["lif", "alif"])
def test_traces_by_hand_equal_autograd_on_three_neurons(host: PluginHost, neuron: str) -> None:
    model = three_neurons(host, neuron)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(8, 1, 2, generator=g, dtype=torch.float64) * 2
    plugin, ps = plugin_traces(model, x)
    auto, psis = autograd_traces(model, x)
    with torch.no_grad():
        spikes = [s[0] for s in model.forward_seq(x).spikes[0].unbind(0)]
    rates = torch.stack(spikes).mean(0)
    assert ((0 < rates) & (rates < 1)).all(), rates  # every neuron spikes, none at every step
    stage_neuron = model.stages[0].neuron
    beta = stage_neuron.betas(spikes[0]).tolist() if neuron == "alif" else [0.0] * 3
    by_hand = hand_written_traces(stage_neuron, ps, psis, spikes, beta)
    for t, (a, b, c) in enumerate(zip(plugin, auto, by_hand, strict=True)):
        assert torch.allclose(a, b, rtol=0, atol=1e-13), t
        assert torch.allclose(c, b, rtol=0, atol=1e-13), t
    if neuron == "alif":  # the adaptation's part of the trace matters: without it they differ
        without = hand_written_traces(stage_neuron, ps, psis, spikes, [0.0] * 3)
        assert max(float((w - b).abs().max()) for w, b in zip(without, auto, strict=True)) > 1e-6


# -- memory -----------------------------------------------------------------------------------------
def test_saved_bytes_flat_in_T_for_eprop_linear_for_bptt(host: PluginHost) -> None:
    """V11: peak saved bytes (autograd's plus the traces, reported as held) over T ∈ {16, 32, 64}."""
    Ts = (16, 32, 64)
    loss = SequenceLoss("per_step")
    peaks = {
        f"{method}/{neuron}": saved_bytes_over_T(
            lambda method=method: build_method(host, method), lambda neuron=neuron: rsnn(host, neuron), Ts, loss
        )
        for method in ("eprop", "bptt")
        for neuron in ("lif", "alif-mix")
    }
    print("\nsaved-bytes peak per T", Ts, peaks)
    for neuron in ("lif", "alif-mix"):
        eprop, bptt = list(peaks[f"eprop/{neuron}"].values()), list(peaks[f"bptt/{neuron}"].values())
        assert len(set(eprop)) == 1, neuron  # exactly flat: one step's readout graph + fixed-size traces
        assert bptt[-1] / bptt[0] >= 3.0 and bptt[0] < bptt[1] < bptt[2], neuron  # 4× the steps
    # ALIF keeps per-synapse traces (ε^V and ε^b, [B, N, P]); soft-reset LIF one presynaptic trace [B, P]
    assert peaks["eprop/alif-mix"][16] > peaks["eprop/lif"][16]


# -- conformance and skip reasons -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("neuron", "params"),
    [
        ("lif", {}),
        ("lif", {"feedback": "random"}),
        ("lif", {"update": "step"}),
        ("alif-mix", {"feedback": "random", "feedback_seed": 4, "update": "step"}),
    ],
    ids=["symmetric", "random", "online", "alif-random-online"],
)
def test_conformance(host: PluginHost, neuron: str, params: dict[str, Any]) -> None:
    """snnarena.testing's checks (per-step tasks and flat saved bytes included) on a one-layer rsnn."""
    run_conformance(lambda: build_method(host, "eprop", params), lambda: rsnn(host, neuron, detach_reset=False))


def test_skip_reasons(host: PluginHost) -> None:
    eprop = build_method(host, "eprop")
    info = DataInfo((N_IN,), N_CLASSES, T, n_train=0, n_test=0)
    per_step = SequenceLoss("per_step")
    make = neuron_factory(host, "lif", {"v_threshold": 0.25}, "atan")
    reasons = {
        name: eprop.skip(build_model(host, model, info, make, params), info, per_step)
        for name, model, params in [
            ("lstm", "lstm", {"hidden": [4]}),
            ("mlp", "mlp", {"hidden": [4]}),
            ("deep", "rsnn", {"hidden": [4, 4]}),
        ]
    }
    assert reasons["lstm"] is not None and "lif, if and alif" in reasons["lstm"] and "lstm_unit" in reasons["lstm"]
    assert reasons["mlp"] is not None and "recurrent" in reasons["mlp"] and "'mlp' is feedforward" in reasons["mlp"]
    assert (
        reasons["deep"] is not None and "one recurrent layer" in reasons["deep"] and "hidden = [N]" in reasons["deep"]
    )
    model = rsnn(host)
    assert eprop.skip(model, info, per_step) is None
    rate = eprop.skip(model, info, SequenceLoss("rate"))
    assert rate is not None and "per_step" in rate
    with pytest.raises(ConfigurationError, match="one recurrent layer"):
        TrainedLayer(build_model(host, "rsnn", info, make, {"hidden": [4, 4]}))


def test_parameter_validation(host: PluginHost) -> None:
    for params in ({"feedback": "adaptive"}, {"update": "epoch"}, {"feedback_seed": 1.5}):
        with pytest.raises(ParamError):
            build_method(host, "eprop", params)


# -- random feedback and online updates -------------------------------------------------------------
def test_random_feedback_is_reproducible_and_not_symmetric(host: PluginHost) -> None:
    model = rsnn(host)
    w_out = model.readout.weight.detach()
    seeded = build_method(host, "eprop", {"feedback": "random", "feedback_seed": 7})
    torch.manual_seed(1)
    first = seeded.prepare(model)
    torch.manual_seed(2)  # a seeded B does not depend on torch's RNG
    second = seeded.prepare(model)
    assert isinstance(first, RandomFeedback) and isinstance(second, RandomFeedback)
    assert torch.equal(first.feedback, second.feedback)
    assert first.feedback.shape == w_out.T.shape and "feedback" in first.state_dict()
    assert float(first.feedback.norm()) == pytest.approx(float(w_out.norm()), rel=1e-12)  # scaled like W_out
    other = build_method(host, "eprop", {"feedback": "random", "feedback_seed": 8}).prepare(model)
    assert not torch.equal(other.feedback, first.feedback)
    unseeded = build_method(host, "eprop", {"feedback": "random"})
    draws = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        draws.append(unseeded.prepare(model).feedback)
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])

    x, y, loss = task_batch(model, "classification")
    _, symmetric = eprop_grads(host, model, x, y, loss)
    _, random_a = eprop_grads(host, model, x, y, loss, feedback="random", feedback_seed=7)
    _, random_b = eprop_grads(host, model, x, y, loss, feedback="random", feedback_seed=7)
    assert max_diff(random_a, random_b) == 0.0
    for name in ("stages.0.synapse.weight", "stages.0.recurrent.weight"):
        assert float((random_a[name] - symmetric[name]).abs().max()) > 1e-6, name
    for name in ("readout.weight", "readout.bias"):  # the readout's exact gradient is the same
        assert torch.equal(random_a[name], symmetric[name]), name


def test_random_feedback_needs_the_prepared_module(host: PluginHost) -> None:
    model = rsnn(host)
    x, y, loss = task_batch(model, "classification")
    with pytest.raises(ConfigurationError, match="prepare"):
        build_method(host, "eprop", {"feedback": "random"}).accumulate_gradients(model, x, y, loss, QUIET)


@pytest.mark.parametrize("feedback", ["symmetric", "random"])
def test_eprop_decreases_the_loss(host: PluginHost, feedback: str) -> None:
    """40 Adam steps on one batch of a small sequence-classification problem."""
    model = rsnn(host, "alif-mix", detach_reset=False)
    g = torch.Generator().manual_seed(9)
    x = torch.rand(12, 16, N_IN, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, N_CLASSES, (16,), generator=g)
    loss = SequenceLoss("per_step")
    method = build_method(host, "eprop", {"feedback": feedback, "feedback_seed": 0})
    prepared = method.prepare(model)
    optimizer = torch.optim.Adam(prepared.parameters(), lr=0.02)
    losses = [method.train_step(prepared, x, y, loss, optimizer, QUIET) for _ in range(40)]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.7 * losses[0], losses


def test_online_update_steps_the_optimizer_every_step(host: PluginHost) -> None:
    counts = {}
    for update in ("batch", "step"):
        model = rsnn(host)
        x, y = make_batch(model, T, BATCH)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        steps = 0

        def count(*_: Any) -> None:
            nonlocal steps
            steps += 1

        optimizer.register_step_post_hook(count)
        build_method(host, "eprop", {"update": update}).train_step(
            model, x, y, SequenceLoss("per_step"), optimizer, QUIET
        )
        counts[update] = steps
    assert counts == {"batch": 1, "step": T}


def test_online_and_batch_updates_agree_for_one_step(host: PluginHost) -> None:
    weights = []
    for update in ("batch", "step"):
        model = rsnn(host)
        x, y = make_batch(model, 1, BATCH)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        build_method(host, "eprop", {"update": update}).train_step(
            model, x, y, SequenceLoss("per_step"), optimizer, QUIET
        )
        weights.append(nn.utils.parameters_to_vector(model.parameters()).detach())
    assert torch.equal(weights[0], weights[1])


# -- a whole cell ---------------------------------------------------------------------------------------
EPROP_SUITE = """
name = "eprop"
[train]
steps = 2
batch_size = 16
fidelity = true
[grid]
T = [8]
[[methods]]
name = "eprop"
[[methods]]
name = "eprop"
params = { feedback = "random", update = "step" }
[[models]]
name = "rsnn"
params = { hidden = [16] }
neuron = { name = "alif", params = { v_threshold = 0.3, beta = 0.5, tau_adapt = 20.0, adaptive_fraction = 0.5 } }
[[models]]
name = "lstm"
params = { hidden = [8] }
[[datasets]]
name = "seq_digits"
"""


def test_eprop_cells_run_on_seq_digits_and_skip_the_lstm(host: PluginHost, tmp_path: Any) -> None:
    outcome = run_suite(parse_suite(EPROP_SUITE, host, "eprop.toml"), host, results_root=tmp_path)
    rows = outcome.results
    assert len(rows) == 4
    for _, row in rows.iterrows():
        if row["model"] == "lstm":
            assert row["status"] == "skipped" and "lstm_unit" in row["reason"], row["label"]
        else:  # every parameter got a gradient in the first step, and the gradient points like BPTT's
            assert row["status"] == "done", f"{row['label']}: {row['reason']}"
            assert 0.0 < row["grad_cosine_bptt"] <= 1.0 + 1e-9, row["label"]
