"""The static-input and graph task kinds, the static encoding, and the suite's refusal of
model/method/metric × dataset combinations whose tasks do not fit (naming both plugins)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, roc_auc_score

import snnarena
from snnarena.data import DataBundle, Dataset, encoded_task
from snnarena.factory import build_dataset
from snnarena.host import PluginHost
from snnarena.loss import SequenceLoss
from snnarena.metric import Metric
from snnarena.model import SpikingModel
from snnarena.params import Param
from snnarena.suite import SuiteError, parse_suite
from snnarena.task import IGNORE_INDEX, SCORE_NAMES, average_precision, edge_logits, roc_auc, task_of

T, B, C = 6, 5, 4


def logits_and_labels(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, B, C, generator=g, dtype=torch.float64), torch.randint(0, C, (B,), generator=g)


# -- static-input classification --------------------------------------------------------------


def test_static_losses_judge_the_last_step_only() -> None:
    o, y = logits_and_labels()
    ce = SequenceLoss("final", "static_classification")
    assert float(ce.full(o, y)) == pytest.approx(float(F.cross_entropy(o[-1], y)))
    mse = SequenceLoss("final_mse", "static_classification")
    target = F.one_hot(y, C).double()
    assert float(mse.full(o, y)) == pytest.approx(float(0.5 * ((o[-1] - target) ** 2).sum() / B))
    o2 = o.clone()
    o2[:-1] += 10.0  # earlier steps do not count
    assert float(mse.full(o2, y)) == float(mse.full(o, y))


@pytest.mark.parametrize("form", ["final", "final_mse"])
def test_static_loss_shares_split_over_any_partition(form: str) -> None:
    o, y = logits_and_labels(1)
    o.requires_grad_(True)
    loss = SequenceLoss(form, "static_classification")
    parts = [loss.segment(o[0:2], y, T, 0), loss.segment(o[2:5], y, T, 2), loss.step(o[5], y, T, 5)]
    assert float(parts[0].detach()) == 0.0 and float(parts[1].detach()) == 0.0
    assert float(sum(parts).detach()) == pytest.approx(float(loss.full(o, y).detach()))
    torch.autograd.grad(parts[0], o)  # a zero share still backpropagates (truncated methods call backward on it)
    with pytest.raises(ValueError, match="outside a 6-step relaxation"):
        loss.segment(o[0:3], y, T, 4)


def test_static_task_refuses_sequence_loss_forms_and_scores_the_last_step() -> None:
    with pytest.raises(ValueError, match=r"static_classification task supports train.loss in \['final', 'final_mse'\]"):
        SequenceLoss("per_step", "static_classification")
    o, y = logits_and_labels(2)
    o[-1] = F.one_hot(y, C).double()  # right at the last step
    o[0] = -o[-1]  # wrong before: the time average would not be right everywhere
    sums = task_of("static_classification").score_sums(o, y)
    assert sums["accuracy"].value == 1.0


def test_static_encoding_makes_classification_data_static(host: PluginHost) -> None:
    assert encoded_task("classification", "static") == "static_classification"
    assert encoded_task("per_step_regression", "static") == "per_step_regression"
    assert encoded_task("classification", "rate") == "classification"
    cls = host.get("dataset", "digits").obj
    assert cls.task_for({"encoding": "static"}) == "static_classification"
    assert cls.task_for({"encoding": "rate"}) == "classification"
    data = build_dataset(host, "digits", 7, 0, {"encoding": "static"})
    assert data.info.task == "static_classification"
    x, y = next(data.train_batches(16, torch.Generator().manual_seed(0)))
    assert x.shape == (7, 16, 64) and x.stride(0) == 0  # a broadcast view: no copy per step
    assert torch.equal(x[0], x[6])
    direct = build_dataset(host, "digits", 7, 0, {"encoding": "direct"})
    xd, _ = next(direct.test_batches(16))
    xs, _ = next(data.test_batches(16))
    assert torch.equal(xd, xs)  # the same values as direct coding
    assert build_dataset(host, "mnist1d", 4, 0, {"encoding": "static", "num_samples": 200}).info.task == (
        "static_classification"
    )


# -- node classification ---------------------------------------------------------------------


def test_node_classification_scores_only_the_split_nodes() -> None:
    o, labels = logits_and_labels(3)
    y = labels.clone()
    y[[0, 3]] = IGNORE_INDEX
    scored = y != IGNORE_INDEX
    per_step = SequenceLoss("per_step", "node_classification")
    expected = sum(F.cross_entropy(o[t][scored], y[scored]) for t in range(T)) / T
    assert float(per_step.full(o, y)) == pytest.approx(float(expected))
    rate = SequenceLoss("rate", "node_classification")
    assert float(rate.full(o, y)) == pytest.approx(float(F.cross_entropy(o.mean(0)[scored], y[scored])))
    parts = per_step.segment(o[:2], y, T, 0) + per_step.segment(o[2:], y, T, 2)
    assert float(parts) == pytest.approx(float(per_step.full(o, y)))
    hits = (o.mean(0).argmax(-1) == y)[scored]
    assert task_of("node_classification").score_sums(o, y)["accuracy"].value == pytest.approx(
        float(hits.double().mean())
    )


# -- link prediction -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_roc_auc_and_average_precision_equal_scikit_learn(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (40,), generator=g)
    scores = torch.randint(0, 6, (40,), generator=g).double() + labels * 0.7  # many ties
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-12)
    assert average_precision(scores, labels) == pytest.approx(
        average_precision_score(labels.numpy(), scores.numpy()), abs=1e-12
    )
    assert math.isnan(roc_auc(scores, torch.ones(40, dtype=torch.long)))
    assert math.isnan(average_precision(scores, torch.zeros(40, dtype=torch.long)))


def link_targets(n_nodes: int = B, seed: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pairs = torch.randint(0, n_nodes, (9, 2), generator=g)
    labels = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0, 1])
    return torch.cat([pairs, labels[:, None]], 1)


def test_link_prediction_losses_and_scores_use_inner_products_of_node_outputs() -> None:
    o, _ = logits_and_labels(5)
    y = link_targets()
    pairs, labels = y[:, :2], y[:, 2].double()
    assert torch.equal(edge_logits(o[0], pairs), (o[0][pairs[:, 0]] * o[0][pairs[:, 1]]).sum(-1))
    per_step = SequenceLoss("per_step", "link_prediction")
    expected = sum(F.binary_cross_entropy_with_logits(edge_logits(o[t], pairs), labels) for t in range(T)) / T
    assert float(per_step.full(o, y)) == pytest.approx(float(expected))
    shares = sum(per_step.step(o[t], y, T, t) for t in range(T))
    assert float(shares) == pytest.approx(float(expected))
    rate = SequenceLoss("rate", "link_prediction")
    z = edge_logits(o.mean(0), pairs)
    assert float(rate.full(o, y)) == pytest.approx(float(F.binary_cross_entropy_with_logits(z, labels)))
    scores = task_of("link_prediction").score_sums(o, y)
    assert list(scores) == ["roc_auc", "average_precision"]
    assert scores["roc_auc"].value == pytest.approx(roc_auc_score(labels.numpy(), z.numpy()))
    assert scores["average_precision"].value == pytest.approx(average_precision_score(labels.numpy(), z.numpy()))


def test_link_prediction_checks_its_targets() -> None:
    task = task_of("link_prediction")
    assert task.check_targets(link_targets(), T) is None
    assert "shape [P, 3]" in (task.check_targets(torch.zeros(4, 2, dtype=torch.long), T) or "")
    bad = link_targets()
    bad[0, 2] = 2
    assert "must be 0 or 1" in (task.check_targets(bad, T) or "")
    assert task.score == "roc_auc" and task.higher_is_better


def test_every_task_score_has_test_and_validation_columns() -> None:
    from snnarena.columns import CORE_COLUMNS
    from snnarena.results import CURVE_COLUMNS, RESULT_COLUMNS

    names = {c.name: c for c in CORE_COLUMNS}
    for score in SCORE_NAMES:
        assert {f"test_{score}", f"val_{score}"} <= set(names) and f"test_{score}" in RESULT_COLUMNS
        assert f"val_{score}" in CURVE_COLUMNS
    assert names["test_mse"].higher_is_better is False and names["test_roc_auc"].higher_is_better is True
    assert "link_prediction" in names["test_roc_auc"].doc


# -- refusing combinations whose tasks do not fit --------------------------------------------


class TinyRegression(Dataset):
    """Per-step regression targets (a constant to reproduce), for the metric × task check."""

    name = "tiny_regression"
    task = "per_step_regression"

    def build(self, T: int, seed: int) -> DataBundle:
        x = torch.rand(24, T, 2, generator=torch.Generator().manual_seed(seed))
        y = x.sum(-1, keepdim=True)
        return DataBundle(x[:18], y[:18], x[18:], y[18:], T=T, n_classes=1, encoding="none", seed=seed, task=self.task)


class ClassProbabilityMetric(Metric):
    """A metric that only makes sense for class outputs."""

    name = "class_margin"
    tasks = frozenset({"classification"})
    columns = ()

    def compute(self, ctx: Any) -> dict[str, float]:
        return {}


class LongWindowModel(SpikingModel):
    """A model that refuses sequences shorter than its window."""

    name = "windowed"
    PARAMS = (Param("window", "int", 4, "steps", low=1),)

    @classmethod
    def check_T(cls, params: Mapping[str, Any], T: int) -> str | None:
        return f"window={params['window']} is longer than the sequence" if params["window"] > T else None


class KindsPlugin:
    @snnarena.hookimpl
    def register_datasets(self, register: Any) -> None:
        register(TinyRegression)

    @snnarena.hookimpl
    def register_metrics(self, register: Any) -> None:
        register(ClassProbabilityMetric)

    @snnarena.hookimpl
    def register_models(self, register: Any) -> None:
        register(LongWindowModel)


@pytest.fixture
def kinds_host(fresh_host: PluginHost) -> Iterator[PluginHost]:
    fresh_host.add_plugin(KindsPlugin(), "kinds-test-plugin")
    try:
        yield fresh_host
    finally:
        fresh_host.remove_plugin("kinds-test-plugin")


def suite(model: str, dataset: str, method: str = "bptt", loss: str = "per_step", extra: str = "") -> str:
    neuron = "" if model in ("lstm", "gcn", "ep_prototypical") else 'neuron = "lif"'
    return f"""
