"""The equal tuning budget (``[tune]``, :mod:`snnarena.tuning`): every method gets the same number
of trials, chosen on the validation score in the task's direction, never on test."""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import pytest

from snnarena.cell import run_cell
from snnarena.host import PluginHost
from snnarena.suite import CellSpec, SuiteError, parse_suite
from snnarena.tuning import tune_suite

BEST_LR = 3e-3


def suite_text(dataset: str = 'name = "digits"\nparams = { encoding = "direct" }', tune: str = "") -> str:
    tune = tune or "trials = 5\nlr = [1e-4, 1e-1]"
    return f"""
name = "tuned"
[train]
steps = 3
batch_size = 16
optimizer = {{ name = "adam", lr = 1e-2 }}
eval_every_epoch = false
fidelity = false
[tune]
{tune}
[grid]
seeds = [1, 2]
T = [4]
[[methods]]
name = "bptt"
[[methods]]
name = "tbptt"
params = {{ K = 2 }}
[[models]]
name = "mlp"
params = {{ hidden = [8] }}
[[datasets]]
{dataset}
"""


class FakeRunner:
    """Scores a trial by how close its lr is to BEST_LR (validation), and the opposite on test, so a
    choice made on test would pick the worst learning rate."""

    def __init__(self, score: str = "val_accuracy", higher: bool = True, fail_above: float = math.inf) -> None:
        self.calls: list[CellSpec] = []
        self.score, self.higher, self.fail_above = score, higher, fail_above

    def __call__(self, spec: CellSpec) -> dict[str, Any]:
        self.calls.append(spec)
        lr = spec.optimizer["lr"]
        if lr > self.fail_above:
            return {"status": "failed"}
        closeness = -abs(math.log(lr) - math.log(BEST_LR))
        value = closeness if self.higher else -closeness
        test = self.score.replace("val_", "test_")
        return {"status": "done", self.score: value, test: -value}


def test_every_method_gets_the_same_trials_on_the_tune_seed(host: PluginHost) -> None:
    suite = parse_suite(suite_text(), host)
    runner = FakeRunner()
    tuned, units = tune_suite(suite, host, runner)
    per_unit = Counter((spec.method, json.dumps(spec.method_params)) for spec in runner.calls)
    assert len(per_unit) == 2 and set(per_unit.values()) == {5}  # bptt and tbptt: 5 trials each
    assert {spec.seed for spec in runner.calls} == {1}  # the grid's first seed by default
    assert all(1e-4 <= spec.optimizer["lr"] <= 1e-1 for spec in runner.calls)
    for unit in units:
        best = max(unit.trials, key=lambda t: t[1])
        assert unit.best_lr == best[0] and unit.score == "val_accuracy" and len(unit.trials) == 5
    assert [u.trials for u in units][0] == [u.trials for u in units][1]  # same sampler seed, same draws
    cells = tuned.cells
    assert len(cells) == 4 and {c.seed for c in cells} == {1, 2}
    for cell in cells:
        assert cell.optimizer["lr"] == cell.tuned["lr"] and cell.tuned["trials"] == 5
        assert cell.tuned["score"] == "val_accuracy" and cell.tuned["seed"] == 1
    assert {c.cell_id for c in cells}.isdisjoint({c.cell_id for c in suite.cells})  # the lr is part of the cell


def test_a_regression_task_is_tuned_downwards(host: PluginHost) -> None:
    text = suite_text('name = "adding"\nparams = { n_train = 64, n_test = 32 }')
    suite = parse_suite(text, host)
    runner = FakeRunner("val_mse", higher=False)
    _, units = tune_suite(suite, host, runner)
    for unit in units:
        assert unit.score == "val_mse" and unit.best_lr == min(unit.trials, key=lambda t: t[1])[0]


def test_failed_trials_count_against_their_learning_rate(host: PluginHost) -> None:
    suite = parse_suite(suite_text(tune="trials = 6\nlr = [1e-4, 1e-1]\nseed = 2"), host)
    runner = FakeRunner(fail_above=1e-2)
    tuned, units = tune_suite(suite, host, runner)
    assert all(unit.best_lr <= 1e-2 for unit in units) and {s.seed for s in runner.calls} == {2}
    everything_fails = FakeRunner(fail_above=0.0)
    kept, _ = tune_suite(suite, host, everything_fails)
    assert {c.optimizer["lr"] for c in kept.cells} == {1e-2}  # nothing finished: the suite's lr stays


