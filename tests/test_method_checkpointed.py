"""``checkpointed_bptt``: exact BPTT under a memory budget (research notes §9, V7, V11).

Defining properties, in float64: the gradient equals BPTT's for every policy and budget and both
loss forms; the number of ``model.step`` executions equals the dynamic program's ``C(T, m)``; the
memory held (bytes saved for backward + stored states) stays within the budget plus one step.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import pytest
import torch
from conftest import make_mlp, random_batch

from snnarena.data import DataInfo
from snnarena.factory import build_method, build_model, neuron_factory
from snnarena.host import PluginHost
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock, SavedTensorMeter
from snnarena.params import ParamError, params_of
from snnarena.reference import collect_gradients
from snnarena_plugins.checkpointed_bptt import (
    INFEASIBLE,
    CheckpointedBPTT,
    cost_table,
    forward_cost,
    sqrt_cost,
)

T = 12
HIDDEN = (7, 5)
BATCH = 4
STATE_BYTES = sum(HIDDEN) * BATCH * 8  # one hidden state: every stage's membrane, float64


def _clock() -> PhaseClock:
    return PhaseClock(enabled=False)


def _model(host: PluginHost) -> Any:
    return make_mlp(host, hidden=HIDDEN, T=T, neuron_params={"v_threshold": 0.5})


def _bptt(host: PluginHost, model: Any, x: torch.Tensor, y: torch.Tensor, loss: SequenceLoss) -> tuple[float, dict]:
    model.zero_grad(set_to_none=True)
    value = build_method(host, "bptt").accumulate_gradients(model, x, y, loss, _clock())
    return value, collect_gradients(model)


def _counting(model: Any) -> list[int]:
    """Count the time steps ``model`` advances: ``step`` covers one, ``forward_seq(x)`` covers
    ``x.shape[0]``; calls made from inside a counted call are not counted again (instance attributes
    shadow the methods)."""
    calls, depth = [0], [0]

    def counted(fn: Any, steps: Any) -> Any:
        def wrapper(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if depth[0] == 0:
                calls[0] += steps(x)
            depth[0] += 1
            try:
                return fn(x, *args, **kwargs)
            finally:
                depth[0] -= 1

        return wrapper

    model.step = counted(model.step, lambda x: 1)
    model.forward_seq = counted(model.forward_seq, lambda x: x.shape[0])
    return calls


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in b)


# -- the dynamic program -------------------------------------------------------------------------


@cache
def _reference_cost(t: int, m: int, policy: str, alpha: int) -> int:
    """The recursions of the module docstring, evaluated one cell at a time."""
    if t == 0:
        return 0
    if m < 1:
        return INFEASIBLE
    best = t + _reference_cost(t - 1, m, policy, alpha)  # leaf
    for y in range(1, t):
        if policy in ("hsm", "msm") and m >= 2:
            best = min(best, y + _reference_cost(t - y, m - 1, policy, alpha) + _reference_cost(y, m, policy, alpha))
        if policy in ("ism", "msm") and m - alpha >= 1:
            best = min(
                best, y + _reference_cost(t - y, m - alpha, policy, alpha) + _reference_cost(y - 1, m, policy, alpha)
            )
    return min(best, INFEASIBLE)


@pytest.mark.parametrize("policy,alpha", [("hsm", 1), ("ism", 2), ("ism", 3), ("msm", 2), ("msm", 4)])
def test_cost_table_matches_the_recursion(policy: str, alpha: int) -> None:
    table = cost_table(14, 9, policy, alpha)
    assert table.shape == (10, 15)
    for m in range(1, 10):
        for t in range(15):
            assert table[m, t] == _reference_cost(t, m, policy, alpha), (policy, alpha, t, m)
    assert (table[0, 1:] == INFEASIBLE).all()


def test_cost_table_closed_forms() -> None:
    hsm = cost_table(30, 40, "hsm")
    for t in range(1, 31):
        assert hsm[1, t] == t * (t + 1) // 2  # one slot: recompute from the start for every step
        assert hsm[t, t] == 2 * t - 1  # a slot per step: every step runs twice but the last
    assert (hsm[1:, 1] == 1).all()
    # ISM storing every step's internal state (1 + α(t−1) slots) runs each step exactly once
    alpha = 3
    assert forward_cost(20, 1 + alpha * 19, "ism", alpha) == 20
    assert forward_cost(20, 10**6, "msm", alpha) == 20
    assert forward_cost(20, 10**6, "hsm") == 39
    assert sqrt_cost(16) == 12 + 16 and sqrt_cost(10) == 8 + 10


def test_cost_regression_values_at_T_1000() -> None:
    """Forward ops per step from the research notes' own evaluation of the recursions (§9)."""
    hsm = {1: 500.5, 2: 29.8, 4: 9.0, 10: 4.6, 30: 3.5, 60: 2.9}
    for m, per_step in hsm.items():
        assert round(forward_cost(1000, m, "hsm") / 1000, 1) == per_step, m
    msm = {10: 4.6, 30: 2.9, 60: 2.6}
    for m, per_step in msm.items():
        assert round(forward_cost(1000, m, "msm", 5) / 1000, 1) == per_step, m
    assert 1.95 <= forward_cost(1000, 100, "msm", 5) / 1000 <= 2.05


