"""Comparing two runs of a suite cell by cell, and finding the regressions.

Cells are matched on what defines them apart from the seed (:data:`CELL_KEY`); each metric is
aggregated over the seeds of a cell (``done`` cells only). For a metric with means ``m_a``,
``m_b``, sample standard deviations ``s_a``, ``s_b`` over ``n_a``, ``n_b`` seeds, the change
``Δ = m_b − m_a`` is *significant* when

* ``|Δ| > k · s_p`` with the pooled standard deviation
  ``s_p = sqrt(((n_a − 1) s_a² + (n_b − 1) s_b²) / (n_a + n_b − 2))`` and ``k = 2``, if both
  runs have at least two seeds;
* ``Δ ≠ 0``, if either run has a single seed (there is no spread to compare with);

and, in both cases, ``|Δ| > rel_tol · |m_a|`` (``rel_tol = 0`` by default). A significant change
in the bad direction of the metric (:data:`HIGHER_IS_BETTER`) is a *regression*.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from snnarena.results import load_run

#: Columns that identify a cell across runs (the seed is aggregated over).
CELL_KEY: tuple[str, ...] = (
    "method", "method_params", "model", "model_params", "dataset", "dataset_params", "neuron",
    "neuron_params", "surrogate", "loss", "T",
)
#: Direction of each known metric: True = higher is better, False = lower is better, None = neither.
HIGHER_IS_BETTER: dict[str, bool | None] = {
    "test_accuracy": True,
    "train_loss": False,
    "step_time_ms": False,
    "step_time_iqr_ms": False,
    "forward_ms": False,
    "backward_ms": False,
    "optimizer_ms": False,
    "peak_activation_bytes": False,
    "peak_device_bytes": False,
    "grad_cosine_bptt": True,
    "grad_norm_ratio_bptt": None,
    "grad_sign_agreement_bptt": True,
    "spike_rate": None,
    "n_parameters": None,
    "extra_parameters": False,
    "duration_s": False,
    # snnarena_plugins.metrics
    "footprint": False,
    "footprint_prepared": False,
    "connection_sparsity": None,
    "activation_sparsity": None,
    "Effective_MACs": False,
    "Effective_ACs": False,
    "Dense": False,
    "train_forward_ops": False,
    "train_backward_ops": False,
}
#: Metrics compared by default, in this order (plus any numeric metric column both runs share).
DEFAULT_METRICS: tuple[str, ...] = (
    "test_accuracy", "train_loss", "step_time_ms", "forward_ms", "backward_ms", "optimizer_ms",
    "peak_activation_bytes", "peak_device_bytes", "grad_cosine_bptt", "grad_norm_ratio_bptt",
    "grad_sign_agreement_bptt", "spike_rate",
)
_NOT_METRICS = frozenset({
    "T", "seed", "n_parameters", "train_steps", "epochs", "batch_size", "duration_s", "step_time_iqr_ms",
})


def _results(run: str | Path | pd.DataFrame) -> pd.DataFrame:
    if isinstance(run, pd.DataFrame):
        return run
    return load_run(run)[0]


def _metric_columns(a: pd.DataFrame, b: pd.DataFrame) -> list[str]:
    from snnarena.results import RESULT_COLUMNS

    shared = [c for c in a.columns if c in b.columns]
    extra = [c for c in shared if c not in RESULT_COLUMNS and c not in _NOT_METRICS
             and pd.api.types.is_numeric_dtype(a[c]) and pd.api.types.is_numeric_dtype(b[c])]
    return [m for m in DEFAULT_METRICS if m in shared] + sorted(extra)


def _aggregate(frame: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    done = frame[frame["status"] == "done"].copy()
    for key in CELL_KEY:
        done[key] = done[key].astype("string").fillna("") if key != "T" else done[key]
    long = done.melt(id_vars=list(CELL_KEY), value_vars=metrics, var_name="metric", value_name="value")
    long["value"] = pd.to_numeric(long["value"], errors="coerce")
    grouped = long.groupby([*CELL_KEY, "metric"], dropna=False, sort=False)["value"]
    return grouped.agg(mean="mean", std="std", n="count").reset_index()


def compare_runs(
    run_a: str | Path | pd.DataFrame,
    run_b: str | Path | pd.DataFrame,
    threshold: float = 2.0,
    rel_tol: float = 0.0,
) -> pd.DataFrame:
    """One row per (cell, metric): means, spreads and seed counts of ``a`` and ``b``, the change.

    ``run_a``/``run_b`` are run directories (or results tables). Columns: the :data:`CELL_KEY`
    columns, ``metric``, ``higher_is_better``, ``mean_a``, ``std_a``, ``n_a``, ``mean_b``,
    ``std_b``, ``n_b``, ``delta`` (b − a), ``rel_delta`` (delta / |mean_a|), ``pooled_std``,
    ``significant``, ``better`` and ``worse``. Cells present in one run only keep ``n = 0`` and NaN
    means on the other side; they are never significant.
    """
    a, b = _results(run_a), _results(run_b)
    metrics = _metric_columns(a, b)
    keys = [*CELL_KEY, "metric"]
    agg_a = _aggregate(a, metrics)
    agg_b = _aggregate(b, metrics)
    out = agg_a.merge(agg_b, on=keys, how="outer", suffixes=("_a", "_b"))
    for side in ("a", "b"):
        out[f"n_{side}"] = out[f"n_{side}"].fillna(0).astype(int)
    out = out[(out["n_a"] > 0) | (out["n_b"] > 0)].reset_index(drop=True)
    out["delta"] = out["mean_b"] - out["mean_a"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["rel_delta"] = out["delta"] / out["mean_a"].abs()
    out["pooled_std"] = [
        _pooled(sa, sb, na, nb) for sa, sb, na, nb in zip(out["std_a"], out["std_b"], out["n_a"], out["n_b"])
    ]
    out["higher_is_better"] = out["metric"].map(lambda m: HIGHER_IS_BETTER.get(m)).astype(object)
    significant = []
    for delta, pooled, na, nb, mean_a in zip(out["delta"], out["pooled_std"], out["n_a"], out["n_b"], out["mean_a"]):
        if not math.isfinite(delta) or na == 0 or nb == 0:
            significant.append(False)
            continue
        beyond_spread = abs(delta) > threshold * pooled if min(na, nb) >= 2 else delta != 0
        significant.append(bool(beyond_spread and abs(delta) > rel_tol * abs(mean_a)))
    out["significant"] = significant
    direction = out["higher_is_better"]
    up = out["delta"] > 0
    out["better"] = out["significant"] & (((direction == True) & up) | ((direction == False) & ~up))  # noqa: E712
    out["worse"] = out["significant"] & (((direction == True) & ~up) | ((direction == False) & up))  # noqa: E712
    order = {m: i for i, m in enumerate(metrics)}
    out["_order"] = out["metric"].map(order)
    out = out.sort_values([*CELL_KEY, "_order"], kind="stable")
    columns = [*CELL_KEY, "metric", "higher_is_better", "mean_a", "std_a", "n_a", "mean_b", "std_b", "n_b",
               "delta", "rel_delta", "pooled_std", "significant", "better", "worse"]
    return out[columns].reset_index(drop=True)


def _pooled(sa: float, sb: float, na: int, nb: int) -> float:
    if na < 2 or nb < 2:
        return math.nan
    return math.sqrt(((na - 1) * sa**2 + (nb - 1) * sb**2) / (na + nb - 2))


def regressions(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`compare_runs` that got worse beyond the seed spread, largest change first."""
    worse = frame[frame["worse"].astype(bool)].copy()
    order = worse["rel_delta"].abs().fillna(worse["delta"].abs())
    return worse.loc[order.sort_values(ascending=False, kind="stable").index].reset_index(drop=True)
