"""Defining properties of ``ottt`` and ``sltt`` (research notes §3, §4, §14 V1-V3, V11).

* λ = 0, detached reset, per-step loss: BPTT, SLTT and OTTT_A give identical gradients (V1);
* one hidden layer + memoryless readout, any λ: OTTT with the input traced at the layer's leak
  and the plain spikes for the readout equals BPTT (V2); the official conventions do not;
* SLTT-K back-propagates exactly ``k`` steps: backward work ∝ k, independent of T;
* saved bytes flat in T for both (V11), linear for BPTT;
* OTTT_O steps the optimizer T times per batch; skip reasons for BatchNorm and the rate loss.
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
from snnarena.neuron import detach_state
from snnarena.reference import collect_gradients, compare_gradients
from snnarena.testing import run_conformance

PER_STEP = SequenceLoss("per_step")


def active_mlp(
    host: PluginHost,
    *,
    hidden: tuple[int, ...],
    tau: float = 2.0,
    T: int = 8,
    neuron: str = "lif",
    **neuron_params: Any,
) -> SpikingModel:
    """A float64 MLP whose weights are scaled so every hidden layer fires at 20-50 %."""
    params = {"detach_reset": True, **neuron_params}
    if neuron == "lif":
        params["tau"] = tau
    model = make_mlp(host, hidden=hidden, T=T, neuron=neuron, neuron_params=params)
    with torch.no_grad():
        for stage in model.stages:
            stage.synapse.weight.mul_(3.0)
            stage.synapse.bias.add_(0.5)
    return model


def active_convnet(host: PluginHost, *, tau: float, T: int, norm: str = "none") -> SpikingModel:
    """A float64 convnet on 1×6×6 inputs (conv 3 maps → pool → fc 5 → readout), active layers."""
    torch.manual_seed(0)
    info = DataInfo((1, 6, 6), 3, T, n_train=0, n_test=0)
    make = neuron_factory(host, "lif", {"tau": tau, "detach_reset": True}, "atan")
    model = build_model(host, "convnet", info, make, {"channels": [3], "fc": 5, "norm": norm}).double()
    with torch.no_grad():
        for stage in model.stages:
            for p in stage.synapse.parameters():
                if p.dim() > 1:
                    p.mul_(3.0)
                else:
                    p.add_(0.5)
    return model


def grads_of(
    host: PluginHost,
    model: SpikingModel,
    method: str,
    params: dict[str, Any],
    x: torch.Tensor,
    y: torch.Tensor,
    loss: SequenceLoss = PER_STEP,
) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and gradient of ``method`` on a copy of ``model`` (the model itself is untouched)."""
    clone = _copy(model)
    value = build_method(host, method, params).accumulate_gradients(clone, x, y, loss, PhaseClock(enabled=False))
    return value, collect_gradients(clone)


def _copy(model: SpikingModel) -> SpikingModel:
    return copy.deepcopy(model)


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[n] - b[n]).abs().max()) for n in b)


def test_lambda_zero_bptt_sltt_ottt_identical(host: PluginHost) -> None:
    """V1: τ = 1 (λ = 0), decay_input=False, detached reset, 3 hidden layers."""
    model = active_mlp(host, hidden=(7, 5, 4), tau=1.0, decay_input=False)
    x, y = random_batch(T=8)
    ref_loss, ref = grads_of(host, model, "bptt", {}, x, y)
    assert all(float(g.norm()) > 0 for g in ref.values())
    for method, params in [("sltt", {}), ("ottt", {"mode": "A"}), ("sltt", {"k": 8})]:
        value, grads = grads_of(host, model, method, params, x, y)
        assert value == pytest.approx(ref_loss, abs=1e-12)
        assert max_diff(grads, ref) <= 1e-10, (method, params)


def test_lambda_zero_convnet_identical(host: PluginHost) -> None:
    """V1 on Conv2d+AvgPool and Flatten+Linear synapses: the trace trick handles any affine synapse."""
    model = active_convnet(host, tau=1.0, T=6)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(6, 4, 1, 6, 6, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 3, (4,), generator=g)
    _, ref = grads_of(host, model, "bptt", {}, x, y)
    assert all(float(g.norm()) > 0 for g in ref.values())
    for method in ("ottt", "sltt"):
        _, grads = grads_of(host, model, method, {}, x, y)
        assert max_diff(grads, ref) <= 1e-10, method


