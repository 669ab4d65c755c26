"""Gradient fidelity that tells the truth: per-role cosines (readout, the worst hidden tensor, the
first layer) next to the global one, measured at several epochs of training without changing it."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import pytest
import torch
from plugin_fixtures import TINY_SUITE
from torch import nn

import snnarena
import snnarena.cell
from snnarena.cell import CurvePoint, build_cell, fidelity_epochs, planned_epochs, run_cell, train
from snnarena.columns import CORE_COLUMNS
from snnarena.data import DataInfo
from snnarena.factory import build_model, neuron_factory, no_neuron
from snnarena.graph import undirected_graph
from snnarena.host import PluginHost
from snnarena.reference import ParameterRoles, compare_by_role, parameter_roles
from snnarena.results import CURVE_COLUMNS, FIDELITY_CURVE_COLUMNS, RESULT_COLUMNS
from snnarena.suite import CellSpec, parse_suite
from snnarena_plugins.bptt import BPTT
from snnarena_plugins.models import SpikingMLP

ROLE_COLUMNS = ("grad_cosine_readout", "grad_cosine_hidden_min", "grad_cosine_first_layer")


# -- which parameters are the readout ----------------------------------------------------------


def _model(host: PluginHost, name: str) -> nn.Module:
    make = neuron_factory(host, "lif", {}, "atan")
    if name == "ep_prototypical":
        info = DataInfo((6,), 3, 4, n_train=0, n_test=0, task="static_classification")
        return build_model(host, name, info, no_neuron(name), {"hidden": [5, 4]})
    if name == "spiking_gcn":
        graph = undirected_graph(torch.tensor([(0, 1), (1, 2), (2, 0)]), 3)
        info = DataInfo((4,), 3, 4, n_train=0, n_test=0, task="node_classification", graph=graph)
        return build_model(host, name, info, make, {"hidden": [6, 5]})
    return build_model(host, name, DataInfo((6,), 3, 4, n_train=0, n_test=0), make, {"hidden": [7, 5]})


@pytest.mark.parametrize(
    "name, readout, first",
    [
        ("mlp", ("readout.weight", "readout.bias"), "stages.0.synapse.weight"),
        ("rsnn", ("readout.weight", "readout.bias"), "stages.0.synapse.weight"),
        ("ep_prototypical", ("synapses.2.weight", "synapses.2.bias"), "synapses.0.weight"),
        ("spiking_gcn", ("readout.weight", "readout.bias"), "stages.0.synapse.linear.weight"),
    ],
)
def test_each_family_splits_into_readout_hidden_and_first_layer(
    host: PluginHost, name: str, readout: tuple[str, ...], first: str
) -> None:
    model = _model(host, name)
    roles = parameter_roles(model)
    names = [n for n, _ in model.named_parameters()]
    assert roles.readout == readout
    assert roles.hidden == tuple(n for n in names if n not in readout)  # every other parameter, in order
    assert roles.first_layer == first
    if name == "rsnn":
        assert "stages.0.recurrent.weight" in roles.hidden  # the input synapse, not the recurrent one, is "first"


def test_a_model_of_another_layout_has_no_roles() -> None:
    roles = parameter_roles(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)))
    assert roles == ParameterRoles((), (), None)
    out = compare_by_role({"0.weight": torch.ones(4, 3)}, {"0.weight": torch.ones(4, 3)}, roles)
    assert all(math.isnan(v) for v in (out.readout, out.hidden_min, out.first_layer))


def test_compare_by_role_by_hand() -> None:
    reference = {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([0.0, 2.0]), "c": torch.zeros(2), "r": torch.ones(2)}
    grads = {"a": torch.tensor([1.0, 1.0]), "b": torch.zeros(2), "c": torch.ones(2), "r": torch.tensor([1.0, -1.0])}
    out = compare_by_role(grads, reference, ParameterRoles(("r",), ("a", "c"), "a"))
    assert out.readout == pytest.approx(0.0)  # orthogonal
    assert out.first_layer == pytest.approx(1 / math.sqrt(2))
    assert out.hidden_min == pytest.approx(1 / math.sqrt(2))  # "c": BPTT's gradient is zero, left out
    with_still = compare_by_role(grads, reference, ParameterRoles(("r",), ("a", "b", "c"), "a"))
    assert with_still.hidden_min == 0.0  # "b": the method leaves still what BPTT moves
    none_left = compare_by_role(grads, reference, ParameterRoles(("r",), ("c",), None))
    assert math.isnan(none_left.hidden_min) and math.isnan(none_left.first_layer)


def test_the_new_columns_are_declared_and_ordered() -> None:
    declared = {c.name: c for c in CORE_COLUMNS}
    for name in ROLE_COLUMNS:
        assert declared[name].higher_is_better is True and declared[name].kind == "ratio"
        assert name in RESULT_COLUMNS
    assert set(FIDELITY_CURVE_COLUMNS) <= set(CURVE_COLUMNS)
    point_fields = {f.name for f in dataclasses.fields(CurvePoint)}
    assert set(FIDELITY_CURVE_COLUMNS) <= point_fields


# -- a method that is right at the readout and wrong in a hidden layer ---------------------------

FLIPPED = "stages.0.synapse.bias"


class FlipsOneHiddenTensor(BPTT):
    """BPTT with the gradient of one small hidden tensor negated."""

    name = "flips_hidden"

    def accumulate_gradients(self, model: Any, *args: Any) -> float:
        value = super().accumulate_gradients(model, *args)
        grad = dict(model.named_parameters())[FLIPPED].grad
        grad.neg_()
        return value


class NoisyBPTT(BPTT):
    """BPTT plus a little noise drawn from torch's global generator (a stochastic method)."""

    name = "noisy_bptt"

    def accumulate_gradients(self, model: Any, *args: Any) -> float:
        value = super().accumulate_gradients(model, *args)
        for p in model.parameters():
            p.grad.add_(1e-3 * torch.randn_like(p.grad))
        return value


