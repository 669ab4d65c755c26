"""Verdicts of the plugins' paper claims on a run's results, and the report's section of them.

The claims and the rules of their verdicts are in :mod:`snnarena.claims`; this module reads them
off labelled result rows (:func:`snnarena.report.tables.load`): it finds each claim's cells and
its reference's, measures the checked quantity with its confidence interval over seeds
(:mod:`snnarena.report.stats`) and decides.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as _scipy_stats

from snnarena.claims import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    PAIRED_KINDS,
    UNTESTABLE,
    Claim,
    ClaimResult,
    Conditions,
    Measured,
    Op,
    SubjectKind,
    Verdict,
    claims_of,
    params_text,
)
from snnarena.columns import Column
from snnarena.host import HostConfig, PluginHost
from snnarena.report.render import Cell, Section, Table, Text
from snnarena.report.stats import CONFIDENCE, Interval, t_interval, t_quantile
from snnarena.report.tables import ReportData, optimizer_text, text

#: Column kinds whose values do not depend on the seed (one seed decides a claim on them).
EXACT_KINDS: tuple[str, ...] = ("memory", "count")


def _satisfies(value: float, op: Op, threshold: float) -> bool:
    return {"<": value < threshold, "<=": value <= threshold, ">": value > threshold, ">=": value >= threshold}[op]


def decide(measured: Measured, op: Op, threshold: float) -> tuple[Verdict, str]:
    """The verdict on ``value <op> threshold`` from a measured interval (see the module docstring),
    and why when it is inconclusive."""
    if not math.isfinite(measured.mean):
        return UNTESTABLE, "no finite value"
    has_interval = math.isfinite(measured.low) and math.isfinite(measured.high)
    if not has_interval:
        if not measured.exact:
            return INCONCLUSIVE, f"{measured.n} value(s), no confidence interval: run more seeds"
        low = high = measured.mean
    else:
        low, high = measured.low, measured.high
    if _satisfies(low, op, threshold) and _satisfies(high, op, threshold):
        return HOLDS, ""
    if not _satisfies(low, op, threshold) and not _satisfies(high, op, threshold):
        return FAILS, ""
    return INCONCLUSIVE, f"the {100 * CONFIDENCE:g} % interval straddles {threshold:g}: run more seeds"


# -- evaluation --------------------------------------------------------------------------------------
#: Per subject kind: its name column, its parameters column, and the columns that must match
#: between a subject's cells and its reference's (besides run, T, loss and optimizer settings).
_SUBJECTS: Mapping[str, tuple[str, str, tuple[str, ...]]] = MappingProxyType(
    {
        "method": ("method", "method_params", ("setting",)),
        "model": ("model", "model_params", ("dataset_label", "method_label")),
        "neuron": ("neuron", "neuron_params", ("dataset_label", "model", "method_label")),
    }
)
_IDENTITY = ("run", "loss", "_training")


def _params(value: Any) -> dict[str, Any]:
    try:
        parsed = json.loads(text(value) or "{}")
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _matches(params_column: pd.Series, wanted: Mapping[str, Any]) -> pd.Series:
    """Rows whose parameters (JSON) include every ``wanted`` value."""
    if not wanted:
        return pd.Series(True, index=params_column.index)
    return params_column.map(lambda v: all(_params(v).get(k) == w for k, w in wanted.items())).astype(bool)


def _exact(metric: str, columns: Mapping[str, Column]) -> bool:
    column = columns.get(metric)
    return column is not None and column.kind in EXACT_KINDS


def _values_by_seed(rows: pd.DataFrame, metric: str) -> pd.Series:
    values = pd.to_numeric(rows[metric], errors="coerce") if metric in rows else pd.Series(np.nan, index=rows.index)
    by_seed = values.groupby(rows["seed"]).mean()
    return by_seed[np.isfinite(by_seed.to_numpy(float))]


def _pick_T(available: Iterable[float], wanted: Sequence[int]) -> float | None:
    """The ``T`` closest to the paper's (in log scale), else the largest."""
    Ts = sorted({float(t) for t in available if math.isfinite(float(t)) and float(t) > 0})
    if not Ts:
        return None
    if not wanted:
        return Ts[-1]
    target = math.log(max(wanted))
    return min(Ts, key=lambda t: (abs(math.log(t) - target), -t))