@pytest.mark.parametrize(
    "neuron, tau, extra",
    [("lif", 2.0, {}), ("lif", 4.0, {"decay_input": True}), ("if", 1.0, {})],
    ids=["lif-tau2", "lif-tau4-decay-input", "if"],
)
def test_ottt_one_hidden_layer_equals_bptt(host: PluginHost, neuron: str, tau: float, extra: dict[str, Any]) -> None:
    """V2: input traced with the hidden layer's leak, bias traced, readout on plain spikes ⇒ BPTT.

    Readout convention: the readout is memoryless (postsynaptic leak 0), so its weights use
    S_L[t] itself (``readout_trace=false``, the default); that is what makes it exact.
    """
    model = active_mlp(host, hidden=(7,), tau=tau, neuron=neuron, **extra)
    x, y = random_batch(T=8)
    _, ref = grads_of(host, model, "bptt", {}, x, y)
    _, grads = grads_of(host, model, "ottt", {}, x, y)
    assert max_diff(grads, ref) <= 1e-10
    # SLTT (no trace) is not exact here: the test can tell the two apart.
    _, sltt = grads_of(host, model, "sltt", {}, x, y)
    assert compare_gradients(sltt, ref).per_layer["stages.0.synapse.weight"] < 1 - 1e-6


def test_ottt_official_conventions_are_not_exact(host: PluginHost) -> None:
    """Raw input for the first layer, traced readout, untraced bias (the official code): cos < 1."""
    model = active_mlp(host, hidden=(7,), tau=2.0)
    x, y = random_batch(T=8)
    _, ref = grads_of(host, model, "bptt", {}, x, y)
    official = {"input_trace": False, "readout_trace": True, "bias_trace": False}
    _, grads = grads_of(host, model, "ottt", official, x, y)
    cos = compare_gradients(grads, ref).per_layer
    for name in ("stages.0.synapse.weight", "stages.0.synapse.bias", "readout.weight"):
        assert 0 < cos[name] < 1 - 1e-6, name
    # only the readout bias (constant input, memoryless) stays exact
    assert cos["readout.bias"] == pytest.approx(1.0, abs=1e-12)


def test_cosine_vs_bptt_at_tau2(host: PluginHost) -> None:
    """V3 sanity check at τ = 2, 3 hidden layers: positive cosine (numbers printed, not thresholded)."""
    model = active_mlp(host, hidden=(7, 5, 4), tau=2.0)
    x, y = random_batch(T=8)
    _, ref = grads_of(host, model, "bptt", {}, x, y)
    for method in ("ottt", "sltt"):
        _, grads = grads_of(host, model, method, {}, x, y)
        fid = compare_gradients(grads, ref)
        layers = {n: round(c, 4) for n, c in fid.per_layer.items() if n.endswith("weight")}
        print(f"\n{method} vs bptt, tau=2: cosine={fid.cosine:.4f} norm_ratio={fid.norm_ratio:.4f} {layers}")
        assert fid.cosine > 0


def _unpack_count(host: PluginHost, model: SpikingModel, params: dict[str, Any], T: int) -> int:
    """Saved tensors unpacked by autograd during one SLTT batch (a deterministic backward-work count)."""
    count = 0

    def unpack(t: torch.Tensor) -> torch.Tensor:
        nonlocal count
        count += 1
        return t

    x, y = random_batch(T=T)
    method = build_method(host, "sltt", params)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, unpack):
        method.accumulate_gradients(_copy(model), x, y, PER_STEP, PhaseClock(enabled=False))
    return count


def test_sltt_k_backward_work_proportional_to_k(host: PluginHost) -> None:
    model = active_mlp(host, hidden=(7, 5), tau=2.0)
    per_step = _unpack_count(host, model, {}, T=1)
    assert per_step > 0
    for T in (8, 16):
        assert _unpack_count(host, model, {}, T) == T * per_step
        for k in (1, 2, 4):
            torch.manual_seed(T + k)
            assert _unpack_count(host, model, {"k": k}, T) == k * per_step, (T, k)


def test_sltt_k_draws_distinct_steps_reproducibly(host: PluginHost) -> None:
    method = build_method(host, "sltt", {"k": 3})
    torch.manual_seed(7)
    first = method.backward_steps(16)
    torch.manual_seed(7)
    assert method.backward_steps(16) == first
    assert len(first) == 3 and all(0 <= t < 16 for t in first)