class CountingBPTT(BPTT):
    """BPTT that counts its gradient computations."""

    name = "counting_bptt"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.calls = 0

    def accumulate_gradients(self, *args: Any) -> float:
        self.calls += 1
        return super().accumulate_gradients(*args)


class MLPWithNormedReadout(SpikingMLP):
    """The built-in MLP with batch norm before its readout (buffers that a forward pass moves)."""

    name = "mlp_bn"

    def __init__(self, *args: Any, **params: Any) -> None:
        super().__init__(*args, **params)
        linear = self.readout
        assert isinstance(linear, nn.Linear)
        self.readout = nn.Sequential(nn.BatchNorm1d(linear.in_features), linear)


class FidelityTestPlugin:
    @snnarena.hookimpl
    def register_models(self, register: Any) -> None:
        register(MLPWithNormedReadout)

    @snnarena.hookimpl
    def register_gradient_methods(self, register: Any) -> None:
        register(FlipsOneHiddenTensor)
        register(NoisyBPTT)
        register(CountingBPTT)


@pytest.fixture
def fid_host(arena_host: PluginHost) -> Iterator[PluginHost]:
    arena_host.add_plugin(FidelityTestPlugin(), "fidelity-test-plugin")
    try:
        yield arena_host
    finally:
        arena_host.remove_plugin("fidelity-test-plugin")


def tiny_cell(host: PluginHost, method: str = "bptt", model: str = "mlp", **train: Any) -> CellSpec:
    """The tiny suite's first cell (tiny_blobs: 4 batches of 16 per epoch) with ``method``, ``model``
    and ``train`` settings changed."""
    text = TINY_SUITE.format(behaviours='["ok"]').replace('name = "bptt"', f'name = "{method}"')
    spec = next(c for c in parse_suite(text, host).cells if c.method == method)
    return dataclasses.replace(spec, model=model, train={**spec.train, **train})


def test_a_wrong_hidden_layer_shows_in_hidden_min_not_in_the_readout(fid_host: PluginHost) -> None:
    row = run_cell(tiny_cell(fid_host, "flips_hidden"), fid_host, "r", "cpu").row
    assert row["status"] == "done", row["reason"]
    assert row["grad_cosine_readout"] == pytest.approx(1.0, abs=1e-5)
    assert row["grad_cosine_first_layer"] == pytest.approx(1.0, abs=1e-5)  # the weight, not the flipped bias
    assert row["grad_cosine_hidden_min"] == pytest.approx(-1.0, abs=1e-5)
    assert row["grad_cosine_bptt"] > 0.8  # the global cosine hides it (0.84 here)
    exact = run_cell(tiny_cell(fid_host, "bptt"), fid_host, "r", "cpu").row
    for name in ("grad_cosine_bptt", *ROLE_COLUMNS):
        assert exact[name] == pytest.approx(1.0, abs=1e-5), name


# -- fidelity during training ------------------------------------------------------------------