name = "kinds"
[train]
steps = 2
loss = "{loss}"
[grid]
T = [4]
[[methods]]
name = "{method}"
[[models]]
name = "{model}"
{neuron}
[[datasets]]
{dataset}
{extra}
"""


def problems(text: str, host: PluginHost) -> str:
    with pytest.raises(SuiteError) as info:
        parse_suite(text, host)
    return str(info.value)


def test_a_graph_model_with_sequence_data_is_refused_naming_both(host: PluginHost) -> None:
    message = problems(suite("spiking_gcn", 'name = "copy"'), host)
    assert "models[0] × datasets[0]" in message
    assert "model 'spiking_gcn" in message and "dataset 'copy'" in message
    assert "link_prediction or node_classification data" in message and "per_step_classification task" in message


def test_a_sequence_model_with_graph_data_is_refused(host: PluginHost) -> None:
    message = problems(suite("mlp", 'name = "sbm"'), host)
    assert "model 'mlp" in message and "dataset 'sbm'" in message and "node_classification task" in message


def test_a_static_input_model_with_temporal_data_is_refused(host: PluginHost) -> None:
    message = problems(suite("ep_prototypical", 'name = "seq_digits"'), host)
    assert "model 'ep_prototypical'" in message and "takes static_classification data" in message
    assert "dataset 'seq_digits'" in message


def test_a_method_without_the_task_is_refused_naming_both(host: PluginHost) -> None:
    message = problems(suite("mlp", 'name = "copy"', method="ratebp"), host)
    assert "methods[0] × datasets[0]" in message and "method 'ratebp'" in message and "dataset 'copy'" in message


def test_an_accuracy_only_metric_with_a_regression_task_is_refused(kinds_host: PluginHost) -> None:
    text = suite("mlp", 'name = "tiny_regression"', extra='[[datasets]]\nname = "digits"\n')
    text = text.replace('name = "kinds"', 'name = "kinds"\nmetrics = ["class_margin"]')
    kinds_host_problems = problems(text, kinds_host)
    assert "metrics[0] × datasets[0]" in kinds_host_problems
    assert "metric 'class_margin' measures classification tasks" in kinds_host_problems
    assert "dataset 'tiny_regression' is a per_step_regression task" in kinds_host_problems
    assert "datasets[1]" not in kinds_host_problems


def test_static_data_runs_with_a_sequence_model_and_the_final_loss(host: PluginHost) -> None:
    spec = parse_suite(suite("mlp", 'name = "digits"\nparams = { encoding = "static" }', loss="final_mse"), host)
    assert spec.n_cells == 1
    message = problems(suite("mlp", 'name = "digits"\nparams = { encoding = "static" }'), host)
    assert "loss 'per_step' does not fit dataset 'digits encoding=static'" in message
    assert "'final', 'final_mse'" in message


def test_model_check_T_is_called_for_every_T(kinds_host: PluginHost) -> None:
    text = suite("windowed", 'name = "digits"').replace("T = [4]", "T = [2, 8]")
    text = text.replace('name = "windowed"', 'name = "windowed"\nparams = { window = 5 }')
    message = problems(text, kinds_host)
    assert "models[0].params: 'windowed window=5 / lif / atan' cannot run T=2" in message
    assert "window=5 is longer than the sequence" in message and "T=8" not in message


def test_the_report_shows_link_prediction_scores() -> None:
    from snnarena.report.assemble import MAIN_COLUMNS

    headers = {column: header for header, column, _, _ in MAIN_COLUMNS}
    assert headers["test_roc_auc"] == "ROC-AUC (%)" and headers["test_average_precision"] == "average precision (%)"
    assert headers["test_mse"] == "test MSE"


# -- model conformance of the new families --------------------------------------------------


@pytest.mark.parametrize("name", ["spiking_gcn", "gcn"])
def test_graph_models_pass_their_family_checks(host: PluginHost, name: str) -> None:
    from snnarena.factory import build_model, neuron_factory, no_neuron
    from snnarena.testing import run_model_conformance

    data = build_dataset(host, "sbm", 4, 0, {"blocks": 2, "block_size": 10, "p_in": 0.5})
    make = neuron_factory(host, "lif", {"v_threshold": 0.25}, "atan") if name == "spiking_gcn" else no_neuron(name)
    run_model_conformance(lambda: build_model(host, name, data.info, make, {"hidden": [6]}).double())
    model = build_model(host, name, data.info, make, {"hidden": [6]})
    assert model.neuron_count() == 6  # neurons per node


# -- the BPTT reference follows each method's objective --------------------------------------


def test_a_suite_mixing_losses_gets_the_matching_bptt_rows(host: PluginHost) -> None:
    text = suite("mlp", 'name = "digits"', method="ratebp").replace(
        '[[methods]]\nname = "ratebp"', '[[methods]]\nname = "ratebp"\nloss = "rate"\n[[methods]]\nname = "bptt"'
    )
    spec = parse_suite(text, host)
    assert sorted((c.method, c.loss) for c in spec.cells) == [
        ("bptt", "per_step"),
        ("bptt", "rate"),
        ("ratebp", "rate"),
    ]
    assert spec.added == (
        "added bptt with loss 'rate': the reference of 'ratebp' (methods[0]), which trains with that loss",
    )
    without_bptt = parse_suite(suite("mlp", 'name = "digits"', method="ratebp"), host)
    assert without_bptt.added == () and without_bptt.n_cells == 1  # no reference in the suite: none added


def test_ratios_and_paired_tests_use_bptt_of_the_same_loss() -> None:
    import pandas as pd

    from snnarena.report.tables import _reference_positions

    summary = pd.DataFrame(
        {
            "setting": ["s"] * 3,
            "T": [4] * 3,
            "run": ["r"] * 3,
            "loss": ["per_step", "rate", "rate"],
            "method": ["bptt", "bptt", "ratebp"],
            "variant": ["bptt", "bptt (rate loss)", "ratebp"],
            "n": [2, 2, 2],
        }
    )
    assert list(_reference_positions(summary)) == [0, 1, 1]
