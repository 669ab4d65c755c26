"""MSG: closed-form expmap Jacobians, the msg model's contract, the dvm method (O(1) in T, gradient
fidelity vs BPTT), the energy estimate, the missing-extra message and the graphs suites."""

from __future__ import annotations

import builtins
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from snnarena import extras
from snnarena.data import DataInfo
from snnarena.factory import build_method, build_model, neuron_factory
from snnarena.graph import undirected_graph
from snnarena.host import PluginHost
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.model import SpikingModel
from snnarena.suite import SuiteError, parse_suite
from snnarena.testing import make_batch, run_conformance, run_model_conformance, saved_bytes_over_T
from snnarena_plugins.msg.manifolds import MANIFOLDS, GraphExtraMissing, Manifold

SUITES = Path(__file__).resolve().parents[1] / "suites"


def point_and_vector(name: str, scale: float, seed: int = 0, n: int = 3, d: int = 5) -> tuple[Tensor, Tensor]:
    """A point ``z`` on the manifold at distance ~``scale`` from the origin and a vector ``v``."""
    m = Manifold(name)
    g = torch.Generator().manual_seed(seed)
    o = m.origin(n, d, torch.zeros(1, dtype=torch.float64))
    z = m.move(o, scale * torch.randn(n, d, generator=g, dtype=torch.float64))
    return z, 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64)


def formula(m: Manifold, z: Tensor, v: Tensor) -> Tensor:
    """``F(z, v) = c z + S u`` written with autograd-friendly ops (the reference for the Jacobians)."""
    if m.name == "euclidean":
        return z + v
    u = v - m.sigma * m.inner(z, v) * z
    n = m.inner(u, u).clamp_min(1e-300).sqrt()
    if m.name == "sphere":
        return torch.cos(n) * z + torch.sin(n) / n * u
    return torch.cosh(n) * z + torch.sinh(n) / n * u


def close(a: Tensor, b: Tensor) -> bool:
    """Equal to float64 round-off relative to the largest entry (far points have entries ~e^‖v‖)."""
    return bool((a - b).abs().max() <= 1e-11 * max(1.0, float(b.abs().max())))


@pytest.mark.parametrize("scale", [1e-4, 0.3, 1.0])  # near the origin, and far from it
@pytest.mark.parametrize("name", MANIFOLDS)
def test_closed_form_jacobians_equal_autograd(name, scale):
    m = Manifold(name)
    z, v = point_and_vector(name, scale)
    j_v, j_z = m.jacobians(z, v)
    for i in range(z.shape[0]):
        auto_v, auto_z = torch.autograd.functional.jacobian(lambda a, b: formula(m, a, b), (z[i : i + 1], v[i : i + 1]))
        assert close(j_v[i], auto_z.squeeze(0).squeeze(1))  # w.r.t. v
        assert close(j_z[i], auto_v.squeeze(0).squeeze(1))  # w.r.t. z
    g = torch.randn_like(z)
    grad_v, grad_z = m.vjp(z, v, g)
    assert close(grad_v, torch.einsum("ni,nij->nj", g, j_v))
    assert close(grad_z, torch.einsum("ni,nij->nj", g, j_z))
    assert close(m.move(z, v), formula(m, z, v))
    assert close(m.geoopt_move(z, v), m.move(z, v))  # the forward's values are geoopt's expmap


def test_small_vectors_use_the_series_without_nan():
    for name in ("lorentz", "sphere"):
        z, _ = point_and_vector(name, 0.5)
        j_v, j_z = Manifold(name).jacobians(z, torch.zeros_like(z))
        assert torch.isfinite(j_v).all() and torch.isfinite(j_z).all()


@pytest.mark.parametrize("name", MANIFOLDS)
def test_autograd_through_the_layer_map_is_finite_at_a_zero_vector(name):
    z, _ = point_and_vector(name, 0.5)
    v = torch.zeros_like(z, requires_grad=True)
    m = Manifold(name)
    (grad,) = torch.autograd.grad(m.move(z, v).sum(), v)
    j_v, _ = m.jacobians(z, v.detach())
    assert close(grad, j_v.sum(1))  # BPTT's gradient through the forward is the closed form's


# -- the msg model ------------------------------------------------------------------------------------------

PATH4 = undirected_graph(torch.tensor([[0, 1], [1, 2], [2, 3]]), 4)
IF = {"v_threshold": 0.5}


def msg_model(host: PluginHost, manifold: str = "lorentz", T: int = 8, task: str = "node_classification",
              name: str = "msg", **params: Any) -> SpikingModel:  # fmt: skip
    info = DataInfo((5,), 3, T, 0, 0, task=task, graph=PATH4)
    make = neuron_factory(host, "if", IF, "atan")
    defaults = {"dim": 4, "layers": 1, "step_size": 0.3} if name == "msg" else {"hidden": [5, 5]}
    return build_model(host, name, info, make, {**defaults, **params}).double()


@pytest.mark.parametrize("manifold", MANIFOLDS)
def test_msg_keeps_the_graph_model_contract(host, manifold):
    run_model_conformance(lambda: msg_model(host, manifold))


@pytest.mark.parametrize("manifold", MANIFOLDS)
def test_time_mean_of_outputs_is_the_whole_sequence_readout(host, manifold):
    model = msg_model(host, manifold)
    x, _ = make_batch(model, 8)
    with torch.no_grad():
        outputs = model.forward_seq(x).logits
        means = model.input_means(x)
        r = model.represent([stage.synapse(m) for stage, m in zip(model.stages, means, strict=True)])
    assert torch.allclose(outputs.mean(0), r, rtol=1e-9, atol=1e-11)
    if manifold != "euclidean":  # the Lorentz and sphere points stay on their manifold
        assert not torch.allclose(outputs[0], r)