def test_sltt_k_gradient_is_the_chosen_steps_share(host: PluginHost) -> None:
    """SLTT-K's gradient = Σ over the drawn steps of SLTT's per-step gradients (loss still / T)."""
    model = active_mlp(host, hidden=(7, 5), tau=2.0)
    T = 8
    x, y = random_batch(T=T)
    torch.manual_seed(11)
    chosen = build_method(host, "sltt", {"k": 3}).backward_steps(T)
    torch.manual_seed(11)
    _, got = grads_of(host, model, "sltt", {"k": 3}, x, y)
    # reference: SLTT with the loss of the other steps masked out
    clone = _copy(model)
    state = clone.init_state()
    for t in range(T):
        out = clone.step(x[t], detach_state(state))
        if t in chosen:
            PER_STEP.step(out.logits, y, T).backward()
        state = out.state
    assert max_diff(got, collect_gradients(clone)) <= 1e-12


def _peak(host: PluginHost, method: str, params: dict[str, Any], T: int) -> int:
    model = make_mlp(host, n_in=20, hidden=(16, 16), T=T, neuron_params={"tau": 2.0, "detach_reset": True})
    x, y = random_batch(T=T, batch=8, n_in=20)
    m = build_method(host, method, params)
    with SavedTensorMeter(exclude=list(model.parameters()) + [x]) as meter:
        m.accumulate_gradients(model, x, y, PER_STEP, PhaseClock(enabled=False))
    return meter.peak_bytes


def test_saved_bytes_flat_in_T(host: PluginHost) -> None:
    """V11: peak saved bytes over T ∈ {8, 16, 32, 64}: flat for OTTT/SLTT, ~linear for BPTT."""
    Ts = (8, 16, 32, 64)
    peaks = {
        name: [_peak(host, method, params, T) for T in Ts]
        for name, method, params in [
            ("bptt", "bptt", {}),
            ("ottt", "ottt", {}),
            ("sltt", "sltt", {}),
            ("sltt-k2", "sltt", {"k": 2}),
        ]
    }
    print("\nsaved-bytes peak per T", Ts, peaks)
    for name in ("ottt", "sltt", "sltt-k2"):
        assert max(peaks[name]) / min(peaks[name]) <= 1.15, name
    bptt = peaks["bptt"]
    assert bptt[-1] / bptt[0] >= 6.0  # 8× the steps: linear growth up to a constant offset
    assert all(b > a for a, b in zip(bptt, bptt[1:], strict=False))


def test_ottt_mode_o_steps_optimizer_every_step(host: PluginHost) -> None:
    T = 8
    x, y = random_batch(T=T)
    counts = {}
    for mode in ("A", "O"):
        model = active_mlp(host, hidden=(7, 5), tau=2.0)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        steps = 0

        def count(*_: Any) -> None:
            nonlocal steps
            steps += 1

        optimizer.register_step_post_hook(count)
        build_method(host, "ottt", {"mode": mode}).train_step(
            model, x, y, PER_STEP, optimizer, PhaseClock(enabled=False)
        )
        counts[mode] = steps
    assert counts == {"A": 1, "O": T}


def test_ottt_mode_o_equals_a_for_one_step(host: PluginHost) -> None:
    """With T = 1 both modes make the same single update."""
    x, y = random_batch(T=1)
    weights = []
    for mode in ("A", "O"):
        model = active_mlp(host, hidden=(7, 5), tau=2.0)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        build_method(host, "ottt", {"mode": mode}).train_step(
            model, x, y, PER_STEP, optimizer, PhaseClock(enabled=False)
        )
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_skip_reasons(host: PluginHost) -> None:
    info = DataInfo((1, 6, 6), 3, 4, n_train=0, n_test=0)
    bn = active_convnet(host, tau=2.0, T=4, norm="batch")
    ottt = build_method(host, "ottt", {})
    sltt = build_method(host, "sltt", {})
    reason = ottt.skip(bn, info, PER_STEP)
    assert isinstance(reason, str) and "BatchNorm" in reason
    assert sltt.skip(bn, info, PER_STEP) is None  # SLTT applies BN per step
    assert ottt.skip(active_convnet(host, tau=2.0, T=4), info, PER_STEP) is None
    mlp = active_mlp(host, hidden=(7,))
    mlp_info = DataInfo((6,), 3, 8, n_train=0, n_test=0)
    for method in (ottt, sltt):
        reason = method.skip(mlp, mlp_info, SequenceLoss("rate"))
        assert isinstance(reason, str) and "per_step" in reason
        assert method.skip(mlp, mlp_info, PER_STEP) is None


