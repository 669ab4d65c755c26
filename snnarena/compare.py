"""Comparing two runs of a suite cell by cell: regressions, improvements, and cells lost on one side.

Cells are matched on what defines them apart from the seed (:data:`CELL_KEY`); each metric is
aggregated over the ``done`` seeds of a cell. Which columns are metrics, and their direction, unit
and kind, come from the runs' manifests (:func:`snnarena.columns.columns_from_manifest`), so a
metric plugin's columns are compared like the host's own.

**Noise model.** For a metric with means ``m_a``, ``m_b``, sample standard deviations ``s_a``,
``s_b`` over ``n_a``, ``n_b`` seeds, the change ``Δ = m_b − m_a`` is *significant* when

* ``|Δ|`` exceeds the tolerance of the column's kind (:data:`DEFAULT_TOLERANCES`: time 10 %,
  memory, counts 0 %, scores and ratios 0.01 absolute; memory 5 % when a run is on a GPU, whose
  caching allocator varies), which holds with a single seed; and
* if both runs have at least two seeds, also ``|Δ| > k · s_p`` with the pooled standard deviation
  ``s_p = sqrt(((n_a − 1) s_a² + (n_b − 1) s_b²) / (n_a + n_b − 2))`` and ``k = 2``; and
* for a column that declares a within-cell ``spread`` (:attr:`snnarena.columns.Column.spread`:
  ``step_time_ms`` → ``step_time_iqr_ms``, the interquartile range of the cell's per-step times,
  and likewise ``forward_ms`` → ``forward_iqr_ms`` for each phase)
  measured on both sides, also ``|Δ| > k_iqr · max(IQR_a, IQR_b)`` with ``k_iqr = 2``
  (:attr:`NoiseModel.iqr_factor`; IQR averaged over the seeds), which holds with a single seed.

The step time is the median of a cell's steps and the IQR the width of their middle half (for
normal step times about 1.35 σ). ``k_iqr = 2`` is Tukey's outlier fence: a median more than
``2 · IQR`` from the other's lies beyond ``Q3 + 1.5 · IQR`` of the other cell's step times (for a
symmetric distribution), i.e. it would be an outlier among them (about 2.7 σ, for normal times);
``max`` makes that hold for the wider of the two cells. The median of ``N`` steps is far more
precise (about ``0.93 · IQR / sqrt(N)``), but the noise between two runs is not sampling noise: it
is the machine's state, which moves every step of a cell, and a cell's IQR is the only
single-seed measure of how unsteady that was. In an identical rerun of the ``quick`` suite on a
loaded 2-CPU machine, 28 of 36 cells (each seed on its own) changed step time by more than 10 %,
14 by more than ``1 · IQR``, 4 by more than ``2 · IQR``. The floor applies with several seeds too:
the seeds of a run share its machine's load, so their spread misses a shift of the whole run (with
both seeds, 7 of 18 cells' step times passed ``2 · s_p`` and 10 %, 1 also ``2 · IQR``). The spread columns
themselves are not judged; they appear as ``spread_a``/``spread_b`` in the rows they serve.

**Timings on a shared machine.** Load from other processes that lasts a whole cell shifts all of
its step times, beyond its IQR, and a run's seeds alike: on that loaded machine, before the phase
times had spread columns of their own, the phase times of identical runs differed by up to 60 %
and ``--tolerance time=60%`` was needed for a clean identical rerun (with per-phase IQRs, 1-3 of 72
timing verdicts per seed stayed, none with both seeds). No statistic of the runs alone can
tell that from a slower method, so whenever time columns get a verdict the output notes that
timing verdicts need runs made on an idle machine, or a wider time tolerance.

**Cells on one side only.** A cell (per seed) that is ``done`` on one side and missing, failed or
skipped on the other is reported, as is a metric measured on one side only; both count against
``--fail-on-regression`` (:meth:`Comparison.gate_failures`). Runs of different suites are compared
on their common cells only, with a note saying how many.
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from snnarena.columns import COLUMN_KINDS, Column, columns_from_manifest
from snnarena.errors import SnnarenaError
from snnarena.results import RESULT_COLUMNS, RunDirectory, load_run

#: Columns that identify a cell across runs (the seed is aggregated over).
CELL_KEY: tuple[str, ...] = (
    "method",
    "method_params",
    "protocol",
    "preset",
    "model",
    "model_params",
    "dataset",
    "dataset_params",
    "neuron",
    "neuron_params",
    "surrogate",
    "loss",
    "T",
)
#: The columns of the full table, in this order.
TABLE_COLUMNS: tuple[str, ...] = (
    "cell",
    *CELL_KEY,
    "seed",
    "metric",
    "kind",
    "unit",
    "higher_is_better",
    "mean_a",
    "std_a",
    "n_a",
    "mean_b",
    "std_b",
    "n_b",
    "delta",
    "rel_delta",
    "pooled_std",
    "spread_a",
    "spread_b",
    "threshold",
    "verdict",
    "basis",
)
#: Manifest ``environment`` keys that identify the machine timings were taken on.
MACHINE_KEYS: tuple[str, ...] = ("device", "cpu", "processor", "cpu_count", "gpu")

REGRESSION, IMPROVEMENT, CHANGED, UNCHANGED = "regression", "improvement", "changed", "unchanged"
NOT_COMPARABLE = "not comparable"
#: The ``metric`` of rows that report a cell's status rather than a measurement.
STATUS_ROW = "status"
#: Verdict order of the output (the problems first).
VERDICT_ORDER: tuple[str, ...] = (
    REGRESSION,
    "missing in B",
    "failed in B",
    "skipped in B",
    "missing in A",
    "failed in A",
    "skipped in A",
    IMPROVEMENT,
    CHANGED,
    NOT_COMPARABLE,
    UNCHANGED,
)


class CompareError(SnnarenaError):
    """Runs that cannot be compared as asked (a bad ``--tolerance``, no common cell ...)."""


# -- the noise model --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tolerance:
    """Changes up to ``value`` × ``|m_a|`` (``relative``) or ``value`` (in the column's unit) are noise."""

    value: float
    relative: bool

    def threshold(self, mean_a: float) -> float:
        return self.value * abs(mean_a) if self.relative else self.value

    def describe(self) -> str:
        return f"{100 * self.value:g}%" if self.relative else f"{self.value:g}"

    @classmethod
    def parse(cls, text: str) -> Tolerance:
        """``"10%"`` (relative) or ``"0.01"`` (absolute, in the column's unit)."""
        raw = text.strip()
        relative = raw.endswith("%")
        try:
            value = float(raw[:-1] if relative else raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise CompareError(
                f"--tolerance: {text!r} is not a tolerance; give a percentage (10%) "
                "or an absolute value in the column's unit (0.01), >= 0"
            )
        return cls(value / 100 if relative else value, relative)


#: Tolerance per column kind with one seed (see the module docstring).
DEFAULT_TOLERANCES: Mapping[str, Tolerance] = {
    "time": Tolerance(0.10, True),
    "memory": Tolerance(0.0, True),
    "count": Tolerance(0.0, True),
    "score": Tolerance(0.01, False),
    "ratio": Tolerance(0.01, False),
}
#: Memory tolerance when either run used a GPU (the caching allocator's peaks vary a little).
GPU_MEMORY_TOLERANCE = Tolerance(0.05, True)


def parse_tolerances(items: Iterable[str]) -> dict[str, Tolerance]:
    """``["time=5%", "test_accuracy=0.005"]`` → ``{key: Tolerance}``; a key is a kind or a column."""
    out: dict[str, Tolerance] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CompareError(
                f"--tolerance {item!r}: expected KIND=VALUE or COLUMN=VALUE, e.g. time=5% "
                f"(kinds: {', '.join(COLUMN_KINDS)})"
            )
        out[key.strip()] = Tolerance.parse(value)
    return out


@dataclass(frozen=True)
class NoiseModel:
    """How a change is told from noise: tolerances, the seed-spread factor ``k``, the within-cell
    spread factor ``k_iqr``, machine policy.

    ``tolerances`` override :data:`DEFAULT_TOLERANCES`, keyed by column kind or column name (a
    column name wins over its kind). ``iqr_factor`` = 0 turns the within-cell floor off.
    """

    tolerances: Mapping[str, Tolerance] = field(default_factory=dict)
    spread_factor: float = 2.0
    timings_across_machines: bool = False
    iqr_factor: float = 2.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.spread_factor) and self.spread_factor >= 0):
            raise CompareError(f"--spread must be a number >= 0, got {self.spread_factor}")
        if not (math.isfinite(self.iqr_factor) and self.iqr_factor >= 0):
            raise CompareError(f"the IQR factor must be a number >= 0, got {self.iqr_factor}")

    def tolerance(self, column: Column, on_gpu: bool) -> tuple[Tolerance, str]:
        """The tolerance of ``column`` and where it comes from (for the ``basis`` text)."""
        if column.name in self.tolerances:
            return self.tolerances[column.name], f"--tolerance {column.name}"
        if column.kind in self.tolerances:
            return self.tolerances[column.kind], f"--tolerance {column.kind}"
        if column.kind == "memory" and on_gpu:
            return GPU_MEMORY_TOLERANCE, "memory tolerance on GPU"
        return DEFAULT_TOLERANCES[column.kind], f"{column.kind} tolerance"


