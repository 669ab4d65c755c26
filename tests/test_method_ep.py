"""Equilibrium Propagation (``ep``) and the ``gdu`` metric, in float64.

The toy network is the paper's 10-50-5. Tolerances:

* the GDU theorem makes EP's update ``−(gradient of K-step truncated BPTT) + c·β + O(β²)`` for
  a model whose step is ``∂Φ/∂s`` at a fixed point (``c`` = half the second ``β``-derivative);
  the symmetric ``±β`` difference cancels the even orders: ``c'·β² + O(β⁴)``. So halving ``β``
  divides the error by 2 (one-sided) or 4 (symmetric), up to the next order: we accept ratios in
  ``[1.8, 2.2]`` and ``[3.6, 4.4]`` for ``β ≤ 0.02``, where the next order is below 10 %. Round-off
  (``ε |∂Φ/∂θ| / β ≈ 1e-13`` at ``β = 1e-3``) and the settled free phase's residual
  (``≤ 1e-12``) are far below these errors.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from snnarena.data import DataInfo
from snnarena.factory import build_method, build_model
from snnarena.host import PluginHost
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.model import ConvergentModel
from snnarena.runner import run_suite
from snnarena.suite import parse_suite
from snnarena.testing import check_memory_class, run_conformance, saved_bytes_over_T
from snnarena_plugins.ep import GDU, EquilibriumPropagation, measure_gdu

N_IN, HIDDEN, N_OUT, BATCH = 10, 50, 5, 8
MSE = SequenceLoss("final_mse", "static_classification")
CE = SequenceLoss("final", "static_classification")
BETAS = (0.1, 0.01, 0.001)


def _no_neuron() -> Any:
    raise AssertionError("convergent models build no neuron")


def toy(host: PluginHost, name: str, seed: int = 0, hidden: int = HIDDEN, **params: Any) -> ConvergentModel:
    torch.manual_seed(seed)
    info = DataInfo((N_IN,), N_OUT, 8, n_train=0, n_test=0, task="static_classification")
    model = build_model(host, name, info, _no_neuron, {"hidden": [hidden], **params}).double()
    assert isinstance(model, ConvergentModel)
    return model


def linear_hardsigm(host: PluginHost) -> ConvergentModel:
    """A prototypical net (dt = 1) whose every unit stays inside (0, 1), where hardsigm is the
    identity: its step is exactly ``∂Φ/∂s`` and the GDU theorem holds exactly."""
    model = toy(host, "ep_prototypical", activation="hardsigm")
    with torch.no_grad():
        for layer in model.linears:
            layer.weight.mul_(0.3)
            layer.bias.fill_(0.5)
    return model


def batch(T: int, seed: int = 1) -> tuple[Tensor, Tensor]:
    """A static batch: one input ``[B, N_IN]`` in ``[0, 1)`` broadcast over ``T`` steps, labels ``[B]``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(BATCH, N_IN, generator=g, dtype=torch.float64)
    return x.unsqueeze(0).expand(T, *x.shape), torch.randint(0, N_OUT, (BATCH,), generator=g)


def gradients(host: PluginHost, model: ConvergentModel, method: str, params: dict[str, Any], T: int, loss=MSE):
    model.zero_grad(set_to_none=True)
    x, y = batch(T)
    build_method(host, method, params).accumulate_gradients(model, x, y, loss, PhaseClock(enabled=False))
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def relative_error(got: Tensor, expected: Tensor) -> float:
    return float((got - expected).norm() / expected.norm())


# -- the GDU measure on the toy network --------------------------------------------------------------
def gdu_over_beta(model: ConvergentModel, T: int, K: int = 10):
    x, y = batch(T)
    return [measure_gdu(model, x, y, MSE, beta, K, tolerance=0.05) for beta in BETAS]


def test_gdu_of_the_energy_toy_goes_to_zero_with_beta(host):
    """The paper's toy (energy-based, tanh, dt 0.08) relaxed to its fixed point: RMSE ∝ β."""
    found = gdu_over_beta(toy(host, "ep_energy", activation="tanh", dt=0.08), T=600)
    rmse = [f.rmse for f in found]
    assert rmse[0] > rmse[1] > rmse[2] and rmse[2] < 0.01
    signs = [f.sign_agreement for f in found]
    assert signs[0] <= signs[1] <= signs[2] and signs[2] > 0.995  # components near 0 may still differ
    assert all(f.settled and f.residual < 1e-9 for f in found)


def test_gdu_of_the_prototypical_toy_is_exact_where_rho_is_linear(host):
    found = gdu_over_beta(linear_hardsigm(host), T=100)
    rmse = [f.rmse for f in found]
    assert rmse[0] > rmse[1] > rmse[2] and rmse[2] < 0.01
    assert found[-1].sign_agreement > 0.995