# -- dvm --------------------------------------------------------------------------------------------------


def grads(model: torch.nn.Module) -> dict[str, Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def method_grads(host, model, method, x, y, task="node_classification"):
    model.zero_grad(set_to_none=True)
    m = build_method(host, method)
    loss = SequenceLoss("rate", task)
    assert m.skip(model, model.info, loss) is None
    value = m.accumulate_gradients(model, x, y, loss, PhaseClock(enabled=False))
    return value, grads(model)


def cosine(a: Tensor, b: Tensor) -> float:
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-300))


@pytest.mark.parametrize("manifold", MANIFOLDS)
def test_dvm_conforms(host, manifold):
    loss = SequenceLoss("rate", "node_classification")
    run_conformance(lambda: build_method(host, "dvm"), lambda: msg_model(host, manifold), loss=loss)


@pytest.mark.parametrize("task", ["node_classification", "link_prediction"])
@pytest.mark.parametrize("manifold", MANIFOLDS)
def test_dvm_loss_is_the_forward_loss_and_its_readout_gradient_is_bptts(host, manifold, task):
    model = msg_model(host, manifold, task=task)
    x, y = make_batch(model, 8)
    if task == "link_prediction":
        y = torch.tensor([[0, 1, 1], [2, 3, 1], [0, 2, 0], [1, 3, 0]])
    with torch.no_grad():
        expected = float(SequenceLoss("rate", task).full(model.forward_seq(x).logits, y))
    dvm_loss, dvm = method_grads(host, model, "dvm", x, y, task)
    bptt_loss, bptt = method_grads(host, model, "bptt", x, y, task)
    assert math.isclose(dvm_loss, expected, rel_tol=1e-9) and math.isclose(bptt_loss, expected, rel_tol=1e-9)
    assert dvm.keys() == bptt.keys()
    per_layer = {n: cosine(dvm[n], bptt[n]) for n in dvm}
    assert all(math.isfinite(c) for c in per_layer.values()), per_layer
    for n in ("readout.weight", "readout.bias"):  # the readout sees the same values and the same loss
        assert torch.allclose(dvm[n], bptt[n], rtol=1e-9, atol=1e-12), n
    # the last stage's weight reaches the loss only through the manifold: both methods agree on it
    last = f"stages.{len(model.stages) - 1}.synapse.linear.weight"
    assert per_layer[last] == pytest.approx(1.0, abs=1e-9)


def test_dvm_trains_only_msg(host):
    other = msg_model(host, name="spiking_gcn")
    reason = build_method(host, "dvm").skip(other, other.info, SequenceLoss("rate", "node_classification"))
    assert reason and "msg" in reason and "bptt" in reason
    model = msg_model(host)
    assert "rate" in build_method(host, "dvm").skip(model, model.info, SequenceLoss("per_step", "node_classification"))


TS = (5, 10, 20, 40)


def test_saved_bytes_flat_for_dvm_and_linear_for_bptt(host):
    loss = SequenceLoss("rate", "node_classification")
    dvm = saved_bytes_over_T(lambda: build_method(host, "dvm"), lambda: msg_model(host), TS, loss)
    assert max(dvm.values()) == min(dvm.values()) > 0, dvm
    for name in ("msg", "spiking_gcn"):
        bptt = saved_bytes_over_T(
            lambda n=name: build_method(host, "bptt"), lambda n=name: msg_model(host, name=n), TS, loss
        )
        growth = bptt[40] / bptt[5]
        assert 8 * 0.5 <= growth <= 8 * 1.5, (name, bptt)


# -- energy ----------------------------------------------------------------------------------------------


def test_energy_estimate_prices_operations(host):
    from snnarena_plugins.msg.energy import OperationCount, counting

    model = msg_model(host, name="spiking_gcn")
    x, _ = make_batch(model, 4)
    count = OperationCount()
    with torch.no_grad(), counting(model, count):
        model.forward_seq(x)
    nnz_a = model.stages[0].synapse.adjacency_values.numel()
    # stage 0: real inputs (MACs) and its aggregation; stage 1 and the readout: spikes (ACs)
    assert count.macs >= float((x != 0).sum()) * 5 + 4 * nnz_a * 5 * 2
    assert count.acs > 0
    metric = host.get("metric", "graph_energy").obj()
    assert metric.params == {"e_mac": 4.6, "e_ac": 0.9}
    assert "ESTIMATE" in metric.columns[0].doc and "4.6 pJ" in metric.columns[0].doc


# -- the graph extra ---------------------------------------------------------------------------------------


@pytest.fixture
def without_geoopt(monkeypatch):
    real_import = builtins.__import__

    def refuse(name, *args, **kwargs):
        if name == "geoopt" or name.startswith("geoopt."):
            raise ImportError("No module named 'geoopt'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(extras.importlib, "import_module", lambda name: refuse(name))
    monkeypatch.setattr(builtins, "__import__", refuse)


def test_missing_graph_extra_names_it_and_the_host_still_loads(without_geoopt):
    host = PluginHost.load()
    assert not host.failures
    assert {"msg", "spiking_gcn"} <= set(host.names("model")) and "dvm" in host.names("method")
    with pytest.raises(GraphExtraMissing, match=r'pip install "snnarena\[graph\]"'):
        msg_model(host)
    text = (SUITES / "graphs.toml").read_text()
    with pytest.raises(SuiteError, match=r"models\[\d\]\.name: model 'msg' cannot run here: .*snnarena\[graph\]"):
        parse_suite(text, host, "graphs.toml")


def test_graphs_suite_validates(host):
    suite = parse_suite((SUITES / "graphs.toml").read_text(), host, "graphs.toml")
    assert suite.name == "graphs"