# -- the runs -----------------------------------------------------------------------------------------
@dataclass
class RunTable:
    """A run's results table and manifest (an empty manifest for a bare table)."""

    results: pd.DataFrame
    manifest: dict[str, Any]
    name: str

    @classmethod
    def of(cls, run: str | Path | pd.DataFrame | RunTable, name: str) -> RunTable:
        if isinstance(run, RunTable):
            return run
        if isinstance(run, pd.DataFrame):
            return cls(run, {}, name)
        return cls(load_run(run)[0], RunDirectory(run).manifest(), str(run))

    @property
    def suites(self) -> set[str]:
        if self.manifest.get("suite"):
            return {str(self.manifest["suite"])}
        return {str(s) for s in self.results["suite"].dropna().unique()} if "suite" in self.results else set()

    @property
    def machine(self) -> dict[str, str]:
        env = self.manifest.get("environment")
        env = env if isinstance(env, dict) else {}
        return {k: str(env[k]) for k in MACHINE_KEYS if env.get(k) not in (None, "")}

    @property
    def on_gpu(self) -> bool:
        devices = {self.machine.get("device", "")}
        if "device" in self.results:
            devices |= {str(d) for d in self.results["device"].dropna().unique()}
        return any(d.startswith("cuda") for d in devices)


def metric_columns(results: Sequence[pd.DataFrame], declared: Mapping[str, Column]) -> dict[str, Column]:
    """The measured columns of ``results`` (present in every table), in declaration order.

    Declared columns (the manifests' and :data:`~snnarena.columns.CORE_COLUMNS`) come with their
    direction; a numeric column outside the results contract that no manifest declares (a metric
    plugin's column in a run older than the ``columns`` manifest entry) is a direction-less score.
    """
    present = [set(frame.columns) for frame in results]
    out = {name: c for name, c in declared.items() if all(name in p for p in present)}
    if results:
        first = results[0]
        for name in first.columns:
            if (
                name not in out
                and name not in RESULT_COLUMNS
                and all(name in p for p in present)
                and all(pd.api.types.is_numeric_dtype(frame[name]) for frame in results)
            ):
                out[name] = Column(name, None)
    return out


