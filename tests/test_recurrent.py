"""The recurrent model family: ``RecurrentStage``, the ``rsnn`` and ``lstm`` models, the
``seq_digits`` dataset, and the methods that train (``bptt``, ``tbptt``, ``checkpointed_bptt``) or
skip (every other built-in) recurrent models.

Gradients are compared in float64 against autograd through hand-written unrolls of the models'
equations (``rsnn``) and through ``torch.nn.LSTM`` with the same weights (``lstm``).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from snnarena.cell import evaluate
from snnarena.data import DataInfo
from snnarena.errors import ConfigurationError
from snnarena.factory import build_dataset, build_method, build_model, neuron_factory
from snnarena.host import PluginHost
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.model import RecurrentStage, RecurrentState, SpikingModel
from snnarena.neuron import Neuron, detach_state
from snnarena.runner import run_suite
from snnarena.suite import SuiteError, parse_suite
from snnarena.testing import (
    check_resumes_from_state,
    make_batch,
    run_conformance,
    run_model_conformance,
)

T, BATCH, N_IN, N_CLASSES = 8, 4, 6, 3
#: Largest gradient difference accepted between two exact float64 computations (round-off).
EXACT = 1e-12
LIF = {"v_threshold": 0.25}  # low threshold: every layer spikes on inputs in [0, 2)


def recurrent_model(host: PluginHost, name: str, seed: int = 0, **params: Any) -> SpikingModel:
    torch.manual_seed(seed)
    info = DataInfo((N_IN,), N_CLASSES, T, n_train=0, n_test=0)
    make = neuron_factory(host, "lif", LIF, "atan")
    return build_model(host, name, info, make, {"hidden": [7, 5], **params}).double()


def grads(model: nn.Module) -> dict[str, Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def method_grads(host: PluginHost, model: SpikingModel, method: str, params: dict[str, Any], x: Tensor, y: Tensor):
    model.zero_grad(set_to_none=True)
    m = build_method(host, method, params)
    value = m.accumulate_gradients(model, x, y, SequenceLoss("per_step"), PhaseClock(enabled=False))
    return value, grads(model)


def max_difference(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[n] - b[n]).abs().max()) for n in a)


def assert_nonzero_everywhere(g: dict[str, Tensor], model: nn.Module) -> None:
    assert g.keys() == {n for n, _ in model.named_parameters()}
    for n, t in g.items():
        assert (t != 0).any(), f"{n} has an all-zero gradient"


# -- reference unrolls ----------------------------------------------------------------------------
def rsnn_reference(model: SpikingModel, x: Tensor) -> Tensor:
    """Logits ``[T, B, C]`` of the rsnn equations, written out: per layer ``H = λV + W S_in + b +
    R S[t−1]``, ``S = Θ(H − V_th)`` (the layer's surrogate backward), ``V = H − V_th S``."""
    h = x
    for stage in model.stages:
        W, b, R = stage.synapse.weight, stage.synapse.bias, stage.recurrent.weight
        leak, threshold, spike = stage.neuron.decay, stage.neuron.v_threshold, stage.neuron.surrogate
        v = x.new_zeros(x.shape[1], W.shape[0])
        s = x.new_zeros(x.shape[1], W.shape[0])
        outputs = []
        for t in range(x.shape[0]):
            charge = leak * v + h[t] @ W.T + b + s @ R.T
            s = spike(charge - threshold)
            v = charge - threshold * s
            outputs.append(s)
        h = torch.stack(outputs)
    return model.readout(h)


def test_bptt_on_rsnn_equals_the_hand_written_unroll(host):
    model = recurrent_model(host, "rsnn")
    x, y = make_batch(model, T, BATCH)
    _, bptt = method_grads(host, model, "bptt", {}, x, y)
    model.zero_grad(set_to_none=True)
    SequenceLoss("per_step").full(rsnn_reference(model, x), y).backward()
    reference = grads(model)
    assert_nonzero_everywhere(reference, model)  # recurrent weights included
    assert max_difference(bptt, reference) <= EXACT
    _, single = method_grads(host, model, "bptt", {"step_mode": "single"}, x, y)
    assert max_difference(single, reference) <= EXACT


def lstm_reference(model: SpikingModel) -> nn.LSTM:
    """A ``torch.nn.LSTM`` holding the lstm model's weights (``bias_hh = 0``: the model has one bias)."""
    sizes = model.params["hidden"]
    lstm = nn.LSTM(N_IN, sizes[0], num_layers=len(sizes)).double()
    with torch.no_grad():
        for l, stage in enumerate(model.stages):
            getattr(lstm, f"weight_ih_l{l}").copy_(stage.synapse.weight)
            getattr(lstm, f"bias_ih_l{l}").copy_(stage.synapse.bias)
            getattr(lstm, f"weight_hh_l{l}").copy_(stage.recurrent.weight)
            getattr(lstm, f"bias_hh_l{l}").zero_()
    return lstm


def test_lstm_equals_torch_lstm_in_values_and_bptt_gradients(host):
    model = recurrent_model(host, "lstm", hidden=[5, 5])
    x, y = make_batch(model, T, BATCH)
    lstm = lstm_reference(model)
    h, _ = lstm(x)
    logits = model.readout(h)
    assert torch.allclose(model.forward_seq(x).logits, logits, rtol=0, atol=1e-14)
    SequenceLoss("per_step").full(logits, y).backward()
    _, bptt = method_grads(host, model, "bptt", {}, x, y)
    assert_nonzero_everywhere(bptt, model)
    differences = []
    for l, stage in enumerate(model.stages):
        pairs = [
            (stage.synapse.weight.grad, getattr(lstm, f"weight_ih_l{l}").grad),
            (stage.synapse.bias.grad, getattr(lstm, f"bias_ih_l{l}").grad),
            (stage.recurrent.weight.grad, getattr(lstm, f"weight_hh_l{l}").grad),
        ]
        differences += [float((a - b).abs().max()) for a, b in pairs]
    assert max(differences) <= EXACT


# -- the exact methods agree on recurrent models ----------------------------------------------------
@pytest.mark.parametrize("name", ["rsnn", "lstm"])
@pytest.mark.parametrize("K", [T, T + 3])
def test_tbptt_with_K_at_least_T_is_bptt(host, name, K):
    model = recurrent_model(host, name)
    x, y = make_batch(model, T, BATCH)
    loss_bptt, bptt = method_grads(host, model, "bptt", {}, x, y)
    loss_tbptt, tbptt = method_grads(host, model, "tbptt", {"K": K}, x, y)
    assert math.isclose(loss_bptt, loss_tbptt, rel_tol=1e-14)
    assert max_difference(tbptt, bptt) <= EXACT


@pytest.mark.parametrize("name", ["rsnn", "lstm"])
def test_tbptt_with_K_below_T_cuts_the_recurrent_path(host, name):
    model = recurrent_model(host, name)
    x, y = make_batch(model, T, BATCH)
    _, bptt = method_grads(host, model, "bptt", {}, x, y)
    _, tbptt = method_grads(host, model, "tbptt", {"K": 2}, x, y)
    assert max_difference(tbptt, bptt) > 1e-6  # truncation changes the gradient


@pytest.mark.parametrize("name", ["rsnn", "lstm"])
@pytest.mark.parametrize(
    "params",
    [
        {"policy": "hsm", "budget_slots": 1},
        {"policy": "hsm", "budget_slots": 2},
        {"policy": "hsm"},  # ceil(sqrt(T)) slots
        {"policy": "hsm", "budget_slots": T},
        {"policy": "ism", "budget_slots": 40},
        {"policy": "msm", "budget_slots": 12},
        {"policy": "sqrt"},
    ],
    ids=lambda p: "-".join(str(v) for v in p.values()),
)
def test_checkpointed_bptt_equals_bptt_at_every_budget(host, name, params):
    model = recurrent_model(host, name)
    x, y = make_batch(model, T, BATCH)
    loss_bptt, bptt = method_grads(host, model, "bptt", {}, x, y)
    loss_ckpt, ckpt = method_grads(host, model, "checkpointed_bptt", params, x, y)
    assert math.isclose(loss_bptt, loss_ckpt, rel_tol=1e-13)
    assert max_difference(ckpt, bptt) <= EXACT


@pytest.mark.parametrize("name", ["rsnn", "lstm"])
@pytest.mark.parametrize("method", ["ottt", "sltt", "ratebp", "tbptt_local"])
def test_feedforward_only_methods_skip_recurrent_models_with_a_reason(host, name, method):
    model = recurrent_model(host, name)
    reason = build_method(host, method).skip(model, model.info, SequenceLoss("per_step"))
    assert isinstance(reason, str) and "recurrent" in reason and name in reason


@pytest.mark.parametrize("method", ["bptt", "tbptt", "checkpointed_bptt"])
def test_exact_methods_accept_both_families(host, method):
    for name in ("mlp", "rsnn", "lstm"):
        model = recurrent_model(host, name)
        assert build_method(host, method).skip(model, model.info, SequenceLoss("per_step")) is None


# -- conformance -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "params"),
    [("mlp", {}), ("rsnn", {}), ("rsnn", {"recurrent": False}), ("lstm", {})],
)
def test_models_pass_their_family_checks(host, name, params):
    run_model_conformance(lambda: recurrent_model(host, name, **params))


