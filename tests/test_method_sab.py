"""Sparse Attentive Backtracking: the ``sab_lstm`` model and the ``sab`` method (float64).

* the model against a hand-written unroll (``torch.nn.LSTMCell``, every memory scored with graph,
  top-k mask, softmax over the kept scores): values and BPTT gradients;
* ``sab`` with one block and every memory kept is BPTT; with short blocks it is autograd through
  the graph whose LSTM state is cut at block boundaries while the memory reads are not
  (:func:`truncated_reference`); the same reference with the memories cut too is ``tbptt``;
* the saved-bytes peak is within ``saved_bytes_bound`` (module docstring) and grows far slower
  than BPTT's; conformance of the method and the model; ``bptt``, ``tbptt`` and
  ``checkpointed_bptt`` train ``sab_lstm``; bad parameters are refused naming the parameter.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from snnarena.data import DataInfo
from snnarena.factory import build_method, build_model, neuron_factory
from snnarena.host import PluginHost
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock, SavedTensorMeter
from snnarena.model import SpikingModel
from snnarena.neuron import detach_state
from snnarena.params import ParamError, params_of
from snnarena.runner import run_suite
from snnarena.suite import SuiteError, parse_suite
from snnarena.task import IGNORE_INDEX
from snnarena.testing import (
    check_gradients_reach_parameters,
    make_batch,
    make_targets,
    run_conformance,
    run_model_conformance,
)
from snnarena_plugins.sab import SAB, SABLSTM, SABStage, saved_bytes_bound

N_IN, N_CLASSES, BATCH = 6, 3, 4
#: Largest gradient difference accepted between two exact float64 computations (round-off).
EXACT = 1e-10


def sab_model(host: PluginHost, seed: int = 0, **params: Any) -> SpikingModel:
    torch.manual_seed(seed)
    info = DataInfo((N_IN,), N_CLASSES, 8, n_train=0, n_test=0)
    return build_model(
        host, "sab_lstm", info, neuron_factory(host, "lif"), {"hidden": 5, "k_att": 2, "k_top": 2, **params}
    ).double()


def copy_targets(T: int, scored: int, seed: int = 1) -> Tensor:
    """Per-step class targets scored only on the last ``scored`` steps (a copy task's recall)."""
    y = make_targets("per_step_classification", T, BATCH, N_CLASSES, seed)
    y[: T - scored] = IGNORE_INDEX
    y[T - scored :] = y[T - scored :].clamp(min=0)
    return y


def loss_for(y: Tensor) -> SequenceLoss:
    return SequenceLoss("per_step", "classification" if y.dim() == 1 else "per_step_classification")


def grads(model: nn.Module) -> dict[str, Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def max_difference(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[n] - b[n]).abs().max()) for n in a)


def method_grads(host: PluginHost, model: SpikingModel, name: str, params: dict[str, Any], x: Tensor, y: Tensor):
    model.zero_grad(set_to_none=True)
    method = build_method(host, name, params)
    method.accumulate_gradients(model, x, y, loss_for(y), PhaseClock(enabled=False))
    return grads(model), method


# -- the model -------------------------------------------------------------------------------------
def reference_logits(model: SpikingModel, x: Tensor) -> Tensor:
    """``sab_lstm``'s equations written out: ``torch.nn.LSTMCell``'s kernel with the model's weights,
    every memory scored with graph, the ``k_top`` largest kept by a mask, softmax over the kept scores."""
    stage, k_top, k_att = model.stages[0], model.params["k_top"], model.params["k_att"]
    assert isinstance(stage, SABStage) and isinstance(stage.synapse, nn.Linear) and stage.recurrent is not None
    W, b, R = stage.synapse.weight, stage.synapse.bias, stage.recurrent.weight
    h = c = x.new_zeros(x.shape[1], model.params["hidden"])
    memories, logits = [h], []
    for t in range(x.shape[0]):
        h_hat, c = torch.lstm_cell(x[t], (h, c), W, R, b)
        m = torch.stack(memories)  # [M, B, H]
        e = stage.score(torch.tanh(stage.query(h_hat) + stage.key(m))).squeeze(-1)  # [M, B]
        kth = e.topk(min(k_top, len(memories)), dim=0).values[-1]
        w = torch.softmax(e.masked_fill(e < kth, float("-inf")), dim=0)
        read = (w.unsqueeze(-1) * m).sum(0)
        h = h_hat + read
        if (t + 1) % k_att == 0:
            memories.append(h)
        logits.append(model.readout(torch.cat([h, read], -1)))
    return torch.stack(logits)