def cell_label(label: Any) -> str:
    """A cell's label without its seed: ``tbptt[K=4] | mlp/lif | digits | T=16``."""
    return re.sub(r"\s*\|\s*seed=[^|]*$", "", str(label)) if isinstance(label, str) else ""


#: Values of key columns that runs made before the column existed meant (they ran no preset).
_KEY_DEFAULTS: dict[str, str] = {"protocol": "harmonized"}


def _keyed(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for key in (*CELL_KEY, "label", "status", "reason"):
        if key not in out:
            out[key] = _KEY_DEFAULTS.get(key, "")
    for key in CELL_KEY:
        out[key] = out[key].astype("string").fillna(_KEY_DEFAULTS.get(key, ""))
        if key in _KEY_DEFAULTS:
            out[key] = out[key].replace("", _KEY_DEFAULTS[key])
    out["seed"] = out["seed"].astype("string").fillna("") if "seed" in out else ""
    out["cell"] = out["label"].map(cell_label)
    return out


# -- the comparison --------------------------------------------------------------------------------------
@dataclass
class Comparison:
    """The outcome of :func:`compare_runs`.

    ``rows``: one row per (cell, metric) with the columns ``cell`` (label without seed), the
    :data:`CELL_KEY` columns, ``seed`` (status rows only), ``metric``, ``kind``, ``unit``,
    ``higher_is_better``, ``mean_a``, ``std_a``, ``n_a``, ``mean_b``, ``std_b``, ``n_b``, ``delta``
    (b − a), ``rel_delta`` (delta / |mean_a|), ``pooled_std``, ``threshold``, ``verdict`` and
    ``basis``; plus one row (``metric`` = ``"status"``) per cell and seed done on one side only.
    """

    rows: pd.DataFrame
    notes: list[str]
    name_a: str
    name_b: str
    common_cells: int

    def verdicts(self, *verdicts: str) -> pd.DataFrame:
        """The rows with one of ``verdicts``, largest relative change first."""
        hit = self.rows[self.rows["verdict"].isin(verdicts)]
        order = hit["rel_delta"].abs().fillna(hit["delta"].abs()).fillna(0.0)
        return hit.loc[order.sort_values(ascending=False, kind="stable").index].reset_index(drop=True)

    @property
    def regressions(self) -> pd.DataFrame:
        return self.verdicts(REGRESSION)

    @property
    def improvements(self) -> pd.DataFrame:
        return self.verdicts(IMPROVEMENT)

    @property
    def one_sided(self) -> pd.DataFrame:
        """Cells, or metric values, done/measured on one side and missing, failed or skipped on the other."""
        return self.verdicts(*[v for v in VERDICT_ORDER if v.endswith((" in A", " in B"))])

    @property
    def gate_failures(self) -> pd.DataFrame:
        """What fails ``--fail-on-regression``: regressions and everything one-sided."""
        return pd.concat([self.one_sided, self.regressions], ignore_index=True)

    def counts(self) -> dict[str, int]:
        counts = self.rows["verdict"].value_counts().to_dict()
        return {v: int(counts[v]) for v in VERDICT_ORDER if v in counts}


def compare_runs(
    run_a: str | Path | pd.DataFrame | RunTable,
    run_b: str | Path | pd.DataFrame | RunTable,
    noise: NoiseModel | None = None,
) -> Comparison:
    """Compare run B against run A (run directories, results tables or :class:`RunTable`)."""
    noise = noise or NoiseModel()
    a, b = RunTable.of(run_a, "A"), RunTable.of(run_b, "B")
    declared = {**columns_from_manifest(b.manifest), **columns_from_manifest(a.manifest)}
    columns = judged_columns(metric_columns([a.results, b.results], declared))
    _check_tolerance_keys(noise, columns)
    frame_a, frame_b = _keyed(a.results), _keyed(b.results)
    notes: list[str] = []
    frame_a, frame_b, common = _common_cells(a, b, frame_a, frame_b, notes)
    machines_differ = _machine_difference(a, b)
    if machines_differ and not noise.timings_across_machines:
        notes.append(
            f"time columns are not compared: the runs are from different machines ({machines_differ}); "
            "--compare-timings-across-machines compares them anyway"
        )
    elif machines_differ:
        notes.append(f"time columns are compared across different machines ({machines_differ})")
    on_gpu = a.on_gpu or b.on_gpu
    metric_rows = _metric_rows(frame_a, frame_b, columns, noise, on_gpu, machines_differ)
    parts = [p for p in (_status_rows(frame_a, frame_b), metric_rows) if not p.empty]
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(TABLE_COLUMNS))
    order = {name: i for i, name in enumerate(columns)}
    rows["_m"] = rows["metric"].map(order).fillna(-1)
    rows = rows.sort_values(["cell", "_m"], kind="stable").drop(columns="_m").reset_index(drop=True)
    notes.extend(_timing_note(rows))
    return Comparison(rows, notes, a.name, b.name, common)


