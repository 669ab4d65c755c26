"""An equal tuning budget for every method: the suite's ``[tune]`` table.

::

    [tune]
    trials = 8               # trials per tuning unit, the same for every method
    lr = [1e-4, 1e-1]        # the search space: the learning rate, log-uniform
    # seed = 0               # the seed the trials train with (default: the grid's first seed)

A *tuning unit* is one method variant on one model variant, dataset variant and ``T``. Each unit
gets exactly ``trials`` trials: cells trained with the tune seed and a learning rate drawn by
Optuna's TPE sampler (seeded, so tuning is reproducible), judged by the validation value of the
task's primary score in its direction (``val_accuracy`` up, ``val_mse`` down ...). The test split
is never read for the choice. The unit's cells then run with the best learning rate, for every
seed of the grid, and record it in ``tuned`` (``{"lr", "trials", "score", "seed"}``); the test
score is read once, as always. A trial that fails or scores NaN counts against its learning rate.
Trials run one after another in the calling process.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from snnarena.data import Dataset
from snnarena.extras import import_extra
from snnarena.host import PluginHost
from snnarena.params import params_of
from snnarena.suite import CellSpec, SuiteSpec, TuneSpec
from snnarena.task import task_of


@dataclass(frozen=True)
class UnitResult:
    """The trials of one tuning unit: every ``(lr, validation score)`` and the chosen ``lr``."""

    unit: str
    score: str
    trials: tuple[tuple[float, float], ...]
    best_lr: float


#: ``(unit label, trial index, lr, validation score)`` after each trial.
TrialCallback = Callable[[str, int, float, float], None]
#: Trains one cell and returns its result row (``snnarena.cell.run_cell(...).row`` by default).
CellRunner = Callable[[CellSpec], dict[str, Any]]


def unit_key(cell: CellSpec, seed: int) -> str:
    """The id of a cell's tuning unit: the cell with the tune seed."""
    return dataclasses.replace(cell, seed=seed).cell_id


def primary_score(cell: CellSpec, host: PluginHost) -> tuple[str, bool]:
    """``(val column, higher is better)`` of the task of the cell's dataset."""
    dataset = cast(type[Dataset], host.get("dataset", cell.dataset).obj)
    task = task_of(dataset.task_for(params_of(dataset).resolve(cell.dataset_params)))
    return f"val_{task.score}", task.higher_is_better


def tune_suite(
    suite: SuiteSpec, host: PluginHost, run_cell: CellRunner, on_trial: TrialCallback | None = None
) -> tuple[SuiteSpec, list[UnitResult]]:
    """The suite with every cell's learning rate tuned on its unit's trials (see the module
    docstring), and each unit's trials. ``suite.tune`` must be set."""
    tune = suite.tune
    if tune is None:
        raise ValueError(f"suite {suite.name!r} has no [tune] table")
    optuna = import_extra("optuna", extra="tune", needed_for="[tune]")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cells = list(suite.iter_cells())
    units: dict[str, CellSpec] = {}
    for cell in cells:
        units.setdefault(unit_key(cell, tune.seed), dataclasses.replace(cell, seed=tune.seed))
    results: dict[str, UnitResult] = {}
    for key, unit in units.items():
        results[key] = _tune_unit(optuna, unit, tune, host, run_cell, on_trial)
    tuned = [_with_lr(cell, results[unit_key(cell, tune.seed)], tune) for cell in cells]
    out = SuiteSpec(suite.name, suite.description, suite.source, suite.text, cells=tuned)
    out.added, out.tune = suite.added, tune
    return out, list(results.values())


def _tune_unit(
    optuna: Any,
    unit: CellSpec,
    tune: TuneSpec,
    host: PluginHost,
    run_cell: CellRunner,
    on_trial: TrialCallback | None,
) -> UnitResult:
    score, higher = primary_score(unit, host)
    study = optuna.create_study(
        direction="maximize" if higher else "minimize", sampler=optuna.samplers.TPESampler(seed=tune.seed)
    )
    label = unit.label
    for index in range(tune.trials):
        trial = study.ask()
        lr = float(trial.suggest_float("lr", tune.lr[0], tune.lr[1], log=True))
        row = run_cell(dataclasses.replace(unit, optimizer={**unit.optimizer, "lr": lr}))
        value = row.get(score) if row.get("status") == "done" else math.nan
        value = float(value) if isinstance(value, (int, float)) else math.nan
        if math.isfinite(value):
            study.tell(trial, value)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        if on_trial is not None:
            on_trial(label, index, lr, value)
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best_lr = float(study.best_params["lr"]) if finished else float(unit.optimizer["lr"])
    trials = tuple((float(t.params["lr"]), float(t.value) if t.value is not None else math.nan) for t in study.trials)
    return UnitResult(label, score, trials, best_lr)


def _with_lr(cell: CellSpec, result: UnitResult, tune: TuneSpec) -> CellSpec:
    tuned = {"lr": result.best_lr, "trials": tune.trials, "score": result.score, "seed": tune.seed}
    return dataclasses.replace(cell, optimizer={**cell.optimizer, "lr": result.best_lr}, tuned=tuned)