# -- exact gradients and executed step counts -------------------------------------------------------


BUDGETS = (1, 2, 3, math.ceil(math.sqrt(T)), T)


@pytest.mark.parametrize("form", ["per_step", "rate"])
@pytest.mark.parametrize("policy", ["hsm", "ism", "msm"])
def test_equals_bptt_and_runs_the_dp_step_count(host: PluginHost, policy: str, form: str) -> None:
    model = _model(host)
    x, y = random_batch(T=T, batch=BATCH)
    loss = SequenceLoss(form)
    ref_value, ref = _bptt(host, model, x, y, loss)
    calls = _counting(model)
    for m in BUDGETS:
        method = build_method(host, "checkpointed_bptt", {"policy": policy, "budget_slots": m})
        model.zero_grad(set_to_none=True)
        calls[0] = 0
        value = method.accumulate_gradients(model, x, y, loss, _clock())
        stats = method.last_stats
        assert stats is not None
        assert _max_diff(collect_gradients(model), ref) <= 1e-12, (policy, m)
        assert value == pytest.approx(ref_value, rel=1e-12)
        expected = forward_cost(T, m, policy, stats.alpha)
        assert method.last_forward_steps == expected == calls[0] - stats.probe_steps, (policy, m)
        assert stats.peak_slots <= m
        if policy != "hsm":
            assert stats.sizes is not None and stats.sizes.state_bytes == STATE_BYTES
            assert stats.alpha == 2 + math.ceil((stats.sizes.step_saved_bytes + stats.sizes.logits_bytes) / STATE_BYTES)


def _sequence_calls(model: Any) -> list[int]:
    """Count ``model.forward_seq`` calls (on top of :func:`_counting`'s wrapper)."""
    calls = [0]
    forward_seq = model.forward_seq

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return forward_seq(*args, **kwargs)

    model.forward_seq = counted
    return calls


@pytest.mark.parametrize("form", ["per_step", "rate"])
@pytest.mark.parametrize("policy", ["hsm", "msm"])
@pytest.mark.parametrize("segment", [3, 5])  # 5 does not divide T = 12: units of 5, 5 and 2 steps
def test_segments_equal_bptt_and_run_the_dp_over_units(host: PluginHost, policy: str, form: str, segment: int) -> None:
    model = _model(host)
    x, y = random_batch(T=T, batch=BATCH)
    loss = SequenceLoss(form)
    ref_value, ref = _bptt(host, model, x, y, loss)
    steps = _counting(model)
    sequences = _sequence_calls(model)
    units = math.ceil(T / segment)
    for m in (1, 2, units):
        method = build_method(host, "checkpointed_bptt", {"policy": policy, "budget_slots": m, "segment": segment})
        model.zero_grad(set_to_none=True)
        steps[0] = sequences[0] = 0
        value = method.accumulate_gradients(model, x, y, loss, _clock())
        stats = method.last_stats
        assert stats is not None and stats.segment == segment
        assert _max_diff(collect_gradients(model), ref) <= 1e-12, (policy, m)
        assert value == pytest.approx(ref_value, rel=1e-12)
        assert stats.forward_units == forward_cost(units, m, policy, stats.alpha) == stats.predicted_units
        assert method.last_forward_steps == steps[0] - stats.probe_steps
        if T % segment == 0:
            assert method.last_forward_steps == segment * stats.forward_units
        probe_calls = 0 if stats.sizes is None else 2
        assert sequences[0] - probe_calls == stats.forward_units  # one forward_seq per unit, no step loop