def judged_columns(columns: Mapping[str, Column]) -> dict[str, Column]:
    """``columns`` without those that are another column's ``spread`` (a noise estimate, not a verdict)."""
    spreads = {c.spread for c in columns.values() if c.spread}
    return {name: c for name, c in columns.items() if name not in spreads}


def _timing_note(rows: pd.DataFrame) -> list[str]:
    """The warning that timing verdicts need an idle machine, when there are any."""
    timed = rows[(rows["kind"] == "time") & rows["verdict"].isin([REGRESSION, IMPROVEMENT])]
    if timed.empty:
        return []
    return [
        f"{len(timed)} timing verdict(s) hold only if both runs had the machine to themselves: load from "
        "other processes shifts whole runs, every seed alike, by 30-60 % on a busy machine; otherwise "
        "rerun on an idle machine or widen the bar (--tolerance time=60%)"
    ]


def _check_tolerance_keys(noise: NoiseModel, columns: Mapping[str, Column]) -> None:
    unknown = [k for k in noise.tolerances if k not in COLUMN_KINDS and k not in columns]
    if unknown:
        raise CompareError(
            f"--tolerance {', '.join(unknown)}: neither a column kind ({', '.join(COLUMN_KINDS)}) "
            f"nor a metric column of these runs ({', '.join(columns)})"
        )