def test_gdu_of_the_prototypical_toy_with_tanh_is_approximate(host):
    """With ρ = tanh the step is not a gradient: the RMSE stays at the ρ' bias as β → 0 (about
    0.15 here) while the signs still agree almost everywhere (the paper's approximate GDU)."""
    found = gdu_over_beta(toy(host, "ep_prototypical", activation="tanh"), T=200)
    assert all(0.02 < f.rmse < 0.3 for f in found)
    assert found[-1].sign_agreement > 0.97


@pytest.mark.parametrize("name", ["ep_energy", "ep_prototypical"])
def test_a_free_phase_stopped_early_breaks_gdu_and_is_flagged(host, name):
    model = toy(host, name, activation="tanh", dt=0.08) if name == "ep_energy" else linear_hardsigm(host)
    settled = gdu_over_beta(model, T=600)[-1]
    early = gdu_over_beta(model, T=5)[-1]
    assert settled.settled and not early.settled
    assert early.residual > 1e3 * max(settled.residual, 1e-15)
    assert early.rmse > 0.3 > 10 * settled.rmse
    assert early.sign_agreement < 0.9


def test_a_diverged_free_phase_is_nan_and_not_settled(host):
    model = toy(host, "ep_energy", activation="tanh", dt=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(math.inf)
    found = gdu_over_beta(model, T=20)[0]
    assert math.isnan(found.residual) and math.isnan(found.rmse) and not found.settled


# -- the EP update equals K-step truncated BPTT as β → 0 ------------------------------------------------
CASES = {
    "energy": (lambda host: toy(host, "ep_energy", activation="tanh", dt=0.08), 600),
    "prototypical": (linear_hardsigm, 100),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("form", ["final_mse", "final"])
def test_ep_update_tends_to_truncated_bptt_at_the_derived_order(host, case, form):
    make, T = CASES[case]
    loss = SequenceLoss(form, "static_classification")  # type: ignore[arg-type]
    K = 10  # T is a multiple of K: tbptt's last segment is the K steps after the free phase
    model = make(host)
    reference = gradients(host, model, "tbptt", {"K": K}, T, loss)
    for symmetric, order in ((False, 2.0), (True, 4.0)):
        errors = [
            relative_error(
                gradients(host, model, "ep", {"K": K, "beta": b, "symmetric": symmetric}, T, loss), reference
            )
            for b in (0.02, 0.01, 0.005)
        ]
        ratios = [errors[0] / errors[1], errors[1] / errors[2]]
        assert all(0.9 * order <= r <= 1.1 * order for r in ratios), (symmetric, errors, ratios)
        beta = 0.005
        assert errors[-1] < (10 * beta if not symmetric else 50 * beta**2)  # c·β, c'·β²: c ≈ 6, c' ≈ 21 here


def test_layer_lr_scales_each_layers_parameters(host):
    model = toy(host, "ep_prototypical", activation="tanh")
    plain = gradients(host, model, "ep", {"K": 4}, 30)
    scaled = gradients(host, model, "ep", {"K": 4, "layer_lr": [2.0, 0.5]}, 30)
    sizes = [p.numel() for p in model.parameters()]  # W_0, b_1, W_1, b_2
    factors = torch.cat(
        [torch.full((n,), f, dtype=torch.float64) for n, f in zip(sizes, (2.0, 2.0, 0.5, 0.5), strict=True)]
    )
    assert torch.allclose(scaled, plain * factors, rtol=1e-12, atol=0)


def test_layer_lr_of_the_wrong_length_names_the_parameter(host):
    model = toy(host, "ep_prototypical")
    method = build_method(host, "ep", {"layer_lr": [1.0, 1.0, 1.0]})
    with pytest.raises(Exception, match="layer_lr has 3 factors .* 2 synapse layers"):
        method.skip(model, model.info, MSE)


def test_random_sign_uses_minus_beta_on_some_batches(host):
    model = toy(host, "ep_prototypical", activation="tanh")
    plus = gradients(host, model, "ep", {"K": 4, "beta": 0.1}, 30)
    minus = gradients(host, model, "ep", {"K": 4, "beta": 0.1, "symmetric": True}, 30)
    seen = set()
    for seed in range(8):
        torch.manual_seed(seed)
        g = gradients(host, model, "ep", {"K": 4, "beta": 0.1, "random_sign": True}, 30)
        seen.add(torch.allclose(g, plus, rtol=1e-12))
        assert not torch.allclose(g, minus, rtol=1e-12)
    assert seen == {True, False}


def test_the_returned_loss_is_the_free_fixed_points(host):
    model = toy(host, "ep_prototypical", activation="tanh")
    x, y = batch(30)
    value = build_method(host, "ep", {}).accumulate_gradients(model, x, y, MSE, PhaseClock(enabled=False))
    with torch.no_grad():
        expected = float(MSE.full(model.forward_seq(x).logits, y))
    assert value == pytest.approx(expected, rel=1e-12)


def test_the_method_records_unsettled_free_phases(host):
    model = toy(host, "ep_energy", activation="tanh", dt=0.08)
    method = build_method(host, "ep", {"K": 10, "beta": 0.01})
    assert isinstance(method, EquilibriumPropagation)
    for T in (600, 5, 600):
        method.accumulate_gradients(model, *batch(T), MSE, PhaseClock(enabled=False))
    assert method.settling.batches == 3 and method.settling.unsettled == 1
    assert method.settling.unsettled_fraction == pytest.approx(1 / 3)


# -- memory and conformance -------------------------------------------------------------------------
def test_saved_bytes_are_flat_in_T_and_K_and_bptts_grow(host):
    def make():
        return toy(host, "ep_prototypical", activation="tanh")

    Ts = (8, 16, 32, 64)
    ep = saved_bytes_over_T(lambda: build_method(host, "ep", {"K": 4}), make, Ts, MSE)
    assert max(ep.values()) == min(ep.values()) > 0
    over_K = [
        saved_bytes_over_T(lambda K=K: build_method(host, "ep", {"K": K}), make, (16,), MSE)[16] for K in (2, 8, 32)
    ]
    assert len(set(over_K)) == 1 and over_K[0] == ep[16]
    bptt = saved_bytes_over_T(lambda: build_method(host, "bptt", {}), make, Ts, MSE)
    assert bptt[64] / bptt[8] > 6


@pytest.mark.parametrize("params", [{"K": 3}, {"K": 3, "symmetric": True}, {"K": 3, "layer_lr": [1.0, 0.5]}])
@pytest.mark.parametrize("loss", [MSE, CE])
def test_ep_conforms(host, params, loss):
    run_conformance(lambda: build_method(host, "ep", params), lambda: toy(host, "ep_prototypical", hidden=7), loss)
    check_memory_class(lambda: build_method(host, "ep", params), lambda: toy(host, "ep_energy", hidden=7), loss=loss)


def test_ep_skips_models_that_do_not_relax(host):
    from snnarena.factory import neuron_factory

    info = DataInfo((N_IN,), N_OUT, 8, n_train=0, n_test=0, task="static_classification")
    mlp = build_model(host, "mlp", info, neuron_factory(host, "lif"), {"hidden": [7]})
    reason = build_method(host, "ep", {}).skip(mlp, info, MSE)
    assert reason is not None and "convergent" in reason
    assert "static_classification" in (
        build_method(host, "ep", {}).skip(toy(host, "ep_energy"), info, SequenceLoss()) or ""
    )


# -- the metric on a real cell --------------------------------------------------------------------------
def test_gdu_declares_its_columns():
    names = [c.name for c in GDU.columns]
    assert names == [
        "gdu_rmse",
        "gdu_sign_agreement",
        "free_phase_residual",
        "settled",
        "unsettled_train_batches",
        "gdu_beta",
        "gdu_K",
    ]
    directions = {c.name: c.higher_is_better for c in GDU.columns}
    assert directions["gdu_rmse"] is False and directions["gdu_sign_agreement"] is True


SUITE = """
name = "ep-cell"
metrics = ["gdu"]
[train]
steps = 15
batch_size = 32
loss = "final_mse"
optimizer = { name = "adam", lr = 2e-3 }
eval_every_epoch = false
[grid]
T = [20]
[[methods]]
name = "ep"
params = { K = 5, beta = 0.1 }
[[methods]]
name = "tbptt"
params = { K = 5 }
[[models]]
name = "ep_prototypical"
params = { hidden = [32] }
[[datasets]]
name = "digits"
params = { encoding = "static" }
"""


def test_gdu_is_measured_on_whole_cells(host, tmp_path):
    outcome = run_suite(parse_suite(SUITE, host, "ep-cell.toml"), host, results_root=tmp_path)
    rows = outcome.results.set_index("method")
    assert set(rows["status"]) == {"done"}, rows["reason"]
    ep, tbptt = rows.loc["ep"], rows.loc["tbptt"]
    for row in (ep, tbptt):
        assert not row["metric_errors"], row["metric_errors"]
        assert 0.0 <= row["gdu_rmse"] and 0.5 < row["gdu_sign_agreement"] <= 1.0
        assert row["settled"] in (0.0, 1.0) and row["free_phase_residual"] >= 0.0
    assert ep["gdu_K"] == 5.0 and tbptt["gdu_K"] == 10.0  # ep's own K and β; the metric's defaults otherwise
    assert ep["gdu_beta"] == 0.1 and tbptt["gdu_beta"] == 0.01
    assert 0.0 <= ep["unsettled_train_batches"] <= 1.0 and math.isnan(tbptt["unsettled_train_batches"])
    assert ep["peak_activation_bytes"] < tbptt["peak_activation_bytes"]