def test_fidelity_epochs_spread_from_first_to_last() -> None:
    assert fidelity_epochs(3, 10) == {1, 6, 10}
    assert fidelity_epochs(4, 10) == {1, 4, 7, 10}
    assert fidelity_epochs(3, 2) == {1, 2}
    assert fidelity_epochs(1, 7) == {7}
    assert fidelity_epochs(0, 5) == frozenset() and fidelity_epochs(3, 0) == frozenset()
    assert planned_epochs(5, None, 4) == 5
    assert planned_epochs(None, 18, 4) == 5 and planned_epochs(None, 16, 4) == 4


def _measured_epochs(curves: list[dict[str, Any]]) -> list[int]:
    for point in curves:
        values = [point[k] for k in FIDELITY_CURVE_COLUMNS]
        assert all(math.isnan(v) for v in values) or all(math.isfinite(v) for v in values), point
    return [p["epoch"] for p in curves if math.isfinite(p["grad_cosine_bptt"])]


@pytest.mark.parametrize(
    "budget, points, expected",
    [
        ({"epochs": 5}, 3, [1, 3, 5]),
        ({"epochs": None, "steps": 18}, 3, [1, 3, 5]),  # 4 steps per epoch: 5 epochs, the last a partial one
        ({"epochs": 5}, 1, [5]),
        ({"epochs": 5}, 0, []),
    ],
)
def test_curve_points_carry_fidelity_at_the_configured_epochs(
    fid_host: PluginHost, budget: dict[str, Any], points: int, expected: list[int]
) -> None:
    record = run_cell(tiny_cell(fid_host, **budget, fidelity_points=points), fid_host, "r", "cpu")
    assert record.row["status"] == "done", record.row["reason"]
    assert len(record.curves) == 5 and all(set(p) == set(CURVE_COLUMNS) for p in record.curves)
    assert _measured_epochs(record.curves) == expected
    for point in record.curves:
        if point["epoch"] in expected:  # exact BPTT against itself
            assert point["grad_cosine_bptt"] == pytest.approx(1.0, abs=1e-5)
            assert point["grad_norm_ratio_bptt"] == pytest.approx(1.0, abs=1e-5)


def test_no_fidelity_means_no_curve_fidelity(fid_host: PluginHost) -> None:
    record = run_cell(tiny_cell(fid_host, fidelity=False), fid_host, "r", "cpu")
    assert _measured_epochs(record.curves) == []
    assert all(name not in record.row or math.isnan(record.row[name]) for name in ROLE_COLUMNS)


def _trained(host: PluginHost, spec: CellSpec) -> tuple[dict[str, torch.Tensor], list[CurvePoint]]:
    built = build_cell(spec, host, torch.device("cpu"))
    curve: list[CurvePoint] = []
    train(built, spec, torch.device("cpu"), curve.append)
    return {k: v.clone() for k, v in built.prepared.state_dict().items()}, curve


def test_measuring_during_training_leaves_training_bit_identical(
    fid_host: PluginHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stochastic method on a model with batch-norm buffers: the measurements draw random numbers
    and move the running statistics, and must put both back."""
    spec = tiny_cell(fid_host, "noisy_bptt", "mlp_bn", epochs=3)
    plain, plain_curve = _trained(fid_host, dataclasses.replace(spec, train={**spec.train, "fidelity_points": 0}))
    measured, measured_curve = _trained(fid_host, dataclasses.replace(spec, train={**spec.train, "fidelity_points": 3}))
    assert _measured_epochs([dataclasses.asdict(p) for p in measured_curve]) == [1, 2, 3]
    assert plain.keys() == measured.keys()
    assert all(torch.equal(plain[k], measured[k]) for k in plain), [
        k for k in plain if not torch.equal(plain[k], measured[k])
    ]
    assert [p.train_loss for p in plain_curve] == [p.train_loss for p in measured_curve]
    assert [p.val_accuracy for p in plain_curve] == [p.val_accuracy for p in measured_curve]
    # the guard is what keeps them equal: without it the same runs differ
    monkeypatch.setattr(snnarena.cell, "_untouched", lambda built, device: nullcontext())
    unguarded, _ = _trained(fid_host, dataclasses.replace(spec, train={**spec.train, "fidelity_points": 3}))
    assert not all(torch.equal(plain[k], unguarded[k]) for k in plain)


def test_each_measured_point_computes_the_methods_gradient_once(fid_host: PluginHost) -> None:
    spec = tiny_cell(fid_host, "counting_bptt", epochs=5, fidelity_points=3)
    built = build_cell(spec, fid_host, torch.device("cpu"))
    train(built, spec, torch.device("cpu"), lambda point: None)
    assert isinstance(built.method, CountingBPTT)
    assert built.method.calls == 5 * 4 + 3  # 4 training steps per epoch, 3 measured epochs