class _ForgetfulStage(RecurrentStage):
    """Broken on purpose: a sequence always starts from rest, ignoring the state it is given."""

    def forward_seq(self, x: Tensor, state: Any | None = None) -> tuple[Tensor, Any]:
        return super().forward_seq(x, None)


def test_model_checks_catch_a_stage_that_drops_its_state(host):
    model = recurrent_model(host, "rsnn")
    stage = model.stages[0]
    model.stages[0] = _ForgetfulStage(stage.synapse, stage.neuron, stage.recurrent)
    x, _ = make_batch(model, T, BATCH)
    with pytest.raises(AssertionError, match="resumed from the state"):
        check_resumes_from_state(model, x)


@pytest.mark.parametrize(
    ("method", "params"),
    [("bptt", {}), ("tbptt", {"K": 4}), ("checkpointed_bptt", {}), ("checkpointed_bptt", {"policy": "msm"})],
)
def test_exact_methods_conform_on_rsnn(host, method, params):
    run_conformance(lambda: build_method(host, method, params), lambda: recurrent_model(host, "rsnn"), Ts=(8, 16, 32))


def test_bptt_conforms_on_lstm(host):
    run_conformance(lambda: build_method(host, "bptt"), lambda: recurrent_model(host, "lstm"), Ts=(8, 16, 32))


