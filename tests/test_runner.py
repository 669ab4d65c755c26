"""Running suites: rows for every cell (done, skipped, failed), resume, interruption, pools."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
from plugin_fixtures import TINY_SUITE

from snnarena.cell import run_cell
from snnarena.errors import RunDirectoryError
from snnarena.host import HostConfig, PluginHost
from snnarena.results import RESULT_COLUMNS, RunDirectory, load_run
from snnarena.runner import SelectorError, run_suite, select_cells
from snnarena.suite import parse_suite

ALL = TINY_SUITE.format(behaviours='["ok", "raise", "nan", "skip"]')


def run(host, text, tmp_path, **kwargs):
    return run_suite(
        parse_suite(text, host, "tiny.toml"), host, results_root=tmp_path / "results", device="cpu", **kwargs
    )


def test_every_cell_becomes_a_row_and_failures_do_not_stop_the_suite(arena_host, tmp_path):
    outcome = run(arena_host, ALL, tmp_path)
    table = outcome.results
    assert list(table.columns[: len(RESULT_COLUMNS)]) == list(RESULT_COLUMNS)
    assert len(table) == 10  # (bptt + 4 flaky) × 2 seeds
    by = {(r.method, json.loads(r.method_params).get("behaviour"), r.seed): r for r in table.itertuples()}
    ok = by[("bptt", None, 0)]
    assert ok.status == "done" and ok.test_accuracy > 0.6  # three separable blobs
    assert ok.step_time_ms > 0 and ok.peak_activation_bytes > 0 and ok.n_parameters > 0
    assert ok.grad_cosine_bptt == pytest.approx(1.0)
    assert ok.plugin == "snnarena" and ok.plugin_version and ok.torch_version and ok.device == "cpu"
    assert 0 <= ok.spike_rate <= 1
    raised = by[("flaky", "raise", 0)]
    assert raised.status == "failed" and raised.reason == "RuntimeError: flaky exploded on purpose"
    assert math.isnan(raised.test_accuracy)
    nan = by[("flaky", "nan", 1)]
    assert nan.status == "failed" and "NonFiniteLossError: training loss became nan" in nan.reason
    skipped = by[("flaky", "skip", 0)]
    assert skipped.status == "skipped" and skipped.reason == "flaky was told to skip"
    assert json.loads(by[("flaky", "ok", 0)].plugin_versions)["method:flaky"]["plugin"] == "test-plugin"
    # the files on disk say the same, with the traceback of the failure
    results, curves = load_run(outcome.run_dir)
    assert len(results) == 10 and (curves["epoch"].max() == 2)
    record = next(r for r in RunDirectory(outcome.run_dir).records() if r.row["status"] == "failed")
    assert "Traceback" in record.traceback
    assert (outcome.run_dir / "results.csv").is_file() and (outcome.run_dir / "suite.toml").read_text() == ALL
    manifest = json.loads((outcome.run_dir / "manifest.json").read_text())
    assert manifest["environment"]["torch"] and "test-plugin" in manifest["plugins"]["loaded"]


def test_resume_skips_finished_cells_and_retries_failed(arena_host, tmp_path):
    first = run(arena_host, ALL, tmp_path, only="method=bptt")
    assert first.ran == 2
    again = run(arena_host, ALL, tmp_path, resume=first.run_dir)
    assert again.skipped_as_finished == 2 and again.ran == 8
    third = run(arena_host, ALL, tmp_path, resume=first.run_dir)
    # only the failed cells (raise, nan × 2 seeds) run again
    assert third.ran == 4
    assert len(third.results) == 10


def test_a_cpu_rerun_reproduces_the_metrics(arena_host, tmp_path):
    spec = parse_suite(ALL, arena_host).cells[0]
    a = run_cell(spec, arena_host, "a", "cpu").row
    b = run_cell(spec, arena_host, "b", "cpu").row
    for key in ("test_accuracy", "train_loss", "grad_cosine_bptt", "spike_rate", "peak_activation_bytes"):
        assert a[key] == b[key], key


def test_interrupt_keeps_finished_cells(arena_host, tmp_path, monkeypatch):
    from plugin_fixtures import Flaky

    original = Flaky.accumulate_gradients

    def interrupt(self, *args):
        if self.params["behaviour"] == "raise":
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(Flaky, "accumulate_gradients", interrupt)
    outcome = run(arena_host, ALL, tmp_path)
    assert outcome.interrupted
    table = outcome.results
    statuses = dict(zip(table["label"], table["status"], strict=True))
    assert sum(s == "done" for s in statuses.values()) == 4  # bptt and flaky-ok, 2 seeds each
    assert (table["reason"] == "interrupted (KeyboardInterrupt)").sum() == 1
    monkeypatch.undo()
    again = run(arena_host, ALL, tmp_path, resume=outcome.run_dir)
    assert not again.interrupted and again.skipped_as_finished == 4 and again.ran == 6


def test_metric_plugins_add_columns_and_failures_are_visible(arena_host, tmp_path):
    text = ALL.replace(
        'description = "throwaway suite for tests"', 'description = "x"\nmetrics = ["weight_norm", "broken_metric"]'
    )
    outcome = run(arena_host, text, tmp_path, only="method=bptt,seed=0")
    row = outcome.results.iloc[0]
    assert row["status"] == "done" and row["weight_norm"] > 0
    assert json.loads(row["metric_errors"]) == {"broken_metric": "ZeroDivisionError: broken on purpose"}


def test_selectors(arena_host):
    cells = parse_suite(ALL, arena_host).cells
    assert len(select_cells(cells, "method=flaky,seed=1")) == 4
    assert len(select_cells(cells, "*behaviour=nan*")) == 2
    with pytest.raises(SelectorError, match="unknown key 'methd'"):
        select_cells(cells, "methd=bptt")
    with pytest.raises(SelectorError, match="matches none"):
        select_cells(cells, "method=nothing")


def test_resume_refuses_another_suite(arena_host, tmp_path):
    first = run(arena_host, ALL, tmp_path, only="method=bptt,seed=0")
    with pytest.raises(RunDirectoryError, match="is of suite 'tiny'"):
        run(arena_host, ALL.replace('name = "tiny"', 'name = "other"'), tmp_path, resume=first.run_dir)


@pytest.mark.slow
def test_process_pool_gives_the_same_rows(tmp_path):
    here = Path(__file__).parent
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    shutil.copy(here / "plugin_fixtures.py", plugins / "fixture_plugin.py")
    (plugins / "register_fixture.py").write_text(
        "from fixture_plugin import TestPlugin\n"
        "import snnarena\n"
        "_p = TestPlugin()\n"
        "register_datasets = _p.register_datasets\n"
        "register_gradient_methods = _p.register_gradient_methods\n"
    )
    pytest.importorskip("plugin_fixtures")
    import sys

    sys.path.insert(0, str(plugins))
    try:
        host = PluginHost.load(HostConfig(plugins_dirs=(str(plugins),)))
        seq = run(host, ALL, tmp_path / "seq", only="method=bptt")
        par = run(host, ALL, tmp_path / "par", only="method=bptt", jobs=2)
    finally:
        sys.path.remove(str(plugins))
    cols = ["cell_id", "status", "test_accuracy", "train_loss", "grad_cosine_bptt"]
    a = seq.results[cols].sort_values("cell_id").reset_index(drop=True)
    b = par.results[cols].sort_values("cell_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