def _common_cells(
    a: RunTable, b: RunTable, frame_a: pd.DataFrame, frame_b: pd.DataFrame, notes: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Both tables, restricted to their common cells when the runs are of different suites."""
    keys = [*CELL_KEY, "seed"]
    ids_a = set(frame_a[keys].itertuples(index=False, name=None))
    ids_b = set(frame_b[keys].itertuples(index=False, name=None))
    common = ids_a & ids_b
    if a.suites == b.suites or not (a.suites and b.suites):
        return frame_a, frame_b, len(common)
    if not common:
        raise CompareError(
            f"{a.name} (suite {', '.join(sorted(a.suites))}) and {b.name} (suite "
            f"{', '.join(sorted(b.suites))}) have no cell in common; nothing to compare"
        )
    notes.append(
        f"different suites ({', '.join(sorted(a.suites))} vs {', '.join(sorted(b.suites))}): only the "
        f"{len(common)} cells both ran are compared ({len(ids_a - common)} only in A, "
        f"{len(ids_b - common)} only in B are left out)"
    )

    def keep(frame: pd.DataFrame) -> pd.DataFrame:
        mask = [row in common for row in frame[keys].itertuples(index=False, name=None)]
        return frame[mask]

    return keep(frame_a), keep(frame_b), len(common)


def _machine_difference(a: RunTable, b: RunTable) -> str:
    """``"device: cpu vs cuda:0"`` for the machine keys both manifests record and that differ."""
    ma, mb = a.machine, b.machine
    return "; ".join(f"{k}: {ma[k]} vs {mb[k]}" for k in MACHINE_KEYS if k in ma and k in mb and ma[k] != mb[k])


def _status_rows(frame_a: pd.DataFrame, frame_b: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell, seed) done on one side and missing, failed or skipped on the other."""
    keys = [*CELL_KEY, "seed"]
    side_a = frame_a.drop_duplicates(keys).set_index(keys)
    side_b = frame_b.drop_duplicates(keys).set_index(keys)
    rows = []
    for key in side_a.index.union(side_b.index):
        ra = side_a.loc[key] if key in side_a.index else None
        rb = side_b.loc[key] if key in side_b.index else None
        status_a = "missing" if ra is None else str(ra["status"])
        status_b = "missing" if rb is None else str(rb["status"])
        if (status_a == "done") == (status_b == "done"):
            continue
        lost, other = ("B", rb) if status_a == "done" else ("A", ra)
        status = status_b if lost == "B" else status_a
        reason = "" if other is None else str(other["reason"] or "")
        seen = ra if ra is not None else rb
        assert seen is not None
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "cell": seen["cell"],
                "metric": STATUS_ROW,
                "kind": "",
                "unit": "",
                "higher_is_better": None,
                "n_a": int(status_a == "done"),
                "n_b": int(status_b == "done"),
                "verdict": f"{status} in {lost}",
                "basis": f"{status_a} in A, {status_b} in B" + (f": {reason.splitlines()[0]}" if reason else ""),
            }
        )
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def _aggregate(frame: pd.DataFrame, columns: Mapping[str, Column]) -> pd.DataFrame:
    """Per (cell, metric) of the ``done`` rows: ``mean``, ``std``, ``n`` of the values over the seeds
    and ``spread``, the mean of the column's within-cell spread (NaN where this table has none)."""
    metrics = list(columns)
    done = frame[frame["status"] == "done"]
    if done.empty or not metrics:
        return pd.DataFrame(columns=[*CELL_KEY, "metric", "cell", "mean", "std", "n", "spread"])
    long = done.melt(id_vars=[*CELL_KEY, "cell"], value_vars=metrics, var_name="metric", value_name="value")
    long["value"] = pd.to_numeric(long["value"], errors="coerce")
    # melt stacks the metrics' columns one after the other, each in the order of `done`
    long["spread"] = np.concatenate([_spread_values(done, columns[m]) for m in metrics])
    grouped = long.groupby([*CELL_KEY, "metric"], dropna=False, sort=False)
    out = grouped["value"].agg(mean="mean", std="std", n="count")
    out["spread"] = grouped["spread"].mean()
    out["cell"] = grouped["cell"].first()
    return out.reset_index()