# -- the recurrent stage -------------------------------------------------------------------------
def test_recurrent_state_carries_the_output_and_detaches(host):
    model = recurrent_model(host, "rsnn")
    x, _ = make_batch(model, T, BATCH)
    x.requires_grad_(True)
    out = model.step(x[0], model.init_state())
    state = out.state[0]
    assert isinstance(state, RecurrentState) and state.output is out.spikes[0]
    detached = detach_state(out.state)[0]
    assert isinstance(detached, RecurrentState) and not detached.output.requires_grad
    assert not any(t.requires_grad for t in detached.neuron)


def test_rsnn_without_recurrence_has_no_recurrent_weights(host):
    model = recurrent_model(host, "rsnn", recurrent=False)
    assert all(stage.recurrent is None for stage in model.stages)
    assert not any("recurrent" in n for n, _ in model.named_parameters())
    assert len(list(recurrent_model(host, "rsnn").parameters())) == len(list(model.parameters())) + 2


def test_step_current_exposes_the_pieces_of_a_step(host):
    """What e-prop-like methods drive: F = synapse(x), I = F + R S[t−1], then the neuron."""
    model = recurrent_model(host, "rsnn", hidden=[7])
    stage = model.stages[0]
    x, _ = make_batch(model, T, BATCH)
    s0, state = stage.step(x[0], None)
    feedforward = stage.synapse(x[1])
    current = stage.total_current(feedforward, state)
    assert torch.allclose(current, feedforward + s0 @ stage.recurrent.weight.T, rtol=0, atol=1e-14)
    expected, _ = stage.neuron.step(current, state.neuron)
    s1, _ = stage.step_current(feedforward, state)
    assert torch.equal(s1, expected)


def test_lstm_builds_no_neuron_and_declares_it(host):
    def no_neuron() -> Neuron:
        raise AssertionError("lstm called make_neuron")

    info = DataInfo((N_IN,), N_CLASSES, T, n_train=0, n_test=0)
    model = build_model(host, "lstm", info, no_neuron, {"hidden": [4]})
    assert type(model).uses_neuron is False and model.family == "recurrent"
    assert host.get("model", "rsnn").obj.uses_neuron is True
    assert not any(stage.neuron.spiking for stage in model.stages)


