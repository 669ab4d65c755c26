"""Graph data and graph models: ``snnarena.graph`` (graph, adjacency, convolution, splits, bundle),
the ``sbm`` and ``karate`` datasets, and the ``spiking_gcn`` / ``gcn`` models under the exact methods.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from snnarena.cell import check_finite, evaluate
from snnarena.data import DataInfo
from snnarena.factory import build_dataset, build_method, build_model, neuron_factory
from snnarena.graph import (
    EdgeTargets,
    Graph,
    GraphBundle,
    GraphConv,
    NodeTargets,
    edge_split,
    node_split,
    node_targets,
    normalized_adjacency,
    propagate,
    sample_negatives,
    undirected_graph,
)
from snnarena.host import PluginHost
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.model import SpikingModel
from snnarena.params import ParamError, params_of
from snnarena.runner import run_suite
from snnarena.suite import parse_suite
from snnarena.task import IGNORE_INDEX, task_of
from snnarena.testing import (
    check_resumes_from_state,
    check_state_detaches,
    check_step_matches_sequence,
    run_conformance,
)
from snnarena_plugins.datasets.karate import KarateClub
from snnarena_plugins.datasets.sbm import StochasticBlockModel

T = 6
EXACT = 1e-12
LIF = {"v_threshold": 0.25}  # low threshold: every layer spikes


def ring_with_chord(n: int = 7) -> Graph:
    """A ring of ``n`` nodes plus the chord (0, 3) and one isolated node ``n``."""
    pairs = [(i, (i + 1) % n) for i in range(n)] + [(0, 3)]
    return undirected_graph(torch.tensor(pairs), n + 1)


def dense_adjacency(graph: Graph) -> Tensor:
    a = torch.zeros(graph.n_nodes, graph.n_nodes, dtype=torch.float64)
    a[graph.edge_index[0], graph.edge_index[1]] = 1.0
    return a


def edge_set(pairs: Tensor) -> set[tuple[int, int]]:
    return {(min(i, j), max(i, j)) for i, j in pairs.tolist()}


def build(cls: type, T: int = T, seed: int = 0, **given: Any) -> GraphBundle:
    bundle = cls(**params_of(cls).resolve(given)).build(T=T, seed=seed)
    assert isinstance(bundle, GraphBundle)
    return bundle


# -- graph, adjacency, convolution -----------------------------------------------------------------


def test_undirected_graph_is_symmetric_without_loops_or_duplicates():
    g = undirected_graph(torch.tensor([[0, 1], [1, 0], [1, 2], [2, 2], [0, 1], [3, 1]]), 5)
    directed = [tuple(e) for e in g.edge_index.T.tolist()]
    assert sorted(directed) == sorted({(0, 1), (1, 0), (1, 2), (2, 1), (1, 3), (3, 1)})
    assert g.n_edges == 6 and g.pairs().tolist() == [[0, 1], [1, 2], [1, 3]]
    one_way = Graph(torch.tensor([[0, 2, 1], [1, 0, 1]]), 3)  # (0, 1), (2, 0) and a self-loop
    assert one_way.pairs().tolist() == [[0, 1], [0, 2]]
    with pytest.raises(ValueError, match="node indices"):
        undirected_graph(torch.tensor([[0, 5]]), 5)


@pytest.mark.parametrize("self_loops", [True, False])
def test_normalized_adjacency_is_the_dense_formula(self_loops):
    g = ring_with_chord()
    a = dense_adjacency(g) + (torch.eye(g.n_nodes, dtype=torch.float64) if self_loops else 0)
    d = a.sum(1)
    inv_sqrt = torch.where(d > 0, d.rsqrt(), torch.zeros_like(d))
    expected = inv_sqrt[:, None] * a * inv_sqrt[None, :]
    sparse = normalized_adjacency(g, self_loops)
    assert sparse.is_sparse and sparse.dtype == torch.float32
    assert torch.allclose(sparse.to_dense().double(), expected, atol=1e-7)


def test_graph_conv_is_dense_a_h_w_plus_b_in_values_and_gradients():
    torch.manual_seed(0)
    g = ring_with_chord()
    conv = GraphConv(3, 4, g).double()
    with torch.no_grad():
        conv.bias.normal_()  # type: ignore[union-attr]
    a = normalized_adjacency(g).to_dense().double()
    h = torch.randn(T, g.n_nodes, 3, dtype=torch.float64, requires_grad=True)
    out = conv(h)
    expected = a @ (h @ conv.linear.weight.T) + conv.bias
    assert torch.allclose(out, expected, rtol=0, atol=1e-14)
    # stacked rows [T·N, F] (what Stage.forward_seq passes) give the same
    assert torch.equal(conv(h.flatten(0, 1)).unflatten(0, (T, g.n_nodes)), out)
    weights = torch.randn_like(out)
    (grad_h,) = torch.autograd.grad((out * weights).sum(), h)
    (grad_expected,) = torch.autograd.grad((expected * weights).sum(), h)
    assert torch.allclose(grad_h, grad_expected, rtol=0, atol=1e-13)
    assert torch.allclose(grad_h, a @ weights @ conv.linear.weight, rtol=0, atol=1e-13)


def test_graph_conv_adjacency_follows_the_module_and_is_not_saved():
    conv = GraphConv(2, 2, ring_with_chord()).double()
    assert conv.adjacency.dtype == torch.float64 and conv.adjacency_index.dtype == torch.long
    assert torch.equal(conv.adjacency.to_dense(), normalized_adjacency(ring_with_chord()).to_dense().double())
    assert set(conv.state_dict()) == {"linear.weight", "bias"}
    check_finite(conv, "after build")  # generic buffer checks need no sparse support
    assert GraphConv(2, 2, ring_with_chord(), bias=False).bias is None


def test_propagation_refuses_rows_that_are_not_copies_of_the_graph():
    a = normalized_adjacency(ring_with_chord())  # 8 nodes
    with pytest.raises(ValueError, match="8 nodes"):
        propagate(a, torch.zeros(12, 3))


# -- splits and negatives ------------------------------------------------------------------------------


def test_node_split_is_disjoint_stratified_and_seeded():
    labels = torch.arange(60) % 3
    train, val, test = node_split(labels, 0.2, 0.3, seed=4)
    assert len(set(train.tolist()) | set(val.tolist()) | set(test.tolist())) == 60
    assert len(train) + len(val) + len(test) == 60
    for idx, per_class in ((val, 4), (test, 6), (train, 10)):
        assert torch.bincount(labels[idx], minlength=3).tolist() == [per_class] * 3
    again = node_split(labels, 0.2, 0.3, seed=4)
    other = node_split(labels, 0.2, 0.3, seed=5)
    assert all(torch.equal(a, b) for a, b in zip((train, val, test), again, strict=True))
    assert not torch.equal(test, other[2])
    few, _, _ = node_split(labels, 0.2, 0.3, seed=4, train_per_class=2)
    assert torch.bincount(labels[few]).tolist() == [2, 2, 2] and set(few.tolist()) <= set(train.tolist())
    with pytest.raises(ValueError, match="val_fraction"):
        node_split(labels, 0.6, 0.5, seed=0)


def test_node_targets_ignore_the_nodes_outside_each_split():
    labels = torch.tensor([0, 1, 0, 1])
    y = node_targets(labels, torch.tensor([0]), torch.tensor([1, 2]), torch.tensor([3]))
    assert y.train.tolist() == [0, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    assert y.val.tolist() == [IGNORE_INDEX, 1, 0, IGNORE_INDEX]
    assert y.test.tolist() == [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 1]


def test_edge_split_removes_held_out_edges_from_the_message_passing_graph():
    g = undirected_graph(torch.combinations(torch.arange(12)), 12)  # complete graph, 66 edges
    split = edge_split(g, 0.2, 0.1, seed=3)
    train, val, test = (edge_set(p) for p in (split.train, split.val, split.test))
    assert (len(val), len(test), len(train)) == (13, 7, 46)
    assert train | val | test == edge_set(g.pairs()) and not (train & val or train & test or val & test)
    assert edge_set(split.graph.pairs()) == train  # no val/test edge is propagated over
    assert torch.equal(edge_split(g, 0.2, 0.1, seed=3).test, split.test)


def test_negatives_are_distinct_non_edges_and_seeded():
    g = ring_with_chord()
    neg = sample_negatives(g, 15, torch.Generator().manual_seed(0))
    pairs = edge_set(neg)
    assert len(pairs) == 15 and not pairs & edge_set(g.pairs()) and all(i != j for i, j in pairs)
    assert torch.equal(neg, sample_negatives(g, 15, torch.Generator().manual_seed(0)))
    free = 8 * 7 // 2 - 8
    assert len(sample_negatives(g, free, torch.Generator().manual_seed(1))) == free
    with pytest.raises(ValueError, match="non-edges"):
        sample_negatives(g, free + 1, torch.Generator())


# -- bundles and datasets ---------------------------------------------------------------------------------


def test_node_bundle_is_one_full_batch_per_split():
    g = ring_with_chord()
    labels = torch.arange(8) % 2
    targets = node_targets(labels, torch.tensor([0, 1, 2]), torch.tensor([3, 4]), torch.tensor([5, 6, 7]))
    features = torch.rand(8, 3)
    bundle = GraphBundle(features, g, targets, T=T, n_classes=2, encoding="direct", seed=0)
    info = bundle.info
    assert (info.task, info.input_shape, info.n_classes, info.graph) == ("node_classification", (3,), 2, g)
    assert (info.n_train, info.n_val, info.n_test) == (3, 2, 3)
    batches = list(bundle.train_batches(1, torch.Generator()))
    assert len(batches) == 1
    x, y = batches[0]
    assert x.shape == (T, 8, 3) and torch.equal(x[2], features) and torch.equal(y, targets.train)
    rate = GraphBundle(features, g, targets, T=T, n_classes=2, encoding="rate", seed=0)
    (xv, yv), (xv2, _) = next(rate.val_batches(1)), next(rate.val_batches(99))
    assert torch.equal(xv, xv2) and set(xv.unique().tolist()) <= {0.0, 1.0} and torch.equal(yv, targets.val)
    with pytest.raises(ValueError, match="N=8"):
        GraphBundle(torch.rand(7, 3), g, targets, T=T, n_classes=2, encoding="direct", seed=0)


def test_link_bundle_draws_fresh_training_negatives_and_fixed_held_out_ones():
    g = undirected_graph(torch.combinations(torch.arange(16))[::3], 16)
    split = edge_split(g, 0.2, 0.2, seed=0)
    targets = EdgeTargets(split.train, split.val, split.test)
    bundle = GraphBundle(torch.eye(16), split.graph, targets, T=T, n_classes=5, encoding="direct", seed=0)
    assert bundle.info.task == "link_prediction" and bundle.info.graph == split.graph
    assert (bundle.info.n_train, bundle.info.n_val, bundle.info.n_test) == (
        2 * len(split.train),
        2 * len(split.val),
        2 * len(split.test),
    )
    generator = torch.Generator().manual_seed(0)
    (_, y1), (_, y2) = next(bundle.train_batches(1, generator)), next(bundle.train_batches(1, generator))
    assert task_of("link_prediction").check_targets(y1, T) is None
    assert edge_set(y1[y1[:, 2] == 1, :2]) == edge_set(split.train)
    assert not torch.equal(y1, y2)  # fresh negatives each call
    every_edge = edge_set(g.pairs())
    _, val = next(bundle.val_batches(1))
    _, test = next(bundle.test_batches(1))
    assert torch.equal(val, next(bundle.val_batches(7))[1])
    for y in (y1, y2, val, test):
        assert not edge_set(y[y[:, 2] == 0, :2]) & every_edge  # negatives are non-edges of the whole graph
    assert edge_set(val[val[:, 2] == 1, :2]) == edge_set(split.val)
    assert not edge_set(val[val[:, 2] == 0, :2]) & edge_set(test[test[:, 2] == 0, :2])


@pytest.mark.parametrize(
    ("cls", "given", "task", "n_nodes", "n_features", "n_out"),
    [
        (StochasticBlockModel, {}, "node_classification", 200, 16, 4),
        (StochasticBlockModel, {"target": "links", "embedding": 8}, "link_prediction", 200, 16, 8),
        (StochasticBlockModel, {"blocks": 3, "block_size": 10, "features": 5}, "node_classification", 30, 5, 3),
        (KarateClub, {}, "node_classification", 34, 34, 2),
        (KarateClub, {"target": "links"}, "link_prediction", 34, 34, 16),
    ],
)
def test_graph_datasets_declare_their_task_and_shapes(cls, given, task, n_nodes, n_features, n_out):
    params = params_of(cls).resolve(given)
    bundle = build(cls, **given)
    info = bundle.info
    assert cls.task_for(params) == info.task == task
    assert cls.input_size(params) == n_features and info.input_shape == (n_features,)
    assert info.graph is not None and info.graph.n_nodes == n_nodes and info.n_classes == n_out
    x, y = next(bundle.train_batches(32, torch.Generator()))
    assert x.shape == (T, n_nodes, n_features)
    assert task_of(task).check_targets(y, T) is None


@pytest.mark.parametrize(("cls", "given"), [(StochasticBlockModel, {}), (KarateClub, {"target": "links"})])
def test_graph_datasets_are_deterministic_per_seed(cls, given):
    a, b, c = build(cls, seed=1, **given), build(cls, seed=1, **given), build(cls, seed=2, **given)
    assert torch.equal(a.features, b.features) and torch.equal(a.graph.edge_index, b.graph.edge_index)
    assert torch.equal(next(a.test_batches(1))[1], next(b.test_batches(1))[1])
    assert not torch.equal(next(a.test_batches(1))[1], next(c.test_batches(1))[1])


def test_karate_is_zacharys_club():
    bundle = build(KarateClub)
    graph, labels = bundle.graph, bundle.targets
    assert isinstance(labels, NodeTargets)
    assert graph.n_nodes == 34 and graph.n_edges == 2 * 78
    assert torch.equal(bundle.features, torch.eye(34))
    every = torch.stack(list(labels)).max(0).values  # each node's label from whichever split holds it
    assert int(every[0]) == 0 and int(every[33]) == 1  # Mr. Hi and the Officer lead opposite clubs


def test_sbm_blocks_are_denser_inside_and_features_follow_the_class():
    bundle = build(StochasticBlockModel, blocks=2, block_size=40, p_in=0.5, p_out=0.0, feature_noise=0.0)
    pairs = bundle.graph.pairs()
    assert bool(((pairs[:, 0] // 40) == (pairs[:, 1] // 40)).all()) and len(pairs) > 0.3 * 2 * 40 * 39 / 2
    assert torch.equal(bundle.features[0], bundle.features[39]) and not torch.equal(
        bundle.features[0], bundle.features[40]
    )
    with pytest.raises(ParamError):
        StochasticBlockModel(p_in=1.5)


def test_graph_datasets_are_registered(host: PluginHost):
    assert {"sbm", "karate"} <= set(host.names("dataset"))
    assert {"spiking_gcn", "gcn"} <= set(host.names("model"))


# -- models and exact methods --------------------------------------------------------------------------------


def graph_info(n_classes: int = 3, n_features: int = 4) -> DataInfo:
    return DataInfo(
        (n_features,), n_classes, T, n_train=0, n_test=0, task="node_classification", graph=ring_with_chord()
    )


def graph_model(host: PluginHost, name: str, seed: int = 0, **params: Any) -> SpikingModel:
    torch.manual_seed(seed)
    make = neuron_factory(host, "lif", LIF, "atan")
    return build_model(host, name, graph_info(), make, {"hidden": [6, 5], **params}).double()


def node_batch(seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(T, 8, 4, generator=g, dtype=torch.float64) * 2.0
    y = torch.randint(0, 3, (8,), generator=g)
    y[::3] = IGNORE_INDEX
    return x, y


def grads(model: nn.Module) -> dict[str, Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def method_grads(host, model, method, params, x, y, task="node_classification", form="per_step"):
    model.zero_grad(set_to_none=True)
    m = build_method(host, method, params)
    loss = SequenceLoss(form, task)
    assert m.skip(model, model.info, loss) is None
    return m.accumulate_gradients(model, x, y, loss, PhaseClock(enabled=False)), grads(model)


def max_difference(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[n] - b[n]).abs().max()) for n in a)


def spiking_gcn_reference(model: SpikingModel, x: Tensor) -> Tensor:
    """Logits ``[T, N, C]`` of the spiking GCN written out with a dense ``Â``: per layer
    ``H = λV + Â S_in W + b``, ``S = Θ(H − V_th)`` (surrogate backward), ``V = H − V_th S``."""
    graph = model.info.graph
    assert graph is not None
    a = normalized_adjacency(graph).to_dense().double()
    h = x
    for stage in model.stages:
        W, b = stage.synapse.linear.weight, stage.synapse.bias
        leak, threshold, spike = stage.neuron.decay, stage.neuron.v_threshold, stage.neuron.surrogate
        v = x.new_zeros(x.shape[1], W.shape[0])
        outputs = []
        for t in range(x.shape[0]):
            charge = leak * v + a @ h[t] @ W.T + b
            s = spike(charge - threshold)
            v = charge - threshold * s
            outputs.append(s)
        h = torch.stack(outputs)
    return model.readout(h)


def test_bptt_on_spiking_gcn_equals_the_dense_unroll(host):
    model = graph_model(host, "spiking_gcn")
    x, y = node_batch()
    for stage in model.stages:
        with torch.no_grad():
            stage.synapse.bias.normal_()
    value, bptt = method_grads(host, model, "bptt", {}, x, y)
    model.zero_grad(set_to_none=True)
    loss = SequenceLoss("per_step", "node_classification").full(spiking_gcn_reference(model, x), y)
    loss.backward()
    reference = grads(model)
    assert math.isclose(value, float(loss.detach()), rel_tol=1e-13)
    assert all((g != 0).any() for g in reference.values()) and len(reference) == 6
    assert max_difference(bptt, reference) <= EXACT
    _, single = method_grads(host, model, "bptt", {"step_mode": "single"}, x, y)
    assert max_difference(single, reference) <= EXACT


@pytest.mark.parametrize("name", ["spiking_gcn", "gcn"])
@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("tbptt", {"K": T}),
        ("tbptt", {"K": T + 2}),
        ("checkpointed_bptt", {"policy": "hsm", "budget_slots": 2}),
        ("checkpointed_bptt", {"policy": "sqrt"}),
    ],
)
def test_exact_methods_equal_bptt_on_graph_models(host, name, method, params):
    model = graph_model(host, name)
    x, y = node_batch()
    loss_bptt, bptt = method_grads(host, model, "bptt", {}, x, y)
    loss_other, other = method_grads(host, model, method, params, x, y)
    assert math.isclose(loss_bptt, loss_other, rel_tol=1e-13)
    assert max_difference(other, bptt) <= EXACT


def test_link_prediction_gradients_agree_across_exact_methods(host):
    model = graph_model(host, "spiking_gcn")
    x, _ = node_batch()
    y = torch.tensor([[0, 1, 1], [2, 3, 1], [0, 5, 0], [4, 6, 0], [1, 7, 0]])
    _, bptt = method_grads(host, model, "bptt", {}, x, y, task="link_prediction")
    _, tbptt = method_grads(host, model, "tbptt", {"K": T}, x, y, task="link_prediction")
    _, ckpt = method_grads(host, model, "checkpointed_bptt", {"policy": "sqrt"}, x, y, task="link_prediction")
    assert max_difference(tbptt, bptt) <= EXACT and max_difference(ckpt, bptt) <= EXACT


@pytest.mark.parametrize("name", ["spiking_gcn", "gcn"])
def test_graph_models_keep_the_step_and_state_contract(host, name):
    model = graph_model(host, name)
    x, _ = node_batch()
    for check in (check_step_matches_sequence, check_resumes_from_state, check_state_detaches):
        check(model, x)


def test_gcn_is_a_memoryless_relu_gcn(host):
    model = graph_model(host, "gcn")
    assert not model.stages[0].neuron.spiking
    x = torch.rand(1, 8, 4, dtype=torch.float64).expand(T, 8, 4)
    logits = model.forward_seq(x).logits
    a = normalized_adjacency(ring_with_chord()).to_dense().double()
    h = x[0]
    for stage in model.stages:
        h = torch.relu(a @ h @ stage.synapse.linear.weight.T + stage.synapse.bias)
    assert torch.allclose(logits, model.readout(h).expand(T, -1, -1), rtol=0, atol=1e-13)


def test_graph_models_refuse_data_without_a_graph(host):
    info = DataInfo((4,), 3, T, n_train=0, n_test=0)
    cls = host.get("model", "spiking_gcn").obj
    assert "graph" in cls.skip(info)
    with pytest.raises(ValueError, match="graph"):
        build_model(host, "gcn", info, neuron_factory(host, "lif"), {})


# -- short trainings ------------------------------------------------------------------------------------------


def train(host: PluginHost, dataset: str, data_params: dict[str, Any], model_name: str, steps: int) -> dict[str, float]:
    """Train with bptt (Adam) for ``steps`` full-batch steps; the test scores."""
    torch.manual_seed(0)
    data = build_dataset(host, dataset, 4, 0, data_params)
    model = build_model(host, model_name, data.info, neuron_factory(host, "lif", {}, "atan"), {"hidden": [16]})
    method = build_method(host, "bptt")
    loss = SequenceLoss("per_step", data.info.task)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        for x, y in data.train_batches(1, generator):
            method.train_step(model, x, y, loss, optimizer, PhaseClock(enabled=False))
    return evaluate(model, data.test_batches(1), torch.device("cpu"), loss.task_spec).scores


EASY_SBM = {"blocks": 3, "block_size": 30, "p_in": 0.3, "p_out": 0.02, "features": 8}


@pytest.mark.parametrize("model_name", ["spiking_gcn", "gcn"])
def test_short_training_classifies_sbm_nodes(host, model_name):
    scores = train(host, "sbm", {**EASY_SBM, "feature_noise": 3.0}, model_name, steps=100)
    assert scores["accuracy"] >= 0.75  # chance: 1/3


@pytest.mark.parametrize("model_name", ["spiking_gcn", "gcn"])
def test_short_training_predicts_sbm_links(host, model_name):
    data = {**EASY_SBM, "feature_noise": 4.0, "target": "links"}
    untrained = train(host, "sbm", data, model_name, steps=0)["roc_auc"]
    trained = train(host, "sbm", data, model_name, steps=100)["roc_auc"]
    # a random GCN already scores above chance (0.5): propagation makes neighbours alike
    assert trained > 0.8 and trained > untrained + 0.08


# -- conformance and whole cells -------------------------------------------------------------------------------


def four_node_model(host: PluginHost, name: str) -> SpikingModel:
    """A float64 graph model on a path of 4 nodes: the conformance batches (``B = 4``) are its nodes."""
    info = DataInfo(
        (5,), 3, 8, 0, 0, task="node_classification", graph=undirected_graph(torch.tensor([[0, 1], [1, 2], [2, 3]]), 4)
    )
    make = neuron_factory(host, "lif", LIF, "atan")
    return build_model(host, name, info, make, {"hidden": [6, 5]}).double()


@pytest.mark.parametrize("name", ["spiking_gcn", "gcn"])
@pytest.mark.parametrize(("method", "params"), [("bptt", {}), ("tbptt", {"K": 4}), ("checkpointed_bptt", {})])
def test_exact_methods_conform_on_graph_models(host, name, method, params):
    run_conformance(lambda: build_method(host, method, params), lambda: four_node_model(host, name))


GRAPH_SUITE = """
name = "graphs"
[train]
steps = 3
fidelity = true
[grid]
T = [4]
[[methods]]
name = "bptt"
[[methods]]
name = "tbptt"
params = { K = 2 }
[[models]]
name = "spiking_gcn"
params = { hidden = [8] }
neuron = { name = "lif", params = { v_threshold = 0.3 } }
[[models]]
name = "gcn"
params = { hidden = [8] }
[[datasets]]
name = "sbm"
params = { blocks = 2, block_size = 10, p_in = 0.5, p_out = 0.05, features = 4 }
[[datasets]]
name = "karate"
params = { target = "links", embedding = 4 }
"""


def test_graph_cells_run_done(host, tmp_path):
    outcome = run_suite(parse_suite(GRAPH_SUITE, host, "graphs.toml"), host, results_root=tmp_path)
    rows = outcome.results.set_index(["dataset", "model", "method"])
    assert len(rows) == 8
    for key, row in rows.iterrows():
        assert row["status"] == "done", f"{key}: {row['reason']}"
        score = row["test_accuracy"] if key[0] == "sbm" else row["test_roc_auc"]
        assert 0.0 <= score <= 1.0, key
        assert row["grad_cosine_bptt"] == pytest.approx(1.0, abs=1e-5) or key[2] == "tbptt"
