"""The hand-written multi-step LIF/IF/ALIF path (:mod:`snnarena.multistep`) against autograd
through ``T`` calls of ``step``: the same spikes and states bit for bit, the same gradients of the
input current, the initial state and an MLP's weights (1e-12 in float64, round-off in float32),
for every surrogate, reset mode and ``detach_reset``, and fewer bytes saved for backward."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import make_mlp, random_batch
from torch import Tensor

from snnarena.factory import neuron_factory
from snnarena.host import PluginHost
from snnarena.loss import SequenceLoss
from snnarena.model import SpikingModel
from snnarena.multistep import SpikeLinear, set_fused
from snnarena.neuron import Neuron
from snnarena_plugins.neurons import LeakyIntegrateAndFire

T, BATCH, N = 9, 3, 8
EXACT = 1e-12
SURROGATES = ("sigmoid", "atan", "fast_sigmoid", "triangle", "rectangle", "bellec")
RESETS = [
    pytest.param({"reset": "soft", "detach_reset": False}, id="soft"),
    pytest.param({"reset": "soft", "detach_reset": True}, id="soft-detached"),
    pytest.param({"reset": "hard", "detach_reset": False, "v_reset": -0.2}, id="hard"),
    pytest.param({"reset": "hard", "detach_reset": True}, id="hard-detached"),
]
#: (neuron, parameters) that differ in the equations the fused path implements.
NEURONS = [
    pytest.param("if", {}, id="if"),
    pytest.param("lif", {"tau": 2.0}, id="lif"),
    pytest.param("lif", {"tau": 1.0}, id="lif-no-memory"),
    pytest.param("lif", {"tau": 3.0, "decay_input": True}, id="lif-decay-input"),
]
ALIFS = [
    pytest.param({}, id="alif"),
    pytest.param({"detach_reset": True}, id="alif-detached"),
    pytest.param({"tau": 1.0, "tau_adapt": 2.0}, id="alif-no-memory"),
    pytest.param(
        {"tau_adapt": 4.0, "beta": 1.5, "adaptive_fraction": 0.5, "refractory": 2, "decay_input": True},
        id="alif-refractory-mixed",
    ),
]


def test_every_registered_surrogate_is_covered(host: PluginHost) -> None:
    assert set(host.names("surrogate")) == set(SURROGATES)


def make(host: PluginHost, name: str, params: dict[str, Any], surrogate: str) -> Neuron:
    return neuron_factory(host, name, params, surrogate)()


def inputs(dtype: torch.dtype = torch.float64, seed: int = 0) -> Tensor:
    """Currents ``[T, B, N]`` around the threshold (every surrogate's support), some firing."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, BATCH, N, generator=g, dtype=dtype) * 1.6 - 0.2).requires_grad_(True)


def random_state(neuron: Neuron, like: Tensor, seed: int = 1) -> Any:
    """A non-zero initial state with gradients (the refractory countdown stays integer, no grad)."""
    g = torch.Generator().manual_seed(seed)
    fields = []
    for name, zero in zip(neuron.init_state(like)._fields, neuron.init_state(like), strict=True):
        if name == "refractory":
            fields.append(torch.randint(0, 2, zero.shape, generator=g).to(zero.dtype))
        else:
            fields.append((torch.rand(zero.shape, generator=g, dtype=zero.dtype) * 0.8).requires_grad_(True))
    return type(neuron.init_state(like))(*fields)


def weighted_loss(spikes: Tensor, state: Any, seed: int = 2) -> Tensor:
    """A loss that reads every spike and every differentiable field of the final state."""
    g = torch.Generator().manual_seed(seed)
    loss = (spikes * torch.randn(spikes.shape, generator=g, dtype=spikes.dtype)).sum()
    for field in state:
        if field.requires_grad:
            loss = loss + (field * torch.randn(field.shape, generator=g, dtype=field.dtype)).sum()
    return loss


def run_both(neuron: Neuron, x: Tensor, state: Any) -> dict[bool, tuple[Tensor, Any, list[Tensor | None]]]:
    """Spikes, final state and gradients (input, then each initial-state field) per ``fused``."""
    leaves = [x] + [s for s in state if s.requires_grad]
    out = {}
    for fused in (True, False):
        neuron.fused = fused
        spikes, final = neuron.forward_seq(x, state)
        kind = type(spikes.grad_fn).__name__
        assert ("Sequence" in kind) == fused, f"fused={fused} ran through {kind}"
        grads = torch.autograd.grad(weighted_loss(spikes, final), leaves, allow_unused=True)
        out[fused] = (spikes.detach(), [f.detach() for f in final], list(grads))
    return out


def assert_same(runs: dict[bool, tuple[Tensor, Any, list[Tensor | None]]], atol: float = EXACT) -> None:
    (s_f, st_f, g_f), (s_p, st_p, g_p) = runs[True], runs[False]
    assert s_f.dtype == s_p.dtype and torch.equal(s_f, s_p), "spikes differ"
    assert 0 < s_f.mean() < 1, "the test input must make some neurons fire and others not"
    for a, b in zip(st_f, st_p, strict=True):
        assert torch.equal(a, b), "final states differ"
    for a, b in zip(g_f, g_p, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=atol)


@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize(("name", "params"), NEURONS)
def test_lif_and_if_gradients_equal_autograd(host, name, params, reset, surrogate):
    neuron = make(host, name, {**params, **reset}, surrogate)
    x = inputs()
    assert_same(run_both(neuron, x, random_state(neuron, x[0])))


@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("params", ALIFS)
def test_alif_gradients_equal_autograd(host, params, surrogate):
    neuron = make(host, "alif", {"v_threshold": 0.5, **params}, surrogate)
    x = inputs()
    assert_same(run_both(neuron, x, random_state(neuron, x[0])))


@pytest.mark.parametrize(("name", "params"), [("lif", {"reset": "hard"}), ("alif", {"refractory": 1})])
def test_starts_from_rest_and_float32_agrees_to_round_off(host, name, params):
    neuron = make(host, name, params, "atan")
    x = inputs(torch.float32)
    x0 = neuron.init_state(x[0])
    assert_same(run_both(neuron, x, x0), atol=1e-5)


def test_a_state_carried_with_its_graph_across_segments_gets_the_same_gradient(host):
    """TBPTT-style segments whose state keeps its graph: the gradient reaches the first segment
    through the fused node's state output and back into its initial state."""
    for name, params in (("lif", {"reset": "hard"}), ("alif", {"refractory": 1, "adaptive_fraction": 0.5})):
        neuron = make(host, name, {"v_threshold": 0.5, **params}, "triangle")
        x = inputs()
        state = random_state(neuron, x[0])
        leaves = [x] + [s for s in state if s.requires_grad]
        grads = {}
        for fused in (True, False):
            neuron.fused = fused
            first, mid = neuron.forward_seq(x[:4], state)
            second, final = neuron.forward_seq(x[4:], mid)
            loss = weighted_loss(torch.cat([first, second]), final)
            grads[fused] = torch.autograd.grad(loss, leaves)
        for a, b in zip(grads[True], grads[False], strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=EXACT)


def mlp_gradients(model: torch.nn.Module, x: Tensor, y: Tensor, fused: bool) -> list[Tensor]:
    set_fused(model, fused)
    model.zero_grad()
    SequenceLoss("per_step").full(model.forward_seq(x).logits, y).backward()
    return [p.grad.clone() for p in model.parameters()]


#: Neurons of the MLP: lif with every reset, alif with and without a detached reset.
MLP_NEURONS = [pytest.param("lif", r.values[0], id=f"lif-{r.id}") for r in RESETS] + [
    pytest.param("alif", {"detach_reset": d, "refractory": 1, "tau_adapt": 5.0}, id=f"alif-detach-{d}")
    for d in (False, True)
]


@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize(("name", "params"), MLP_NEURONS)
def test_bptt_weight_gradients_of_an_mlp_equal_autograd(host, name, params, surrogate):
    model = make_mlp(host, neuron=name, neuron_params=params, surrogate=surrogate, weight_scale=2.0)
    x, y = random_batch()
    fused, plain = mlp_gradients(model, x, y, True), mlp_gradients(model, x, y, False)
    assert any(g.abs().sum() > 0 for g in plain[:-2]), "the hidden layers must receive a gradient"
    for a, b in zip(fused, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=EXACT)


def test_float32_mlp_gradients_agree_to_round_off(host):
    model = make_mlp(host, neuron_params={"reset": "hard"}, dtype=torch.float32, weight_scale=2.0)
    x, y = random_batch(dtype=torch.float32)
    for a, b in zip(mlp_gradients(model, x, y, True), mlp_gradients(model, x, y, False), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def saved_tensors(neuron: Neuron, x: Tensor) -> list[Tensor]:
    """Every tensor autograd saves for backward during one ``forward_seq``."""
    saved: list[Tensor] = []

    def pack(t: Tensor) -> Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        neuron.forward_seq(x)
    return saved


@pytest.mark.parametrize("reset", ["soft", "hard"])
def test_the_fused_lif_saves_only_the_membrane_before_firing(host, reset):
    """One ``[T, B, N]`` tensor ``H`` in the input's dtype, instead of per-step tensors."""
    neuron = make(host, "lif", {"reset": reset}, "atan")
    x = inputs(torch.float32)
    fused = saved_tensors(neuron, x)
    assert [(t.shape, t.dtype) for t in fused] == [(x.shape, torch.float32)]
    neuron.fused = False
    plain = saved_tensors(neuron, x)
    assert len(plain) >= T
    nbytes = sum(t.numel() * t.element_size() for t in plain)
    assert fused[0].numel() * 4 <= nbytes / (2 if reset == "hard" else 1)


def test_the_fused_alif_saves_its_refractory_mask_as_bool(host):
    neuron = make(host, "alif", {"refractory": 1}, "atan")
    x = inputs(torch.float32)
    kinds = sorted(str(t.dtype) for t in saved_tensors(neuron, x))
    assert kinds == ["torch.bool", "torch.float32", "torch.float32"]


def test_without_a_graph_the_fused_forward_is_the_step_path_bit_for_bit(host):
    for name, params in (("lif", {"reset": "hard", "decay_input": True}), ("alif", {"refractory": 2})):
        neuron = make(host, name, params, "sigmoid")
        x = inputs(torch.float32).detach() * 3
        with torch.no_grad():
            fused_spikes, fused_state = neuron.forward_seq(x)
            neuron.fused = False
            spikes, state = neuron.forward_seq(x)
        assert torch.equal(fused_spikes, spikes)
        assert all(torch.equal(a, b) for a, b in zip(fused_state, state, strict=True))


#: Constants that are not binary fractions (λ = 2/3, V_th = 0.7, β = 1.3), with every forward path:
#: the hard reset to 0 (its own loop), to another value, and the soft reset.
ROUNDING = [
    pytest.param("lif", {"tau": 3.0, "reset": "hard"}, id="lif-hard-to-0"),
    pytest.param("lif", {"tau": 3.0, "reset": "hard", "v_reset": -0.3, "decay_input": True}, id="lif-hard-to-v"),
    pytest.param("lif", {"tau": 3.0, "reset": "soft"}, id="lif-soft"),
    pytest.param("if", {"reset": "hard"}, id="if-hard-to-0"),
    pytest.param("alif", {"tau": 3.0, "beta": 1.3, "tau_adapt": 7.0, "refractory": 1}, id="alif"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("name", "params"), ROUNDING)
def test_the_fused_forward_rounds_as_step_does(host, name, params, dtype):
    """Bit-equal spikes and final states over many steps from a random state, with constants that
    round: a fused multiply-add (one rounding instead of ``step``'s two) would show in the states."""
    neuron = make(host, name, {"v_threshold": 0.7, **params}, "atan")
    g = torch.Generator().manual_seed(3)
    x = torch.rand(60, 16, 64, generator=g, dtype=dtype) * 1.1
    state = type(neuron.init_state(x[0]))(
        *(
            torch.rand(f.shape, generator=g, dtype=dtype) * 0.5 * (n != "refractory")
            for n, f in zip(neuron.init_state(x[0])._fields, neuron.init_state(x[0]), strict=True)
        )
    )
    with torch.no_grad():
        spikes, final = neuron.forward_seq(x, state)
        neuron.fused = False
        ref_spikes, ref_final = neuron.forward_seq(x, state)
    assert 0.05 < float(ref_spikes.mean()) < 0.95
    assert torch.equal(spikes, ref_spikes)
    for a, b in zip(final, ref_final, strict=True):
        assert torch.equal(a, b)


def test_a_subclass_that_changes_the_step_runs_its_own_step(host):
    calls = []

    class Counted(LeakyIntegrateAndFire):
        def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
            calls.append(1)
            return super().step(x, state)

    neuron = Counted(make(host, "lif", {}, "atan").surrogate)
    neuron.forward_seq(inputs())
    assert len(calls) == T


def test_set_fused_switches_every_neuron_of_a_model(host):
    model = make_mlp(host)
    set_fused(model, False)
    assert [stage.neuron.fused for stage in model.stages] == [False, False]
    set_fused(model, True)
    assert all(stage.neuron.fused for stage in model.stages)


@pytest.mark.parametrize(
    ("name", "params"),
    [("lif", {"reset": "soft"}), ("lif", {"reset": "hard"}), ("alif", {"refractory": 1, "adaptive_fraction": 0.5})],
)
def test_backward_blocks_join_exactly(host, monkeypatch, name, params):
    """On the CPU the backward coefficients are computed in blocks of steps; with blocks of one,
    two and three steps (uneven blocks too) the gradients do not change."""
    import snnarena.multistep as multistep

    neuron = make(host, name, {"v_threshold": 0.5, **params}, "sigmoid")
    x = inputs()
    state = random_state(neuron, x[0])
    expected = run_both(neuron, x, state)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # blocks scale with the threads
    for steps_per_block in (1, 2, 3):
        monkeypatch.setattr(multistep, "CPU_BLOCK_ELEMENTS", steps_per_block * BATCH * N)
        assert multistep._blocks(T - 1, x[0])[-1] == (0, steps_per_block)
        runs = run_both(neuron, x, state)
        for a, b in zip(runs[True][2], expected[False][2], strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=EXACT)


def test_float32_thresholds_that_are_not_representable_fire_as_step_does(host):
    """``V_th = 0.7`` is not a float32 number: the fused path compares with float32(0.7), as
    ``step``'s ``H − V_th`` does; inputs that land on and beside the threshold fire alike."""
    for name, params in (("lif", {}), ("alif", {"beta": 0.0})):
        neuron = make(host, name, {"v_threshold": 0.7, "tau": 1.0, **params}, "atan")  # τ = 1: H = X
        on = torch.full((1, 1, 4), 0.7, dtype=torch.float32)
        x = torch.cat([on, torch.nextafter(on, torch.zeros(())), torch.nextafter(on, torch.ones(()))])
        with torch.no_grad():
            fused = neuron.forward_seq(x)[0]
            neuron.fused = False
            plain = neuron.forward_seq(x)[0]
        assert torch.equal(fused, plain) and fused[:, 0, 0].tolist() == [1.0, 0.0, 1.0]


def test_half_precision_runs_the_step_path(host):
    neuron = make(host, "lif", {}, "atan")
    x = inputs(torch.float32).detach().to(torch.bfloat16).requires_grad_(True)
    spikes, _ = neuron.forward_seq(x)
    assert "Sequence" not in type(spikes.grad_fn).__name__


def spike_linear_mlp(host: PluginHost, neuron: str, params: dict[str, Any] | None = None) -> SpikingModel:
    """``make_mlp`` with its hidden synapses and readout as :class:`SpikeLinear` (same weights)."""
    model = make_mlp(host, neuron=neuron, neuron_params=params, weight_scale=2.0)
    for owner, name in [(stage, "synapse") for stage in model.stages] + [(model, "readout")]:
        old = getattr(owner, name)
        new = SpikeLinear(old.in_features, old.out_features, dtype=old.weight.dtype)
        new.load_state_dict(old.state_dict())
        setattr(owner, name, new)
    return model


def saved_during(model: torch.nn.Module, x: Tensor) -> list[Tensor]:
    """Every tensor autograd saves for backward during one ``forward_seq`` of ``model``."""
    saved: list[Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        model.forward_seq(x)
    return saved


@pytest.mark.parametrize(
    ("neuron", "params", "per_layer"),
    [
        pytest.param("lif", {"reset": "hard"}, 1, id="lif"),  # H
        pytest.param("alif", {}, 2, id="alif"),  # H and A
        pytest.param("alif", {"refractory": 1}, 3, id="alif-refractory"),  # H, A and the mask
    ],
)
def test_spike_linear_keeps_no_copy_of_fused_spikes_and_gets_the_same_gradients(host, neuron, params, per_layer):
    """Layer 2 and the readout save, for their weight gradients, the very tensors their spiking
    layer saved (``H`` ...: same storage), not a float or bool copy of the spikes."""
    model = spike_linear_mlp(host, neuron, params)
    x, y = random_batch()
    fused, plain = mlp_gradients(model, x, y, True), mlp_gradients(model, x, y, False)
    for a, b in zip(fused, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=EXACT)
    set_fused(model, True)
    saved = saved_during(model, x)
    rows = x.shape[0] * x.shape[1]
    assert not any(t.shape in ((rows, 7), (rows, 5)) for t in saved), "no copy of the spikes"
    storages = [t.untyped_storage().data_ptr() for t in saved if t.shape[:2] == x.shape[:2]]
    shared = {p for p in storages if storages.count(p) > 1}
    assert len(shared) == 2 * per_layer, "layers 1 and 2 share what they saved with the synapse they feed"


@pytest.mark.parametrize("neuron", ["lif", "alif"])
def test_spike_linear_on_part_of_a_spike_train_keeps_it_as_bool(host, neuron):
    """Steps of a fused spike train (a slice, not the whole output) cannot be rebuilt from the
    layer's saved tensors: they are kept as bool, with the same gradient as ``nn.Linear``."""
    layer = make(host, neuron, {"v_threshold": 0.5}, "atan")
    spikes, _ = layer.forward_seq(inputs())
    part = spikes[2:5].flatten(0, 1)
    linear = SpikeLinear(N, 3, dtype=torch.float64)
    saved: list[Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = linear(part)
    assert [t.shape for t in saved if t.dtype == torch.bool] == [part.shape]
    g = torch.randn(out.shape, dtype=out.dtype)
    got = torch.autograd.grad(out, [linear.weight, linear.bias], g)
    want = torch.autograd.grad(
        torch.nn.functional.linear(part, linear.weight, linear.bias), [linear.weight, linear.bias], g
    )
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=EXACT)


def test_spikes_rebuilt_from_a_float32_threshold_equal_the_forward(host):
    """The weight gradient of a synapse fed by a fused layer uses spikes rebuilt from ``H``; with a
    threshold that is not a float32 number they must still be the forward's spikes exactly."""
    layer = make(host, "lif", {"v_threshold": 0.7, "tau": 1.0}, "atan")
    on = torch.full((1, 2, N), 0.7, dtype=torch.float32)
    x = torch.cat([on, torch.nextafter(on, torch.zeros(())), torch.nextafter(on, torch.ones(()))])
    spikes, _ = layer.forward_seq(x.requires_grad_(True))
    linear = SpikeLinear(N, 3)
    out = linear(spikes.flatten(0, 1))
    g = torch.randn(out.shape)
    (g_w,) = torch.autograd.grad(out, [linear.weight], g)
    torch.testing.assert_close(g_w, g.t() @ spikes.detach().flatten(0, 1), rtol=0, atol=0)
    assert spikes[:, 0, 0].tolist() == [1.0, 0.0, 1.0]


def test_spike_linear_is_linear_on_other_inputs() -> None:
    layer = SpikeLinear(3, 2).double()
    x = torch.rand(4, 3, dtype=torch.float64, requires_grad=True)
    out = layer(x)
    assert type(out.grad_fn).__name__ == "AddmmBackward0"
    assert torch.equal(out, torch.nn.functional.linear(x, layer.weight, layer.bias))


def test_the_mlp_plugin_keeps_spikes_as_bool_for_its_weight_gradients(host: PluginHost) -> None:
    model = make_mlp(host, hidden=(6, 7))
    synapses = [stage.synapse for stage in model.stages]
    assert not isinstance(synapses[0][-1] if isinstance(synapses[0], torch.nn.Sequential) else synapses[0], SpikeLinear)
    assert isinstance(synapses[1], SpikeLinear) and isinstance(model.readout, SpikeLinear)
