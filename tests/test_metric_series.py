"""Metric series: curves a metric plugin measures on a cell, stored in ``metric_series`` and drawn by the report."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from plugin_fixtures import TINY_SUITE, TestPlugin

import snnarena
from snnarena.cell import run_cell
from snnarena.columns import Column
from snnarena.data import DataInfo
from snnarena.factory import build_method, build_model, no_neuron
from snnarena.host import HostConfig, PluginHost
from snnarena.loss import SequenceLoss
from snnarena.metric import CellContext, Metric, Series
from snnarena.report import build_report
from snnarena.runner import run_suite
from snnarena.suite import CellSpec, parse_suite
from snnarena_plugins.ep import GDU, error_by_step, gdu_rmse, sign_agreement, sign_agreement_by_step

RAMP = Series("ramp_by_step", "step k", "ramp value", True, "k / 4 plus the seed")


class Ramp(Metric):
    """A column and a five-point series that depends on the seed (so the report averages seeds)."""

    name = "ramp"
    columns = (Column("ramp_last", True),)
    series = (RAMP,)

    def compute(self, ctx: Any) -> dict[str, float]:
        return {"ramp_last": 1.0}

    def compute_series(self, ctx: Any) -> dict[str, list[float]]:
        offset = float(ctx.data.seed)
        return {"ramp_by_step": [k / 4 + offset for k in range(5)]}


def _bad(name: str, curves: Any, declared: tuple[Series, ...] = (RAMP,)) -> type[Metric]:
    """A metric whose column is fine and whose ``compute_series`` returns ``curves``."""

    def compute(self: Metric, ctx: Any) -> dict[str, float]:
        return {f"{name}_value": 1.0}

    def compute_series(self: Metric, ctx: Any) -> Any:
        return curves

    attrs = {
        "name": name,
        "columns": (Column(f"{name}_value", None),),
        "series": declared,
        "compute": compute,
        "compute_series": compute_series,
    }
    return type(name.title().replace("_", ""), (Metric,), attrs)


BAD = {
    "nan_series": {"ramp_by_step": [0.0, math.nan]},
    "inf_series": {"ramp_by_step": [math.inf]},
    "undeclared_series": {"other_curve": [1.0]},
    "text_series": {"ramp_by_step": "0.1 0.2"},
    "bool_series": {"ramp_by_step": [True, False]},
    "empty_series": {"ramp_by_step": []},
    "list_not_mapping": [[1.0, 2.0]],
}


class SeriesPlugin:
    @snnarena.hookimpl
    def register_metrics(self, register: Any) -> None:
        register(Ramp)
        for name, curves in BAD.items():
            register(_bad(name, curves))
        register(_bad("clashing_series", {"ramp_by_step": [5.0]}))  # ramp already records ramp_by_step


@pytest.fixture(scope="module")
def series_host() -> Iterator[PluginHost]:
    loaded = PluginHost.load(HostConfig())
    loaded.add_plugin(TestPlugin(), "test-plugin")
    loaded.add_plugin(SeriesPlugin(), "series-plugin")
    try:
        yield loaded
    finally:
        loaded.remove_plugin("series-plugin")
        loaded.remove_plugin("test-plugin")


def tiny_suite(metrics: list[str]) -> str:
    text = TINY_SUITE.format(behaviours='["ok"]')
    return text.replace('description = "throwaway suite for tests"\n', f"metrics = {json.dumps(metrics)}\n", 1)


def bptt_cell(host: PluginHost, metrics: list[str]) -> CellSpec:
    return next(c for c in parse_suite(tiny_suite(metrics), host).cells if c.method == "bptt")


def test_declared_series_are_stored_with_their_declaration(series_host: PluginHost) -> None:
    row = run_cell(bptt_cell(series_host, ["ramp"]), series_host, "r", "cpu").row
    assert row["status"] == "done" and row["metric_errors"] == "", row["reason"]
    stored = json.loads(row["metric_series"])
    assert stored == {"ramp_by_step": {**RAMP.to_dict(), "metric": "ramp", "values": [0.0, 0.25, 0.5, 0.75, 1.0]}}
    assert Series.from_dict(stored["ramp_by_step"]) == RAMP
    assert row["ramp_last"] == 1.0


def test_a_metric_without_series_leaves_the_column_empty(series_host: PluginHost) -> None:
    row = run_cell(bptt_cell(series_host, ["weight_norm"]), series_host, "r", "cpu").row
    assert row["metric_series"] == "" and math.isfinite(row["weight_norm"])


def test_bad_series_fail_their_metric_not_the_cell(series_host: PluginHost) -> None:
    metrics = ["ramp", *BAD, "clashing_series"]
    row = run_cell(bptt_cell(series_host, metrics), series_host, "r", "cpu").row
    assert row["status"] == "done", row["reason"]
    errors = json.loads(row["metric_errors"])
    assert set(errors) == set(metrics) - {"ramp"}
    assert "index 1" in errors["nan_series"] and "nan" in errors["nan_series"]
    assert "undeclared series ['other_curve']" in errors["undeclared_series"]
    assert "already recorded by metric(s) ['ramp']" in errors["clashing_series"]
    assert "not a non-empty sequence" in errors["text_series"] and "not a non-empty sequence" in errors["empty_series"]
    assert "bool" in errors["bool_series"] and "expected {series: [numbers]}" in errors["list_not_mapping"]
    for name in (*BAD, "clashing_series"):  # a failed metric's columns are NaN and its series absent
        assert math.isnan(row[f"{name}_value"]), name
    assert json.loads(row["metric_series"])["ramp_by_step"]["values"][0] == 0.0  # ramp's own, not the clash's


def test_the_report_draws_each_series_per_setting(series_host: PluginHost, tmp_path: Path) -> None:
    suite = parse_suite(tiny_suite(["ramp"]), series_host)
    outcome = run_suite(suite, series_host, results_root=tmp_path / "results")
    assert set(outcome.results["status"]) == {"done"}
    stored = [json.loads(v)["ramp_by_step"]["values"] for v in outcome.results["metric_series"]]
    assert sorted(s[0] for s in stored) == [0.0, 0.0, 1.0, 1.0]  # read back from results.parquet
    index = build_report([outcome.run_dir], tmp_path / "report")
    figures = sorted(p.name for p in (index.parent / "figures").glob("*ramp_by_step*"))
    assert [Path(f).suffix for f in figures] == [".png", ".svg"]
    page = html.unescape(index.read_text(encoding="utf-8"))
    assert "Metric curves" in page
    assert "ramp_by_step of the ramp metric: k / 4 plus the seed, against step k" in page
    svg = (index.parent / "figures" / figures[1]).read_text(encoding="utf-8")
    assert "ramp value, higher is better" in svg and "T = 4" in svg


def test_a_report_without_series_has_no_metric_curves(series_host: PluginHost, tmp_path: Path) -> None:
    suite = parse_suite(tiny_suite(["weight_norm"]).replace("seeds = [0, 1]", "seeds = [0]", 1), series_host)
    outcome = run_suite(suite, series_host, results_root=tmp_path / "results")
    index = build_report([outcome.run_dir], tmp_path / "report")
    assert "Metric curves" not in index.read_text(encoding="utf-8")


# -- gdu's curves ---------------------------------------------------------------------------------
def test_gdu_curves_per_step_agree_with_its_columns() -> None:
    g = torch.Generator().manual_seed(0)
    N = [torch.randn(4, 3, 2, generator=g, dtype=torch.float64), torch.randn(4, 5, generator=g, dtype=torch.float64)]
    D = [n + 0.3 * torch.randn(n.shape, generator=g, dtype=torch.float64) for n in N]
    assert error_by_step(N, N) == [0.0] * 4 and sign_agreement_by_step(N, N) == [1.0] * 4
    assert error_by_step(N, [-n for n in N]) == pytest.approx([2.0] * 4)
    assert sign_agreement_by_step(N, [-n for n in N]) == [0.0] * 4
    assert sign_agreement_by_step(N, D)[-1] == sign_agreement(N, D)
    assert error_by_step(N, D)[0] == pytest.approx(gdu_rmse([n[:1] for n in N], [d[:1] for d in D]))  # K = 1


EP_SUITE = """
name = "ep-series"
metrics = ["gdu"]
[train]
steps = 2
batch_size = 16
loss = "final_mse"
eval_every_epoch = false
fidelity = false
[grid]
T = [12]
[[methods]]
name = "ep"
params = { K = 4, beta = 0.1 }
[[models]]
name = "ep_prototypical"
params = { hidden = [16] }
[[datasets]]
name = "digits"
params = { encoding = "static" }
"""


def test_gdu_records_its_curves_on_an_ep_cell(host: PluginHost) -> None:
    row = run_cell(parse_suite(EP_SUITE, host).cells[0], host, "r", "cpu").row
    assert row["status"] == "done" and row["metric_errors"] == "", (row["reason"], row["metric_errors"])
    stored = json.loads(row["metric_series"])
    assert set(stored) == {s.name for s in GDU.series} == {"gdu_error_by_step", "gdu_sign_agreement_by_step"}
    errors, signs = stored["gdu_error_by_step"]["values"], stored["gdu_sign_agreement_by_step"]["values"]
    assert len(errors) == len(signs) == 4 == row["gdu_K"]  # t = 0 .. K-1
    assert all(0.0 <= e <= 2.0 for e in errors) and all(0.0 <= s <= 1.0 for s in signs)
    assert signs[-1] == pytest.approx(row["gdu_sign_agreement"])
    assert stored["gdu_error_by_step"]["metric"] == "gdu" and stored["gdu_error_by_step"]["higher_is_better"] is False


def test_gdu_has_no_curves_when_the_free_state_diverged(host: PluginHost) -> None:
    info = DataInfo((6,), 3, 8, n_train=0, n_test=0, task="static_classification")
    model = build_model(host, "ep_energy", info, no_neuron("ep_energy"), {"hidden": [5], "activation": "tanh"}).double()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(math.inf)
    x, y = torch.rand(1, 4, 6, dtype=torch.float64).expand(8, 4, 6), torch.tensor([0, 1, 2, 0])
    loss = SequenceLoss("final", "static_classification")
    ctx = CellContext(model, model, build_method(host, "bptt", {}), None, loss, torch.device("cpu"), (x, y))
    metric = GDU()
    assert math.isnan(metric.compute(ctx)["gdu_rmse"])
    assert metric.compute_series(ctx) == {}  # no curve, rather than NaN ones that would fail the metric