def test_parameter_validation(host: PluginHost) -> None:
    from snnarena.params import ParamError

    for name, params in [("sltt", {"k": 0}), ("ottt", {"mode": "B"}), ("ottt", {"trace_decay": 1.5})]:
        with pytest.raises(ParamError):
            build_method(host, name, params)


@pytest.mark.parametrize(
    "method, params",
    [
        ("ottt", {"mode": "A"}),
        ("ottt", {"mode": "O"}),
        ("ottt", {"input_trace": False, "readout_trace": True, "bias_trace": False}),
        ("sltt", {}),
        ("sltt", {"k": 2}),
    ],
    ids=["ottt-A", "ottt-O", "ottt-official", "sltt", "sltt-k2"],
)
def test_conformance(host: PluginHost, method: str, params: dict[str, Any]) -> None:
    """snnarena.testing's checks: gradients reach every parameter, accumulate, reproducible, no
    state leak across batches, flat saved bytes (memory_class O(1))."""
    run_conformance(lambda: build_method(host, method, params), lambda: active_mlp(host, hidden=(7, 5)))


# -- the papers' MSE term (loss_lambda) -----------------------------------------------------------

MSE_CASES = [("ottt", {}), ("sltt", {"loss_means": 1.0}), ("sltt", {"loss_means": None})]


def _mse_reference(model: SpikingModel, x: torch.Tensor, y: torch.Tensor, target: float | None) -> torch.Tensor:
    """``Σ_t MSE(o[t], g) / T`` by plain autograd through the model (``g``: one-hot or constant)."""
    logits = model.forward_seq(x).logits
    goal = torch.nn.functional.one_hot(y, logits.shape[-1]).to(logits.dtype) if target is None else target
    goal_t = torch.broadcast_to(torch.as_tensor(goal, dtype=logits.dtype), logits.shape[1:])
    return sum(torch.nn.functional.mse_loss(o, goal_t) for o in logits) / logits.shape[0]


@pytest.mark.parametrize(("method", "params"), MSE_CASES, ids=["ottt", "sltt-const", "sltt-onehot"])
def test_loss_lambda_mixes_in_exactly_the_mse_gradient(host: PluginHost, method: str, params: dict[str, Any]) -> None:
    """λ = 0 is the unchanged method; the gradient at λ is (1 − λ)·(λ = 0) + λ·(MSE's own gradient),
    where the MSE gradient (λ = 1) is checked against autograd through the model at τ = 1 (where
    SLTT and OTTT are exact)."""
    model = active_mlp(host, hidden=(7, 5), tau=1.0, decay_input=False)
    x, y = random_batch(T=6)
    plain_value, plain = grads_of(host, model, method, params, x, y)
    zero_value, zero = grads_of(host, model, method, {**params, "loss_lambda": 0.0}, x, y)
    assert zero_value == plain_value and max_diff(zero, plain) == 0.0
    mse_value, mse = grads_of(host, model, method, {**params, "loss_lambda": 1.0}, x, y)
    ref_model = _copy(model)
    reference = _mse_reference(ref_model, x, y, params.get("loss_means"))
    reference.backward()
    assert mse_value == pytest.approx(float(reference.detach()), rel=1e-12)
    assert max_diff(mse, collect_gradients(ref_model)) <= 1e-10
    lam = 0.3
    mixed_value, mixed = grads_of(host, model, method, {**params, "loss_lambda": lam}, x, y)
    assert mixed_value == pytest.approx((1 - lam) * plain_value + lam * mse_value, rel=1e-12)
    assert max_diff(mixed, {n: (1 - lam) * plain[n] + lam * mse[n] for n in plain}) <= 1e-12
    assert max_diff(mixed, plain) > 1e-6


def test_loss_lambda_needs_class_labels(host: PluginHost) -> None:
    mlp = active_mlp(host, hidden=(7,))
    info = DataInfo((6,), 3, 8, n_train=0, n_test=0)
    regression = SequenceLoss("per_step", task="per_step_regression")
    for method in ("ottt", "sltt"):
        assert build_method(host, method, {}).skip(mlp, info, regression) is None
        reason = build_method(host, method, {"loss_lambda": 0.05}).skip(mlp, info, regression)
        assert isinstance(reason, str) and "loss_lambda" in reason