@pytest.mark.parametrize("form", ["per_step", "rate"])
def test_sqrt_policy_equals_bptt(host: PluginHost, form: str) -> None:
    model = _model(host)
    loss = SequenceLoss(form)
    calls = _counting(model)
    for steps in (1, 9, T, 17):
        x, y = random_batch(T=steps, batch=BATCH)
        ref_value, ref = _bptt(host, model, x, y, loss)
        method = build_method(host, "checkpointed_bptt", {"policy": "sqrt"})
        model.zero_grad(set_to_none=True)
        calls[0] = 0
        value = method.accumulate_gradients(model, x, y, loss, _clock())
        assert _max_diff(collect_gradients(model), ref) <= 1e-12
        assert value == pytest.approx(ref_value, rel=1e-12)
        assert method.last_forward_steps == sqrt_cost(steps) == calls[0]


def test_default_budget_is_sqrt_T_slots(host: PluginHost) -> None:
    model = _model(host)
    x, y = random_batch(T=T, batch=BATCH)
    method = build_method(host, "checkpointed_bptt")
    method.accumulate_gradients(model, x, y, SequenceLoss(), _clock())
    assert method.last_stats is not None and method.last_stats.slots == math.ceil(math.sqrt(T))
    assert method.last_forward_steps == forward_cost(T, math.ceil(math.sqrt(T)), "hsm")


def test_convnet_equals_bptt(host: PluginHost) -> None:
    torch.manual_seed(0)
    info = DataInfo((1, 4, 4), 3, 6, n_train=0, n_test=0)
    make = neuron_factory(host, "lif", {"v_threshold": 0.3}, "atan")
    model = build_model(host, "convnet", info, make, {"channels": [2, 3], "fc": 5}).double()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(6, 2, 1, 4, 4, generator=g, dtype=torch.float64) * 2
    y = torch.tensor([0, 2])
    _, ref = _bptt(host, model, x, y, SequenceLoss())
    method = build_method(host, "checkpointed_bptt", {"policy": "msm", "budget_slots": 4})
    model.zero_grad(set_to_none=True)
    method.accumulate_gradients(model, x, y, SequenceLoss(), _clock())
    assert _max_diff(collect_gradients(model), ref) <= 1e-12


# -- memory ---------------------------------------------------------------------------------------