def _slope(rows: pd.DataFrame, metric: str, log: bool) -> Interval:
    """Least-squares slope of ``metric`` (log) against ``T`` (log) over every finite point, with
    its t-interval (``n − 2`` degrees of freedom; NaN half-width with fewer than 3 points)."""
    t = pd.to_numeric(rows["T"], errors="coerce").to_numpy(float)
    v = pd.to_numeric(rows[metric], errors="coerce").to_numpy(float)
    ok = np.isfinite(t) & np.isfinite(v) & ((t > 0) & (v > 0) if log else True)
    x, y = (np.log(t[ok]), np.log(v[ok])) if log else (t[ok], v[ok])
    n = int(ok.sum())
    if len(np.unique(x)) < 2:
        return Interval(math.nan, math.nan, n)
    fit = _scipy_stats.linregress(x, y)
    half = t_quantile(n - 2) * float(fit.stderr) if n > 2 else math.nan
    return Interval(float(fit.slope), half, n)


def _growth(rows: pd.DataFrame, metric: str) -> tuple[Interval, str]:
    """Per seed, ``metric`` at the largest ``T`` over the smallest, and the two ``T``."""
    Ts = sorted(pd.to_numeric(rows["T"], errors="coerce").dropna().unique())
    first = _values_by_seed(rows[rows["T"] == Ts[0]], metric)
    last = _values_by_seed(rows[rows["T"] == Ts[-1]], metric)
    shared = first.index.intersection(last.index)
    ratios = last.loc[shared].to_numpy(float) / first.loc[shared].to_numpy(float)
    return t_interval(ratios), f"{int(Ts[0])}..{int(Ts[-1])}"


def _differences(rows: pd.DataFrame, conditions: Conditions, Ts: str) -> tuple[str, ...]:
    """How the cells differ from the paper's conditions."""
    out: list[str] = []
    for column, wanted, what in (("dataset", conditions.datasets, "dataset"), ("model", conditions.models, "model")):
        used = sorted({text(v) for v in rows[column]} - {""})
        if wanted and any(u not in wanted for u in used):
            out.append(f"{what} {', '.join(used)} (paper: {', '.join(wanted)})")
    if conditions.min_parameters is not None:
        n = pd.to_numeric(rows["n_parameters"], errors="coerce").max()
        if not (n >= conditions.min_parameters):
            shown = "unknown" if not math.isfinite(n) else f"{int(n):,}"
            out.append(f"{shown} parameters (paper: {conditions.min_parameters:,} or more)")
    if conditions.T:
        used_T = sorted(int(t) for t in pd.to_numeric(rows["T"], errors="coerce").dropna().unique())
        if max(used_T, default=0) < max(conditions.T) or not set(used_T) & set(conditions.T):
            out.append(f"T = {Ts} (paper: {', '.join(map(str, conditions.T))})")
    if conditions.device == "cuda":
        devices = sorted({text(v) for v in rows["device"]} - {""})
        if not any(d.startswith("cuda") for d in devices):
            out.append(f"device {', '.join(devices) or 'unknown'} (paper: GPU)")
    return tuple(out)


def _missing_metric(rows: pd.DataFrame, metric: str) -> str:
    """Why ``metric`` has no value in ``rows``."""
    if metric not in rows:
        return f"column {metric} was not measured in this run (add its metric plugin to the suite's metrics)"
    if metric == "peak_device_bytes":
        devices = {text(v) for v in rows["device"]}
        if not any(d.startswith("cuda") for d in devices):
            return "no GPU: peak_device_bytes is measured on CUDA devices only"
    return f"{metric} has no finite value in these cells"


@dataclass(frozen=True)
class _Unit:
    """A subject variant's finished cells in one context, and its reference's."""

    label: str
    context: str
    rows: pd.DataFrame
    reference: pd.DataFrame | None