def _spread_values(done: pd.DataFrame, column: Column) -> np.ndarray:
    """The within-cell spread of ``column`` for each row of ``done`` (NaN without a spread column)."""
    if column.spread is None or column.spread not in done:
        return np.full(len(done), math.nan)
    return pd.to_numeric(done[column.spread], errors="coerce").to_numpy(dtype=float)


def _pooled(sa: float, sb: float, na: int, nb: int) -> float:
    if na < 2 or nb < 2:
        return math.nan
    return math.sqrt(((na - 1) * sa**2 + (nb - 1) * sb**2) / (na + nb - 2))


def _iqr_floor(row: Mapping[Any, Any], noise: NoiseModel) -> float:
    """``k_iqr · max(IQR_a, IQR_b)``; NaN when a side has no within-cell spread or the floor is off."""
    spreads = (float(row["spread_a"]), float(row["spread_b"]))
    if noise.iqr_factor == 0 or not all(math.isfinite(s) for s in spreads):
        return math.nan
    return noise.iqr_factor * max(spreads)


@dataclass(frozen=True)
class _Verdict:
    significant: bool
    verdict: str
    basis: str
    threshold: float = math.nan


def _judge(row: Mapping[Any, Any], column: Column, noise: NoiseModel, on_gpu: bool, machines_differ: str) -> _Verdict:
    """The verdict of one (cell, metric) row and what it rests on."""
    na, nb, delta, mean_a = int(row["n_a"]), int(row["n_b"]), float(row["delta"]), float(row["mean_a"])
    if na == 0 or nb == 0:
        lost = "B" if nb == 0 else "A"
        return _Verdict(False, f"missing in {lost}", f"measured in {'A' if lost == 'B' else 'B'} only")
    if column.kind == "time" and machines_differ:
        if not noise.timings_across_machines:
            return _Verdict(False, NOT_COMPARABLE, f"time on different machines ({machines_differ})")
    tolerance, source = noise.tolerance(column, on_gpu)
    threshold = tolerance.threshold(mean_a)
    basis = f"|Δ| > {tolerance.describe()} ({source})"
    significant = abs(delta) > threshold
    if na >= 2 and nb >= 2:
        spread = noise.spread_factor * _pooled(float(row["std_a"]), float(row["std_b"]), na, nb)
        seeds = f"{na} seeds each" if na == nb else f"{na}/{nb} seeds"
        basis = f"{seeds}: |Δ| > {noise.spread_factor:g}·s_p = {spread:.3g} and {basis}"
        significant = significant and abs(delta) > spread
        threshold = max(threshold, spread)
    else:
        basis = f"{min(na, nb)} seed: {basis}"
    floor = _iqr_floor(row, noise)
    if math.isfinite(floor):
        basis = f"{basis} and > {noise.iqr_factor:g}×IQR = {floor:.3g}"
        significant = significant and abs(delta) > floor
        threshold = max(threshold, floor)
    if column.kind == "time" and machines_differ:
        basis = f"across machines; {basis}"
    if not significant:
        return _Verdict(False, UNCHANGED, basis, threshold)
    if column.higher_is_better is None:
        return _Verdict(True, CHANGED, basis, threshold)
    better = (delta > 0) == column.higher_is_better
    return _Verdict(True, IMPROVEMENT if better else REGRESSION, basis, threshold)