@pytest.mark.parametrize(
    ("tune", "problem"),
    [
        ("trials = 0\nlr = [1e-4, 1e-1]", "tune.trials: expected the number of trials per method"),
        ("trials = 3\nlr = [1e-1, 1e-4]", "tune.lr: expected the learning-rate range [low, high] with 0 < low < high"),
        ("trials = 3\nlr = [0, 1e-1]", "tune.lr: expected the learning-rate range"),
        ("trials = 3\nlr = 0.1", "tune.lr: expected the learning-rate range"),
        ("trials = 3\nlr = [1e-4, 1e-1]\nseed = -1", "tune.seed: expected an integer >= 0"),
        ("trials = 3\nlr = [1e-4, 1e-1]\nsampler = 'grid'", "tune.sampler: unknown key; allowed: trials, lr, seed"),
    ],
)
def test_a_bad_tune_table_is_refused(host: PluginHost, tune: str, problem: str) -> None:
    with pytest.raises(SuiteError) as refused:
        parse_suite(suite_text(tune=tune), host)
    assert problem in str(refused.value)


def test_tuned_cells_run_and_record_what_was_chosen(host: PluginHost) -> None:
    suite = parse_suite(suite_text(tune="trials = 2\nlr = [1e-3, 1e-2]"), host)

    def trial(spec: CellSpec) -> dict[str, Any]:
        return run_cell(spec, host, "tuning", "cpu").row

    tuned, units = tune_suite(suite, host, trial)
    assert all(len(u.trials) == 2 and all(math.isfinite(v) for _, v in u.trials) for u in units)
    row = run_cell(tuned.cells[0], host, "r", "cpu").row
    assert row["status"] == "done" and row["lr"] == tuned.cells[0].optimizer["lr"]
    assert json.loads(row["tuned"]) == tuned.cells[0].tuned
    untuned = run_cell(suite.cells[0], host, "r", "cpu").row
    assert untuned["tuned"] == ""


def test_without_optuna_the_suite_names_the_extra(host: PluginHost, monkeypatch: pytest.MonkeyPatch) -> None:
    from snnarena import extras

    real = extras.importlib.import_module

    def refuse(name: str) -> Any:
        if name == "optuna":
            raise ImportError("No module named 'optuna'")
        return real(name)

    monkeypatch.setattr(extras.importlib, "import_module", refuse)
    with pytest.raises(SuiteError, match=r'tune: \[tune\] needs optuna.*pip install "snnarena\[tune\]"'):
        parse_suite(suite_text(), host)


def test_snnarena_run_tunes_then_runs_the_grid(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from snnarena.cli import main

    path = tmp_path / "tuned.toml"
    path.write_text(suite_text(tune="trials = 2\nlr = [1e-3, 1e-2]"))
    assert main(["run", str(path), "--results", str(tmp_path / "results"), "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "tuning: 2 trials per method, model, dataset and T (seed 1, lr in [0.001, 0.01])" in out
    assert out.count("over 2 trials") == 2 and "cells: 4 done" in out


def test_tuned_methods_are_compared_with_bptt_at_its_own_tuned_rate() -> None:
    import pandas as pd

    from snnarena.report.tables import _reference_positions, optimizer_text

    tuned = json.dumps({"lr": 1.0})
    summary = pd.DataFrame(
        {
            "setting": ["s"] * 3,
            "T": [4] * 3,
            "run": ["r"] * 3,
            "loss": ["per_step"] * 3,
            "method": ["bptt", "tbptt", "ottt"],
            "variant": ["bptt", "tbptt", "ottt"],
            "n": [2, 2, 2],
            "optimizer": ["adam"] * 3,
            "lr": [0.003, 0.02, 0.01],
            "tuned": [tuned, tuned, ""],
        }
    )
    assert list(optimizer_text(summary)) == ["lr=tuned", "lr=tuned", "lr=0.01"]
    assert list(_reference_positions(summary)) == [0, 0, -1]  # the untuned row has no tuned reference