def _units(results: pd.DataFrame, kind: SubjectKind, name: str, claim: Claim) -> tuple[list[_Unit], str]:
    """The groups of cells a claim is evaluated on, or why there is none."""
    name_col, params_col, context_cols = _SUBJECTS[kind]
    done = results[results["status"] == "done"]
    mine = done[(done[name_col] == name) & _matches(done[params_col], claim.params)]
    if mine.empty:
        any_rows = results[results[name_col] == name]
        if any_rows.empty:
            return [], f"no cells of {kind} {name!r} in this run"
        skipped = any_rows[any_rows["status"] != "done"]
        why = text(skipped["reason"].iloc[0]) if not skipped.empty else ""
        wanted = params_text(claim.params)
        return [], f"no finished cell of {name}{wanted}" + (f": {why}" if why else "")
    label_col = "variant" if kind == "method" else "model_label" if kind == "model" else params_col
    keys = [*_IDENTITY, *context_cols]
    check = claim.check
    reference = None
    if check.kind in PAIRED_KINDS:
        reference = done[(done[name_col] == check.reference) & _matches(done[params_col], check.reference_params)]
    units = []
    for key, rows in mine.groupby([*keys, label_col], sort=False):
        context = " · ".join(text(v) for v in key[len(_IDENTITY) : -1])
        ref_rows = None
        if reference is not None:
            same = np.ones(len(reference), dtype=bool)
            for column, value in zip(keys, key, strict=False):
                same &= (reference[column] == value).to_numpy()
            candidates = reference[same]
            if not candidates.empty:  # the reference variant with the most cells, as the report picks
                best = candidates.groupby(label_col).size().sort_index().idxmax()
                ref_rows = candidates[candidates[label_col] == best]
        units.append(_Unit(text(key[-1]), context, rows, ref_rows))
    return units, ""


def _evaluate_unit(
    unit: _Unit, kind: SubjectKind, name: str, claim: Claim, columns: Mapping[str, Column]
) -> ClaimResult:
    check = claim.check
    metric = check.metric

    def untestable(reason: str, rows: pd.DataFrame = unit.rows, Ts: str = "") -> ClaimResult:
        differences = _differences(rows, claim.conditions, Ts)
        return ClaimResult(name, kind, claim, UNTESTABLE, None, unit.label, unit.context, Ts, reason, differences)

    if metric not in unit.rows or not np.isfinite(pd.to_numeric(unit.rows[metric], errors="coerce")).any():
        return untestable(_missing_metric(unit.rows, metric))
    exact = _exact(metric, columns)
    if check.kind in ("growth", "slope"):
        n_T = pd.to_numeric(unit.rows["T"], errors="coerce").nunique()
        if n_T < 2:
            return untestable(f"a {check.kind} in T needs cells at two or more T; this run has one")
        if check.kind == "growth":
            interval, Ts = _growth(unit.rows, metric)
        else:
            interval = _slope(unit.rows, metric, check.log)
            all_T = pd.to_numeric(unit.rows["T"], errors="coerce")
            Ts = f"{int(all_T.min())}..{int(all_T.max())}"
        rows = unit.rows
    else:
        available = set(pd.to_numeric(unit.rows["T"], errors="coerce").dropna())
        if unit.reference is not None:
            available &= set(pd.to_numeric(unit.reference["T"], errors="coerce").dropna())
        elif check.kind in PAIRED_KINDS:
            return untestable(f"no finished {check.reference} cell to compare with in the same setting")
        T = _pick_T(available, claim.conditions.T)
        if T is None:
            return untestable(f"no T at which both {unit.label} and {check.reference} finished")
        Ts = str(int(T))
        mine = _values_by_seed(unit.rows[unit.rows["T"] == T], metric)
        rows = unit.rows[unit.rows["T"] == T]
        if check.kind == "threshold":
            interval = t_interval(mine.to_numpy(float))
        else:
            assert unit.reference is not None
            ref_rows = unit.reference[unit.reference["T"] == T]
            theirs = _values_by_seed(ref_rows, metric)
            shared = mine.index.intersection(theirs.index)
            if len(shared) == 0:
                return untestable(f"no seed with a {metric} value on both sides ({check.reference})", rows, Ts)
            a, b = mine.loc[shared].to_numpy(float), theirs.loc[shared].to_numpy(float)
            interval = t_interval(a / b if check.kind == "ratio" else a - b)
    measured = Measured(interval.mean, interval.low, interval.high, interval.n, exact)
    verdict, reason = decide(measured, check.op, check.threshold)
    differences = _differences(rows, claim.conditions, Ts)
    return ClaimResult(name, kind, claim, verdict, measured, unit.label, unit.context, Ts, reason, differences)


def evaluate_claim(
    results: pd.DataFrame, kind: SubjectKind, name: str, claim: Claim, columns: Mapping[str, Column]
) -> list[ClaimResult]:
    """The verdicts of ``claim`` of the plugin ``name`` on labelled ``results`` (:func:`prepare`),
    one per subject variant and context; one ``not testable here`` result when there is none."""
    units, reason = _units(results, kind, name, claim)
    if not units:
        return [ClaimResult(name, kind, claim, UNTESTABLE, reason=reason)]
    return [_evaluate_unit(unit, kind, name, claim, columns) for unit in units]