# -- seq_digits ---------------------------------------------------------------------------------------
def test_seq_digits_presents_the_image_row_by_row(host):
    rows = build_dataset(host, "seq_digits", 8, seed=0)
    slow = build_dataset(host, "seq_digits", 16, seed=0)
    columns = build_dataset(host, "seq_digits", 8, seed=0, params={"order": "columns"})
    assert rows.info.input_shape == (8,) and rows.info.n_classes == 10 and rows.info.T == 8
    assert rows.x_train.shape[1:] == (8, 8) and slow.x_train.shape[1:] == (16, 8)
    assert torch.equal(slow.x_train[:, 1::2], rows.x_train) and torch.equal(slow.x_train[:, ::2], rows.x_train)
    assert torch.equal(columns.x_train, rows.x_train.transpose(1, 2))
    x, y = next(rows.test_batches(5))
    assert x.shape == (8, 5, 8) and y.shape == (5,)
    assert float(rows.x_train.min()) >= 0.0 and float(rows.x_train.max()) <= 1.0


def test_seq_digits_is_deterministic_per_seed(host):
    a, b = build_dataset(host, "seq_digits", 8, seed=3), build_dataset(host, "seq_digits", 8, seed=3)
    c = build_dataset(host, "seq_digits", 8, seed=4)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_train, c.y_train)
    assert host.get("dataset", "seq_digits").obj.input_size({"order": "rows"}) == 8


@pytest.mark.parametrize("bad_T", [4, 12, 20])
def test_seq_digits_refuses_a_T_it_cannot_present(host, bad_T):
    with pytest.raises(ConfigurationError, match=rf"T={bad_T} is not a multiple of 8.*use T = 8, 16, 24"):
        build_dataset(host, "seq_digits", bad_T, seed=0)


def test_suite_validation_refuses_a_T_the_dataset_cannot_present(host):
    text = RECURRENT_SUITE.replace("T = [8]", "T = [8, 12]")
    with pytest.raises(SuiteError, match=r"grid\.T: seq_digits: T=12 is not a multiple of 8"):
        parse_suite(text, host, "recurrent.toml")


# -- whole cells -------------------------------------------------------------------------------------
RECURRENT_SUITE = """
name = "recurrent"
[train]
steps = 2
batch_size = 16
fidelity = true
[grid]
T = [8]
[[methods]]
name = "tbptt"
params = { K = 4 }
[[methods]]
name = "checkpointed_bptt"
params = { policy = "msm", budget_slots = 6 }
[[models]]
name = "rsnn"
params = { hidden = [16] }
neuron = { name = "lif", params = { v_threshold = 0.3 } }
[[models]]
name = "lstm"
params = { hidden = [16] }
[[datasets]]
name = "seq_digits"
"""


def test_recurrent_cells_run_done_on_seq_digits(host, tmp_path):
    outcome = run_suite(parse_suite(RECURRENT_SUITE, host, "recurrent.toml"), host, results_root=tmp_path)
    rows = outcome.results.set_index(["model", "method"])
    assert len(rows) == 4
    for (model, method), row in rows.iterrows():
        assert row["status"] == "done", f"{model}/{method}: {row['reason']}"  # every parameter got a gradient
        assert 0.0 <= row["test_accuracy"] <= 1.0
    assert rows.loc[("rsnn", "tbptt"), "spike_rate"] > 0
    assert math.isnan(rows.loc[("lstm", "tbptt"), "spike_rate"])  # no spiking stage
    for model in ("rsnn", "lstm"):
        assert rows.loc[(model, "checkpointed_bptt"), "grad_cosine_bptt"] == pytest.approx(1.0, abs=1e-5)
    lstm = rows.loc[("lstm", "tbptt")]
    assert lstm["neuron"] == "" and lstm["surrogate"] == "" and "lstm/" not in lstm["label"]
    assert not any(key.startswith(("neuron:", "surrogate:")) for key in json.loads(lstm["plugin_versions"]))


def test_a_neuron_given_to_a_model_without_neurons_is_refused(host):
    text = RECURRENT_SUITE.replace(
        "params = { hidden = [16] }\n[[datasets]]", 'params = { hidden = [16] }\nneuron = "lif"\n[[datasets]]'
    )
    assert 'neuron = "lif"' in text
    with pytest.raises(SuiteError, match=r"models\[1\]\.neuron: model 'lstm' builds no neuron"):
        parse_suite(text, host, "recurrent.toml")


def test_evaluate_gives_nan_spike_rate_for_the_lstm(host):
    data = build_dataset(host, "seq_digits", 8, seed=0)
    model = build_model(host, "lstm", data.info, neuron_factory(host, "lif"), {"hidden": [4]})
    result = evaluate(model, data.test_batches(256), torch.device("cpu"))
    assert math.isnan(result.spike_rate) and 0.0 <= result.accuracy <= 1.0