def _one_step_bytes(host: PluginHost, model: Any, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes saved by one BPTT step with its loss, plus its input and output states."""
    method = build_method(host, "bptt", {"step_mode": "single"})
    with SavedTensorMeter(exclude=list(model.parameters()) + [x]) as meter:
        method.accumulate_gradients(model, x[:1], y, SequenceLoss(), _clock())
    return meter.peak_bytes + 2 * STATE_BYTES


class _JointMeter(SavedTensorMeter):
    """``peak_bytes``: saved + stored (held) bytes, what a cell reports; ``saved_peak``: saved alone."""

    def __init__(self, model: Any, x: torch.Tensor) -> None:
        super().__init__(exclude=list(model.parameters()) + [x])
        self.held = 0
        self.saved_peak = 0

    def add_held(self, nbytes: int) -> None:
        super().add_held(nbytes)
        self.held += nbytes

    def _pack(self, t: torch.Tensor) -> Any:
        packed = super()._pack(t)
        self.saved_peak = max(self.saved_peak, self.live_bytes - self.held)
        return packed


def _run_metered(model: Any, x: torch.Tensor, y: torch.Tensor, method: CheckpointedBPTT) -> _JointMeter:
    method.last_stats = None
    with _JointMeter(model, x) as meter:
        method.accumulate_gradients(model, x, y, SequenceLoss(), _clock())
    return meter


@pytest.mark.parametrize("policy", ["hsm", "ism", "msm"])
def test_memory_within_budget_plus_one_step(host: PluginHost, policy: str) -> None:
    steps = 32
    model = _model(host)
    x, y = random_batch(T=steps, batch=BATCH)
    one_step = _one_step_bytes(host, model, x, y)
    with SavedTensorMeter(exclude=list(model.parameters()) + [x]) as meter:
        build_method(host, "bptt").accumulate_gradients(model, x, y, SequenceLoss(), _clock())
    bptt_peak = meter.peak_bytes
    for m in (1, 2, 3, 6, 12, 24):
        method = build_method(host, "checkpointed_bptt", {"policy": policy, "budget_slots": m})
        model.zero_grad(set_to_none=True)
        joint = _run_metered(model, x, y, method)
        stats = method.last_stats
        assert stats is not None and stats.peak_slots <= m and stats.live_state_bytes == 0
        # bytes saved for backward alone, and together with the stored hidden states
        assert joint.saved_peak <= m * STATE_BYTES + one_step, (policy, m, joint.saved_peak)
        assert joint.peak_bytes <= m * STATE_BYTES + one_step, (policy, m, joint.peak_bytes)
        assert joint.peak_bytes >= stats.peak_state_bytes
        assert joint.peak_bytes < bptt_peak
        if policy == "hsm":  # only the step being back-propagated has a graph
            assert joint.saved_peak <= one_step - 2 * STATE_BYTES


def test_memory_within_budget_plus_one_unit(host: PluginHost) -> None:
    steps, segment = 32, 4
    model = _model(host)
    x, y = random_batch(T=steps, batch=BATCH)
    unit = build_method(host, "bptt")
    with SavedTensorMeter(exclude=list(model.parameters()) + [x]) as meter:
        unit.accumulate_gradients(model, x[:segment], y, SequenceLoss(), _clock())
    one_unit = meter.peak_bytes + 2 * STATE_BYTES
    for policy in ("hsm", "msm"):
        for m in (1, 3, 8):
            method = build_method(host, "checkpointed_bptt", {"policy": policy, "budget_slots": m, "segment": segment})
            joint = _run_metered(model, x, y, method)
            stats = method.last_stats
            assert stats is not None and stats.peak_slots <= m and stats.live_state_bytes == 0
            assert joint.peak_bytes <= m * STATE_BYTES + one_unit, (policy, m, joint.peak_bytes)


def test_budget_bytes_become_slots(host: PluginHost) -> None:
    model = _model(host)
    x, y = random_batch(T=T, batch=BATCH)
    one_step = _one_step_bytes(host, model, x, y)
    for policy in ("hsm", "msm"):
        for slots in (1, 3, 5):
            budget = slots * STATE_BYTES + STATE_BYTES // 2  # floor(budget / b_h) = slots
            by_bytes = build_method(host, "checkpointed_bptt", {"policy": policy, "budget_bytes": budget})
            joint = _run_metered(model, x, y, by_bytes)
            stats = by_bytes.last_stats
            assert stats is not None and stats.slots == slots and stats.probe_steps == 2
            assert joint.peak_bytes <= budget + one_step
            by_slots = build_method(host, "checkpointed_bptt", {"policy": policy, "budget_slots": slots})
            by_slots.accumulate_gradients(model, x, y, SequenceLoss(), _clock())
            assert by_bytes.last_forward_steps == by_slots.last_forward_steps
    too_small = build_method(host, "checkpointed_bptt", {"budget_bytes": STATE_BYTES - 1})
    with pytest.raises(ValueError, match=rf"budget_bytes: expected an integer >= {STATE_BYTES}"):
        too_small.accumulate_gradients(model, x, y, SequenceLoss(), _clock())


# -- parameters and skips ------------------------------------------------------------------------------


def test_parameter_validation() -> None:
    with pytest.raises(ParamError, match=r"budget_slots: expected an integer >= 1"):
        params_of(CheckpointedBPTT).resolve({"budget_slots": 0})
    with pytest.raises(ParamError, match=r"policy: expected one of"):
        params_of(CheckpointedBPTT).resolve({"policy": "lru"})
    with pytest.raises(ValueError, match=r"budget_slots: expected an integer >= 1"):
        CheckpointedBPTT(budget_slots=0)
    with pytest.raises(ValueError, match=r"budget_slots, budget_bytes: give at most one"):
        CheckpointedBPTT(budget_slots=4, budget_bytes=4096)
    with pytest.raises(ValueError, match=r"policy 'sqrt' fixes its memory"):
        CheckpointedBPTT(policy="sqrt", budget_slots=4)
    assert CheckpointedBPTT().params == {"policy": "hsm", "budget_slots": None, "budget_bytes": None, "segment": 1}
    with pytest.raises(ValueError, match=r"segment: policy .sqrt. fixes its segments"):
        CheckpointedBPTT(policy="sqrt", segment=4)


def test_skips_batchnorm(host: PluginHost) -> None:
    info = DataInfo((1, 4, 4), 3, 4, n_train=0, n_test=0)
    make = neuron_factory(host, "lif", {}, "atan")
    model = build_model(host, "convnet", info, make, {"channels": [2], "fc": 4, "norm": "batch"})
    reason = CheckpointedBPTT().skip(model, info, SequenceLoss())
    assert reason is not None and "BatchNorm" in reason
    assert CheckpointedBPTT().skip(_model(host), info, SequenceLoss("rate")) is None