def prepare(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` labelled as the report labels them (:func:`snnarena.report.tables.load`) with
    the optimizer settings each cell is compared under (the pairing key of a reference)."""
    return results.assign(_training=optimizer_text(results).to_numpy())


@dataclass(frozen=True)
class Subject:
    """A plugin class whose claims are evaluated."""

    kind: SubjectKind
    name: str
    claims: tuple[Claim, ...]


def evaluate(results: pd.DataFrame, subjects: Iterable[Subject], columns: Mapping[str, Column]) -> list[ClaimResult]:
    """Every claim of every subject on labelled ``results``, in declaration order."""
    prepared = prepare(results)
    return [r for s in subjects for c in s.claims for r in evaluate_claim(prepared, s.kind, s.name, c, columns)]


def subjects_of(entries: Iterable[Any], names: Sequence[str] = ()) -> list[Subject]:
    """The methods, models and neurons among a host's ``entries`` (:class:`snnarena.registry.Entry`)
    that declare claims, restricted to ``names`` when given."""
    out = []
    for entry in entries:
        if entry.kind in _SUBJECTS and claims_of(entry.obj) and (not names or entry.name in names):
            out.append(Subject(entry.kind, entry.name, claims_of(entry.obj)))
    return out


# -- tables ------------------------------------------------------------------------------------------
#: The columns of the claims table (the report's section, ``snnarena claims --format md``).
TABLE_COLUMNS: tuple[str, ...] = (
    "plugin",
    "claim",
    "source",
    "check",
    "cells",
    "T",
    f"value [{100 * CONFIDENCE:g} % CI]",
    "verdict",
    "differs from the paper in",
)
#: How verdicts are reached (the section's note, and the CLI's footer).
VERDICT_NOTE = (
    f"holds: the whole {100 * CONFIDENCE:g} % Student-t interval over seeds satisfies the check; does not hold: the "
    "whole interval violates it; inconclusive: the interval straddles the threshold, or one seed of a metric that "
    "depends on the seed (run more seeds); not testable here: the run lacks the cells, the reference, the metric "
    "or the GPU the check needs. Ratios and differences pair each seed with the reference's same seed (same run, "
    "setting, T, loss and optimizer settings). (at reduced scale): the cells differ from the paper's conditions "
    "(dataset, model, size, T, device), listed in the last column; the verdict is about this scale only."
)


def table_rows(results: Sequence[ClaimResult]) -> list[list[str]]:
    """One row of :data:`TABLE_COLUMNS` per result."""
    return [
        [
            r.label or r.plugin,
            r.claim.name,
            r.claim.source,
            r.claim.check.describe(),
            r.context,
            r.T,
            r.value_text(),
            r.verdict_text(),
            "; ".join(r.reduced),
        ]
        for r in results
    ]


def verdict_counts(results: Sequence[ClaimResult]) -> str:
    """How many verdicts of each kind, ``4 verdicts: 2 holds, 1 does not hold, ...`` (section and CLI)."""
    counts = ", ".join(f"{sum(r.verdict == v for r in results)} {v}" for v in (HOLDS, FAILS, INCONCLUSIVE, UNTESTABLE))
    return f"{len(results)} verdicts: {counts}"


def claims_section(data: ReportData, subjects: Iterable[Subject]) -> Section | None:
    """The report's section: every claim of the ``subjects`` that have cells in the run; ``None``
    when none has."""
    present = [s for s in subjects if (data.results[_SUBJECTS[s.kind][0]] == s.name).any()]
    if not present:
        return None
    results = evaluate(data.results, present, data.columns)
    rows = [[Cell(v, numeric=i in (5, 6)) for i, v in enumerate(row)] for row in table_rows(results)]
    return Section(
        "Paper claims",
        [Text(f"{verdict_counts(results)}."), Table(list(TABLE_COLUMNS), rows), Text(VERDICT_NOTE, "note")],
        anchor="claims",
    )


def installed_claims_section(data: ReportData) -> Section | None:
    """:func:`claims_section` of the installed plugins' claims (and those of ``$SNNARENA_PLUGINS_DIR``)."""
    host = PluginHost.load(HostConfig.from_env())
    return claims_section(data, subjects_of(host.entries()))