@pytest.mark.parametrize(("k_att", "k_top"), [(1, 2), (2, 3), (3, 10)])
def test_sab_lstm_equals_its_equations_in_values_and_bptt_gradients(host, k_att, k_top):
    model = sab_model(host, k_att=k_att, k_top=k_top)
    x, y = make_batch(model, 12, BATCH)
    loss = SequenceLoss("per_step")
    expected = reference_logits(model, x)
    assert torch.allclose(model.forward_seq(x).logits, expected, rtol=0, atol=1e-12)
    model.zero_grad()
    loss.full(expected, y).backward()
    reference = grads(model)
    assert all((g != 0).any() for g in reference.values())  # the attention MLP included
    bptt, _ = method_grads(host, model, "bptt", {}, x, y)
    assert max_difference(bptt, reference) <= EXACT


def test_sab_lstm_passes_the_model_conformance_checks(host):
    run_model_conformance(lambda: sab_model(host))


def test_memories_are_stored_every_k_att_steps_after_the_zero_state(host):
    model = sab_model(host, k_att=3)
    x, _ = make_batch(model, 10, BATCH)
    state = model.forward_seq(x).state[0]
    assert state.memories.shape == (1 + 10 // 3, BATCH, 5) and state.steps == 10
    assert torch.equal(state.memories[0], torch.zeros(BATCH, 5, dtype=torch.float64))
    hs = model.forward_seq(x).spikes[0]
    assert torch.equal(state.memories[1:], hs[2::3])  # h[2], h[5], h[8]: the attention-augmented states


# -- sab's gradient ----------------------------------------------------------------------------------
def truncated_reference(model: SpikingModel, x: Tensor, y: Tensor, K: int, keep_memories: bool) -> dict[str, Tensor]:
    """Autograd through ``model.step`` with the LSTM state ``(h, c)`` detached at ``t = K, 2K, ...``.

    ``keep_memories``: the memory bank keeps its graph, so gradient still reaches earlier blocks
    through every kept attention edge (SAB's gradient); otherwise the whole state is detached
    there (truncated BPTT).
    """
    state = model.init_state()
    logits = []
    for t in range(x.shape[0]):
        if t and t % K == 0:
            layer = state[0]
            cut = layer._replace(neuron=detach_state(layer.neuron), output=layer.output.detach())
            state = [cut if keep_memories else detach_state(layer)]
        out = model.step(x[t], state)
        state = out.state
        logits.append(out.logits)
    model.zero_grad(set_to_none=True)
    loss_for(y).full(torch.stack(logits), y).backward()
    return grads(model)


@pytest.mark.parametrize("task", ["per_step_classification", "classification"])
def test_sab_with_one_block_and_every_memory_kept_is_bptt(host, task):
    T = 12
    model = sab_model(host, k_att=2, k_top=1 + T // 2)  # k_top >= the number of memories
    x, labels = make_batch(model, T, BATCH)
    y = copy_targets(T, 4) if task != "classification" else labels
    bptt, _ = method_grads(host, model, "bptt", {}, x, y)
    sab, method = method_grads(host, model, "sab", {"k_trunc": T}, x, y)
    assert max_difference(sab, bptt) <= EXACT
    assert method.last_stats.blocks == 1 and method.last_stats.backward_steps == T


@pytest.mark.parametrize("task", ["per_step_classification", "classification"])
@pytest.mark.parametrize(("K", "k_att", "k_top"), [(1, 1, 2), (3, 2, 2), (4, 1, 3), (5, 3, 2)])
def test_sab_equals_autograd_through_the_block_truncated_graph_with_memory_edges(host, task, K, k_att, k_top):
    T = 15
    model = sab_model(host, k_att=k_att, k_top=k_top)
    x, labels = make_batch(model, T, BATCH)
    y = copy_targets(T, 3) if task != "classification" else labels
    sab, _ = method_grads(host, model, "sab", {"k_trunc": K}, x, y)
    assert max_difference(sab, truncated_reference(model, x, y, K, keep_memories=True)) <= EXACT


@pytest.mark.parametrize("K", [2, 5])
def test_the_reference_with_memories_cut_is_tbptt_and_the_memory_edges_matter(host, K):
    model = sab_model(host, k_att=1, k_top=3)
    x, y = make_batch(model, 15, BATCH)
    tbptt, _ = method_grads(host, model, "tbptt", {"K": K}, x, y)
    assert max_difference(tbptt, truncated_reference(model, x, y, K, keep_memories=False)) <= EXACT
    sab, _ = method_grads(host, model, "sab", {"k_trunc": K}, x, y)
    assert max_difference(sab, tbptt) > 1e-3  # the attention edges carry gradient past the blocks


def test_only_blocks_whose_memories_receive_gradient_are_rebuilt(host):
    # memories after steps 5, 11, 17, 23: blocks 0, 2, 4 and 6 (steps 0-2, 6-8 ...) hold none and
    # no scored step, so nothing they did can reach the loss and they are never rebuilt
    T, K = 24, 3
    model = sab_model(host, k_att=6, k_top=2)
    x, _ = make_batch(model, T, BATCH)
    y = copy_targets(T, 1)  # only the last step is scored
    sab, method = method_grads(host, model, "sab", {"k_trunc": K}, x, y)
    stats = method.last_stats
    assert stats.blocks == 8 and 1 <= stats.rebuilt_blocks <= 3
    assert stats.backward_steps == K * (1 + stats.rebuilt_blocks) < T
    assert max_difference(sab, truncated_reference(model, x, y, K, keep_memories=True)) <= EXACT


# -- saved bytes --------------------------------------------------------------------------------------
def saved_peak(host: PluginHost, name: str, params: dict[str, Any], T: int, hidden: int, k_att: int, k_top: int):
    model = sab_model(host, hidden=hidden, k_att=k_att, k_top=k_top)
    x, _ = make_batch(model, T, BATCH)
    y = copy_targets(T, 4)
    method = build_method(host, name, params)
    with SavedTensorMeter(exclude=[*model.parameters(), x]) as meter:
        method.accumulate_gradients(model, x, y, loss_for(y), PhaseClock(enabled=False))
    return meter.peak_bytes


def test_sab_saved_bytes_follow_the_formula_and_grow_far_slower_than_bptt(host):
    hidden, k_att, k_top, K = 16, 2, 4, 8
    sab, bptt = {}, {}
    for T in (32, 64, 128):
        sab[T] = saved_peak(host, "sab", {"k_trunc": K}, T, hidden, k_att, k_top)
        bptt[T] = saved_peak(host, "bptt", {}, T, hidden, k_att, k_top)
        bound = saved_bytes_bound(T, BATCH, hidden, N_CLASSES, k_att, k_top, K)
        assert 0.9 * bound <= sab[T] <= bound, f"T={T}: {sab[T]} B against the bound {bound} B"
    assert 3.5 <= bptt[128] / bptt[32] <= 4.5  # linear in T
    assert sab[128] - sab[32] < 0.2 * (bptt[128] - bptt[32])
    assert sab[128] < bptt[128] / 4


# -- conformance and the other methods --------------------------------------------------------------
def test_sab_passes_the_method_conformance_checks(host):
    # memory_class O(T): the memories grow like T/k_att; k_att = 1 and short blocks make that the
    # dominant term over T = 8 .. 64 (with longer blocks the one-block graph dominates there)
    run_conformance(lambda: SAB(k_trunc=2), lambda: sab_model(host, k_att=1, k_top=2))


def test_sab_skips_other_models_and_the_rate_loss(host):
    method = SAB()
    info = DataInfo((N_IN,), N_CLASSES, 8, n_train=0, n_test=0)
    lstm = build_model(host, "lstm", info, neuron_factory(host, "lif"), {"hidden": [4]})
    other = method.skip(lstm, lstm.info, SequenceLoss("per_step"))
    assert other is not None and "sab_lstm" in other
    model = sab_model(host)
    rate = method.skip(model, model.info, SequenceLoss("rate"))
    assert rate is not None and "per_step" in rate
    assert method.skip(model, model.info, SequenceLoss("per_step", "per_step_regression")) is None


@pytest.mark.parametrize(("name", "params"), [("bptt", {}), ("tbptt", {"K": 4}), ("checkpointed_bptt", {})])
def test_the_host_methods_train_sab_lstm(host, name, params):
    model = sab_model(host, k_top=3)
    x, y = make_batch(model, 12, BATCH)
    check_gradients_reach_parameters(build_method(host, name, params), model, x, y, SequenceLoss("per_step"))


@pytest.mark.parametrize("policy", ["hsm", "sqrt"])
def test_checkpointed_bptt_on_sab_lstm_equals_bptt(host, policy):
    model = sab_model(host, k_top=3)
    x, y = make_batch(model, 16, BATCH)
    bptt, _ = method_grads(host, model, "bptt", {}, x, y)
    checkpointed, _ = method_grads(host, model, "checkpointed_bptt", {"policy": policy}, x, y)
    assert max_difference(checkpointed, bptt) <= EXACT


# -- parameters and suites ---------------------------------------------------------------------------
SAB_SUITE = """
name = "sab"
[train]
steps = 2
batch_size = 8
[grid]
T = [13]
[[methods]]
name = "sab"
params = { k_trunc = 4 }
[[methods]]
name = "bptt"
[[models]]
name = "sab_lstm"
params = { hidden = 8, k_att = 2, k_top = 3 }
[[datasets]]
name = "copy"
params = { length = 3, n_train = 32, n_test = 16 }
"""


@pytest.mark.parametrize("k_top", [0, 1])
def test_a_k_top_below_two_fails_suite_validation_naming_it(host, k_top):
    with pytest.raises(ParamError, match="k_top"):
        params_of(SABLSTM).resolve({"k_top": k_top})
    with pytest.raises(SuiteError, match="k_top"):
        parse_suite(SAB_SUITE.replace("k_top = 3", f"k_top = {k_top}"), host, "sab.toml")


def test_check_T_refuses_a_k_att_that_no_read_would_follow():
    assert SABLSTM.check_T({"k_att": 12}, 13) is None
    for k_att in (13, 14):
        reason = SABLSTM.check_T({"k_att": k_att}, 13)
        assert reason is not None and "k_att" in reason and "T=13" in reason


@pytest.mark.parametrize("k_att", [13, 20])
def test_a_k_att_not_shorter_than_T_fails_suite_validation_naming_it(host, k_att):
    with pytest.raises(SuiteError, match=rf"models\[0\].*k_att={k_att} is not shorter than the sequence \(T=13\)"):
        parse_suite(SAB_SUITE.replace("k_att = 2", f"k_att = {k_att}"), host, "sab.toml")


def test_sab_cells_run_done_on_the_copy_task(host, tmp_path):
    outcome = run_suite(parse_suite(SAB_SUITE, host, "sab.toml"), host, results_root=tmp_path)
    rows = outcome.results.set_index("method")
    for method in ("sab", "bptt"):
        assert rows.loc[method, "status"] == "done", rows.loc[method, "reason"]
        assert 0.0 <= float(rows.loc[method, "test_accuracy"]) <= 1.0