def _metric_rows(
    frame_a: pd.DataFrame,
    frame_b: pd.DataFrame,
    columns: Mapping[str, Column],
    noise: NoiseModel,
    on_gpu: bool,
    machines_differ: str,
) -> pd.DataFrame:
    keys = [*CELL_KEY, "metric"]
    agg_a, agg_b = _aggregate(frame_a, columns), _aggregate(frame_b, columns)
    out = agg_a.merge(agg_b, on=keys, how="outer", suffixes=("_a", "_b"))
    out["cell"] = out["cell_a"].fillna(out["cell_b"])
    for side in ("a", "b"):
        out[f"n_{side}"] = out[f"n_{side}"].fillna(0).astype(int)
    # a metric measured on neither side is dropped; a cell done on one side only is reported by its status rows
    out = out[((out["n_a"] > 0) | (out["n_b"] > 0)) & out["cell_a"].notna() & out["cell_b"].notna()]
    out = out.reset_index(drop=True)
    out["delta"] = out["mean_b"] - out["mean_a"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["rel_delta"] = out["delta"] / out["mean_a"].abs()
    out["pooled_std"] = [
        _pooled(sa, sb, na, nb)
        for sa, sb, na, nb in zip(out["std_a"], out["std_b"], out["n_a"], out["n_b"], strict=True)
    ]
    judged = [_judge(r, columns[r["metric"]], noise, on_gpu, machines_differ) for r in out.to_dict("records")]
    out["kind"] = out["metric"].map(lambda m: columns[m].kind)
    out["unit"] = out["metric"].map(lambda m: columns[m].unit)
    out["higher_is_better"] = out["metric"].map(lambda m: columns[m].higher_is_better).astype(object)
    out["threshold"] = [j.threshold for j in judged]
    out["verdict"] = [j.verdict for j in judged]
    out["basis"] = [j.basis for j in judged]
    return out.drop(columns=["cell_a", "cell_b"])


# -- output -----------------------------------------------------------------------------------------------
#: The columns the terminal table (``--all``) and Markdown show.
SHOWN_COLUMNS: tuple[str, ...] = ("cell", "metric", "A", "B", "change", "verdict", "basis")


def full_table(comparison: Comparison) -> pd.DataFrame:
    rows = comparison.rows.copy()
    for column in TABLE_COLUMNS:
        if column not in rows:
            rows[column] = np.nan
    return rows[list(TABLE_COLUMNS)]


def _value(value: Any, unit: str) -> str:
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    if unit == "B":
        for suffix, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if abs(value) >= size:
                return f"{value / size:.3g} {suffix}"
        return f"{value:.0f} B"
    return f"{value:.4g}" + (f" {unit}" if unit else "")


def _change(row: Mapping[Any, Any]) -> str:
    rel, delta = row.get("rel_delta"), row.get("delta")
    if isinstance(rel, float) and math.isfinite(rel):
        return f"{rel:+.1%}"
    if isinstance(delta, float) and math.isfinite(delta):
        return f"{delta:+.4g}"
    return ""


def shown_table(comparison: Comparison) -> pd.DataFrame:
    """The human-readable columns of every row (``--all``, ``--format md``)."""
    records = []
    for r in comparison.rows.to_dict("records"):
        cell = r["cell"] + (f" | seed={r['seed']}" if r["metric"] == STATUS_ROW else "")
        records.append(
            {
                "cell": cell,
                "metric": r["metric"],
                "A": _value(r.get("mean_a"), r["unit"]),
                "B": _value(r.get("mean_b"), r["unit"]),
                "change": _change(r),
                "verdict": r["verdict"],
                "basis": r["basis"],
            }
        )
    return pd.DataFrame(records, columns=list(SHOWN_COLUMNS))


def _markdown(frame: pd.DataFrame) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return _json_safe(value.item())
    return None if value is pd.NA else value


def render(comparison: Comparison, fmt: str) -> str:
    """The whole comparison as ``table`` (plain text), ``csv``, ``json`` or ``md``."""
    if fmt == "csv":
        return full_table(comparison).to_csv(index=False)
    if fmt == "json":
        records = [{k: _json_safe(v) for k, v in r.items()} for r in full_table(comparison).to_dict("records")]
        return json.dumps(
            {
                "a": comparison.name_a,
                "b": comparison.name_b,
                "notes": comparison.notes,
                "common_cells": comparison.common_cells,
                "counts": comparison.counts(),
                "rows": records,
            },
            indent=1,
        )
    if fmt == "md":
        return "\n\n".join([*[f"> {n}" for n in comparison.notes], _markdown(shown_table(comparison))])
    if fmt == "table":
        return _plain(shown_table(comparison))
    raise CompareError(f"--format {fmt!r}: expected table, csv, json or md")


def _lines(pairs: list[tuple[str, str]], width: int) -> list[str]:
    """``label  rest`` lines of at most ``width`` characters, labels padded to one column (and
    shortened first when the lines are too wide), then the ends cut."""
    if not pairs:
        return []
    rest_width = max(len(rest) for _, rest in pairs)
    label_width = max(min(max(len(label) for label, _ in pairs), width - rest_width - 4), 24)
    out = []
    for label, rest in pairs:
        shown = label if len(label) <= label_width else label[: label_width - 1] + "…"
        line = f"  {shown:<{label_width}}  {rest}".rstrip()
        out.append(line if len(line) <= width else line[: width - 1] + "…")
    return out


def _plain(frame: pd.DataFrame) -> str:
    """A left-aligned plain-text table."""
    cells = [list(map(str, frame.columns)), *[[str(v) for v in row] for row in frame.itertuples(index=False)]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(frame.columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def summary(comparison: Comparison, width: int = 100, max_lines: int = 20) -> str:
    """A short report for the terminal: notes, counts, then cells and metrics that got worse or better.

    Each section lists at most ``max_lines`` rows, each line at most ``width`` characters.
    """
    counts = comparison.counts()
    one_sided = comparison.one_sided
    head = [
        f"A: {comparison.name_a}",
        f"B: {comparison.name_b}",
        *[f"note: {n}" for n in comparison.notes],
        f"{comparison.common_cells} cells (with seeds) compared: {counts.get(REGRESSION, 0)} regression(s), "
        f"{counts.get(IMPROVEMENT, 0)} improvement(s), {len(one_sided)} done on one side only; "
        f"{counts.get(UNCHANGED, 0)} unchanged, {counts.get(CHANGED, 0)} changed (no direction), "
        f"{counts.get(NOT_COMPARABLE, 0)} not comparable",
    ]
    lines = [
        wrapped
        for line in head
        for wrapped in textwrap.wrap(line, width, subsequent_indent="    ", break_on_hyphens=False)
    ]
    sections = (
        ("done or measured on one side only (count as regressions)", one_sided),
        ("regressions", comparison.regressions),
        ("improvements", comparison.improvements),
    )
    for title, rows in sections:
        if rows.empty:
            continue
        lines.append(f"{title}:")
        pairs = []
        for r in rows.head(max_lines).to_dict("records"):
            if r["metric"] == STATUS_ROW:
                pairs.append((f"{r['cell']} | seed={r['seed']}", r["basis"]))
            else:
                values = f"{_value(r['mean_a'], r['unit'])} → {_value(r['mean_b'], r['unit'])}"
                pairs.append((r["cell"], f"{r['metric']}  {values}  {_change(r)}  {r['basis']}"))
        lines.extend(_lines(pairs, width))
        if len(rows) > max_lines:
            lines.append(f"  … {len(rows) - max_lines} more (--all shows every row)")
    return "\n".join(lines)
