"""Loading run directories for a report and turning their cells into comparable summaries.

Rows are labelled for display:

* a *variant* is a method with the parameters that vary among that method's cells, e.g.
  ``tbptt[K=4]`` (plus `` @ <run>`` when several runs are combined);
* a *setting* is a dataset and model (with their varying parameters, neuron and surrogate),
  e.g. ``digits · mlp``; tables and figures are made per setting.

The summary holds, per (setting, variant, ``T``), the mean, sample standard deviation, count and
95 % confidence half-width (``<metric>_ci_half``: Student-t, see :mod:`snnarena.report.stats`) over
seeds of every metric, the ratios to BPTT of the same setting, ``T`` and run, and, for the task
scores, the step time and the activation memory, a paired comparison with that BPTT row on the
seeds both have (``<metric>_vs_bptt_diff``, ``_pairs``, ``_p``; see :func:`paired_with_reference`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from snnarena.columns import CORE_COLUMNS, Column, columns_by_name, columns_from_manifest
from snnarena.compare import metric_columns
from snnarena.report.stats import ci_half_width, paired_t_test, tied_ranks
from snnarena.results import RESULT_COLUMNS, RunDirectory, load_run
from snnarena.task import SCORES

#: The host-measured metrics the main tables and figures are made of.
CORE_METRICS: tuple[str, ...] = tuple(c.name for c in CORE_COLUMNS)
BASELINE = "bptt"


def text(value: Any) -> str:
    """A cell value as text; missing values (None/NaN) become ``""``."""
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if value is pd.NA:
        return ""
    return str(value)


def parse_params(value: Any) -> dict[str, Any]:
    """A ``*_params`` JSON column value as a dict (``{"": raw}`` when it is not JSON)."""
    raw = text(value)
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        return {"": raw}
    return parsed if isinstance(parsed, dict) else {"": raw}


def format_params(params: dict[str, Any], keys: Iterable[str] | None = None, sep: str = ",") -> str:
    keys = list(params) if keys is None else [k for k in keys if k in params]
    parts = []
    for k in keys:
        v = params[k]
        shown = "x".join(map(str, v)) if isinstance(v, list) else str(v)
        parts.append(shown if k == "" else f"{k}={shown}")
    return sep.join(parts)


@dataclass
class Run:
    """One run directory and its manifest."""

    path: Path
    manifest: dict[str, Any]
    label: str = ""

    @property
    def run_id(self) -> str:
        return text(self.manifest.get("run_id")) or self.path.name

    @property
    def suite(self) -> str:
        return text(self.manifest.get("suite")) or "suite"

    @property
    def device(self) -> str:
        env = self.manifest.get("environment")
        return text(env.get("device")) if isinstance(env, dict) else ""

    def profile_files(self, cell_ids: Iterable[str] = ()) -> list[Path]:
        """Profiler artefacts of this run: everything under ``<run>/profile/``, and the
        ``<results>/<suite>/profile/<cell_id>/`` folders (``snnarena profile``'s default output)
        of the run's cells."""
        folders = [self.path / "profile"] + [self.path.parent / "profile" / c for c in sorted(set(cell_ids)) if c]
        files: list[Path] = []
        for folder in folders:
            if folder.is_dir():
                files.extend(sorted(p for p in folder.rglob("*") if p.is_file() and p not in files))
        return files

    def traceback(self, cell_id: str) -> str:
        """The full traceback of a failed cell (its traceback file, or older runs' cell file)."""
        if not cell_id:
            return ""
        run = RunDirectory(self.path)
        if run.traceback_path(cell_id).is_file():
            return run.traceback_path(cell_id).read_text(encoding="utf-8")
        path = run.cell_path(cell_id)
        return text(json.loads(path.read_text(encoding="utf-8")).get("traceback")) if path.is_file() else ""


@dataclass
class ReportData:
    """Everything a report is made from."""

    runs: list[Run]
    results: pd.DataFrame
    curves: pd.DataFrame
    summary: pd.DataFrame
    settings: list[str]
    variants: list[str]
    multi_run: bool
    #: Every measured column (the host's and the metric plugins'), as the manifests declare them.
    columns: dict[str, Column] = field(default_factory=lambda: columns_by_name(CORE_COLUMNS))

    @property
    def extra_metrics(self) -> list[str]:
        """The metric plugins' columns, in declaration order."""
        return [name for name in self.columns if name not in CORE_METRICS]

    def setting_summary(self, setting: str) -> pd.DataFrame:
        return self.summary[self.summary["setting"] == setting]

    def Ts(self, setting: str) -> list[int]:
        return sorted(int(t) for t in self.setting_summary(setting)["T"].unique())


def _run_labels(runs: list[Run]) -> None:
    devices = [r.device for r in runs]
    ids = [r.run_id for r in runs]
    if all(devices) and len(set(devices)) == len(devices):
        labels = devices
    elif len(set(ids)) == len(ids):
        labels = ids
    else:
        labels = [f"{rid} ({i + 1})" for i, rid in enumerate(ids)]
    for run, label in zip(runs, labels, strict=True):
        run.label = label


def _varying_keys(params: Sequence[dict[str, Any]]) -> list[str]:
    keys: list[str] = []
    for p in params:
        keys.extend(k for k in p if k not in keys)
    sentinel = object()
    return [k for k in keys if len({json.dumps(p.get(k, sentinel), sort_keys=True, default=str) for p in params}) > 1]


def _label_by(frame: pd.DataFrame, name_col: str, params_col: str) -> pd.Series:
    """``name[varying params]`` per row, the varying keys found among rows of the same name."""
    parsed = frame[params_col].map(parse_params)
    labels = pd.Series("", index=frame.index, dtype=object)
    for name, idx in frame.groupby(name_col, dropna=False, sort=False).groups.items():
        keys = _varying_keys(list(parsed.loc[idx]))
        for i in idx:
            inner = format_params(parsed.loc[i], keys)
            labels.loc[i] = f"{text(name)}[{inner}]" if inner else text(name)
    return labels


def _ensure_columns(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for column in (*RESULT_COLUMNS, *CORE_METRICS):  # runs made before a core column was added lack it
        if column not in frame.columns:
            frame[column] = np.nan
    for column in (
        "method",
        "model",
        "dataset",
        "neuron",
        "surrogate",
        "loss",
        "status",
        "reason",
        "label",
        "cell_id",
        "method_params",
        "model_params",
        "dataset_params",
        "neuron_params",
        "memory_class",
        "metric_errors",
        "metric_series",
        "grad_cosine_layers",
    ):
        frame[column] = frame[column].map(text).astype(object)
    for column in (*CORE_METRICS, "T", "seed", "n_parameters", "extra_parameters"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def label_rows(results: pd.DataFrame, multi_run: bool) -> pd.DataFrame:
    """Add ``method_label``, ``variant``, ``dataset_label``, ``model_label``, ``setting`` and
    ``params_text`` columns (labels name the parameters, neuron and surrogate that vary)."""
    out = results.copy()
    preset = out["preset"].map(text) if "preset" in out else pd.Series("", index=out.index)
    out["method_label"] = _label_by(
        out.assign(_named=out["method"].where(preset == "", out["method"] + "@" + preset)), "_named", "method_params"
    )
    loss_varies = out.loc[out["loss"] != "", "loss"].nunique() > 1
    if loss_varies:
        out["method_label"] = out["method_label"] + " (" + out["loss"] + " loss)"
    training = optimizer_text(out)
    if training.nunique() > 1:  # presets train some cells with their own optimizer settings
        out["method_label"] = out["method_label"] + " [" + training + "]"
    out["variant"] = out["method_label"] + ((" @ " + out["run"]) if multi_run else "")
    model = _label_by(out, "model", "model_params")
    neuron = _label_by(out, "neuron", "neuron_params")
    has_neuron = out["neuron"].map(text) != ""  # models without neurons (lstm) name none
    if neuron.nunique() > 1:
        model = model.where(~has_neuron, model + "/" + neuron)
    if out["surrogate"].nunique() > 1:
        model = model.where(~has_neuron, model + "/" + out["surrogate"])
    out["dataset_label"] = _label_by(out, "dataset", "dataset_params")
    out["model_label"] = model
    out["setting"] = out["dataset_label"] + " · " + model
    out["params_text"] = out["method_params"].map(lambda v: format_params(parse_params(v), sep=", "))
    return out


#: The training settings a method is compared under: its reference (BPTT) must share them.
OPTIMIZER_COLUMNS: tuple[str, ...] = ("optimizer", "lr", "weight_decay", "weight_decay_on", "momentum", "lr_schedule")


def optimizer_text(frame: pd.DataFrame) -> pd.Series:
    """``sgd lr=0.1`` per row: the optimizer settings that vary among the rows of ``frame`` (all
    ``""`` when none does). A learning rate chosen by ``[tune]`` reads ``lr=tuned``: each method
    is compared with BPTT at its own tuned rate."""
    values = {c: frame[c].map(text) for c in OPTIMIZER_COLUMNS if c in frame}
    if "lr" in values and "tuned" in frame:
        values["lr"] = values["lr"].where(frame["tuned"].map(text) == "", "tuned")
    parts = [c for c, v in values.items() if v.nunique() > 1]
    if not parts:
        return pd.Series("", index=frame.index)
    table = pd.DataFrame({c: values[c] for c in parts})
    return table.apply(lambda r: " ".join(r[c] if c == "optimizer" else f"{c}={r[c]}" for c in parts), axis=1)


def _method_order(method: str) -> tuple[int, str]:
    return (0 if method == BASELINE else 1, method)


def summarise(results: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Mean/std/count/95 % CI half-width over seeds per (setting, variant, T) of ``done`` cells, the
    ratios to the BPTT reference and the paired comparisons with it (see the module docstring)."""
    done = results[results["status"] == "done"]
    keys = ["setting", "variant", "T"]
    if done.empty:
        return pd.DataFrame(columns=[*keys, "method", "method_label", "params_text", "run", "memory_class", "n"])
    carried = [
        c
        for c in ("method", "method_label", "params_text", "run", "memory_class", "loss", *OPTIMIZER_COLUMNS)
        if c in done
    ]
    first = done.groupby(keys, sort=False)[carried].first()
    grouped = done.groupby(keys, sort=False)
    parts = [first, grouped.size().rename("n")]
    for m in metrics:
        values = pd.to_numeric(done[m], errors="coerce").groupby([done[k] for k in keys], sort=False)
        parts.append(values.mean().rename(f"{m}_mean"))
        parts.append(values.std().rename(f"{m}_std"))
        parts.append(values.count().rename(f"{m}_n"))
    summary = pd.concat(parts, axis=1).copy().reset_index()  # copy: one block per dtype, not one per metric
    extra = {f"{m}_ci_half": ci_half_width(summary[f"{m}_std"], summary[f"{m}_n"]) for m in metrics}
    reference = _reference_positions(summary)
    for metric, ratio in (("peak_activation_bytes", "mem_ratio"), ("step_time_ms", "time_ratio")):
        means = summary[f"{metric}_mean"].to_numpy(float)
        denominator = np.where(reference >= 0, means[np.maximum(reference, 0)], np.nan)
        usable = np.isfinite(denominator) & (denominator > 0)
        extra[ratio] = np.divide(means, denominator, out=np.full(len(means), np.nan), where=usable)
    summary = pd.concat([summary, pd.DataFrame(extra, index=summary.index)], axis=1)
    summary = paired_with_reference(summary, done, [m for m in PAIRED_METRICS if m in metrics]).copy()
    order = summary["method"].map(_method_order)
    summary = summary.assign(_order=order).sort_values(["setting", "T", "_order", "variant"], kind="stable")
    return summary.drop(columns="_order").reset_index(drop=True)


#: Metrics the summary compares with the reference (BPTT) seed by seed: the task scores, the step
#: time and the activation memory.
PAIRED_METRICS: tuple[str, ...] = (
    *(f"test_{score.name}" for score in SCORES),
    "step_time_ms",
    "peak_activation_bytes",
)


SUFFIXES: tuple[str, ...] = ("diff", "pairs", "p")


def _reference_positions(summary: pd.DataFrame) -> np.ndarray:
    """Per summary row, the position of its reference row: the BPTT row of the same setting, ``T``,
    run, loss and optimizer settings (a method is compared with BPTT of its own objective and
    training, as the suite's reference rows are made) with the most seeds (the first variant on
    ties), as the ratios use; -1 where none."""
    reference = np.full(len(summary), -1)
    positions = pd.Series(np.arange(len(summary)), index=summary.index)
    loss = summary["loss"].map(text) if "loss" in summary else pd.Series("", index=summary.index)
    training = optimizer_text(summary)
    keys = [summary["setting"], summary["T"], summary["run"], loss, training]
    for _key, block in summary.groupby(keys, sort=False):
        base = block[block["method"] == BASELINE]
        if not base.empty:
            ref = base.sort_values(["n", "variant"], ascending=[False, True]).index[0]
            reference[positions.loc[block.index].to_numpy()] = positions.loc[ref]
    return reference


def paired_with_reference(summary: pd.DataFrame, done: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Add, per metric, ``<metric>_vs_bptt_diff`` (mean over shared seeds of the row's value minus
    the reference's), ``<metric>_vs_bptt_pairs`` (how many seeds both have a value for) and
    ``<metric>_vs_bptt_p`` (two-sided paired t-test, :func:`snnarena.report.stats.paired_t_test`;
    NaN with fewer than two pairs). Reference rows and rows without a reference get NaN."""
    columns = {f"{m}_vs_{BASELINE}_{suffix}": np.full(len(summary), np.nan) for m in metrics for suffix in SUFFIXES}
    per_seed = {m: seed_table(done, m) for m in metrics}
    for position, ref in enumerate(_reference_positions(summary)):
        if ref < 0 or ref == position:
            continue
        for m in metrics:
            values, ref_values = (seed_values(per_seed[m], summary.iloc[p]) for p in (position, ref))
            shared = values.index.intersection(ref_values.index)
            result = paired_t_test(values.loc[shared].to_numpy(float), ref_values.loc[shared].to_numpy(float))
            for suffix, value in zip(SUFFIXES, (result.difference, result.n, result.p_value), strict=True):
                columns[f"{m}_vs_{BASELINE}_{suffix}"][position] = value
    return pd.concat([summary, pd.DataFrame(columns, index=summary.index)], axis=1)


def seed_table(results: pd.DataFrame, metric: str) -> pd.Series:
    """``metric`` of the ``done`` rows of ``results`` indexed by (setting, variant, T, seed) (the
    mean, should a seed appear twice); all NaN when the results have no such column."""
    done = results[results["status"] == "done"]
    values = pd.to_numeric(done[metric], errors="coerce") if metric in done else pd.Series(np.nan, index=done.index)
    return values.groupby([done["setting"], done["variant"], done["T"], done["seed"]]).mean()


def seed_values(table: pd.Series, row: pd.Series) -> pd.Series:
    """A summary row's finite values indexed by seed, from a :func:`seed_table`."""
    try:
        values = table.loc[(row["setting"], row["variant"], row["T"])]
    except KeyError:
        return pd.Series(dtype=float)
    return values[np.isfinite(values.to_numpy(float))]


def layer_cosines(results: pd.DataFrame) -> pd.DataFrame:
    """Long table (setting, variant, T, layer, cosine) of per-layer gradient cosines, mean over seeds."""
    rows = []
    done = results[(results["status"] == "done") & (results["grad_cosine_layers"] != "")]
    for _, r in done.iterrows():
        try:
            layers = json.loads(r["grad_cosine_layers"])
        except json.JSONDecodeError:
            continue
        if not isinstance(layers, dict):
            continue
        for layer, value in layers.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                rows.append((r["setting"], r["variant"], r["T"], str(layer), float(value)))
    frame = pd.DataFrame(rows, columns=["setting", "variant", "T", "layer", "cosine"])
    if frame.empty:
        return frame
    return frame.groupby(["setting", "variant", "T", "layer"], sort=False)["cosine"].mean().reset_index()


#: Columns of :func:`metric_series_points`.
SERIES_POINT_COLUMNS: tuple[str, ...] = (
    "setting",
    "variant",
    "T",
    "seed",
    "metric",
    "series",
    "xlabel",
    "ylabel",
    "higher_is_better",
    "doc",
    "x",
    "value",
)


def metric_series_points(results: pd.DataFrame) -> pd.DataFrame:
    """Long table (:data:`SERIES_POINT_COLUMNS`) of the metric series ``done`` cells recorded in
    ``metric_series``: one row per point, with the series' declaration; unreadable entries are skipped."""
    rows: list[tuple[Any, ...]] = []
    done = results[(results["status"] == "done") & (results["metric_series"] != "")]
    for _, r in done.iterrows():
        try:
            recorded = json.loads(r["metric_series"])
        except json.JSONDecodeError:
            continue
        if not isinstance(recorded, dict):
            continue
        for name, entry in recorded.items():
            values = entry.get("values") if isinstance(entry, dict) else None
            if not isinstance(values, list):
                continue
            described = (
                text(entry.get("metric")),
                str(name),
                text(entry.get("xlabel")) or "index",
                text(entry.get("ylabel")) or str(name),
                entry.get("higher_is_better"),
                text(entry.get("doc")),
            )
            for x, value in enumerate(values):
                if isinstance(value, (int, float)) and math.isfinite(value):
                    rows.append((r["setting"], r["variant"], r["T"], r["seed"], *described, x, float(value)))
    return pd.DataFrame(rows, columns=list(SERIES_POINT_COLUMNS))


def pareto_mask(cost: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Points no other point beats: none has ``cost <=`` and ``gain >=`` with one strict."""
    mask = np.zeros(len(cost), dtype=bool)
    for i in range(len(cost)):
        if not (np.isfinite(cost[i]) and np.isfinite(gain[i])):
            continue
        dominated = (cost <= cost[i]) & (gain >= gain[i]) & ((cost < cost[i]) | (gain > gain[i]))
        mask[i] = not dominated.any()
    return mask


def loglog_slope(T: ArrayLike, values: ArrayLike) -> float:
    """Least-squares slope of ``log(value)`` against ``log(T)`` (NaN with < 2 usable ``T``)."""
    t = np.asarray(T, dtype=float)
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(t) & np.isfinite(v) & (t > 0) & (v > 0)
    if len(np.unique(t[ok])) < 2:
        return math.nan
    return float(np.polyfit(np.log(t[ok]), np.log(v[ok]), 1)[0])


#: Criteria of the ranking summary: (core metric, label); the direction is the column's. ``score``
#: is each block's task score (accuracy; test MSE, lower is better, for regression; ROC-AUC for
#: link prediction).
RANK_CRITERIA: tuple[tuple[str, str], ...] = (
    ("score", "task score"),
    ("step_time_ms", "step time"),
    ("peak_activation_bytes", "activation memory"),
    ("grad_cosine_bptt", "gradient cosine"),
)


def _block_ranks(summary: pd.DataFrame, metric: str, higher: bool, blocks_of: list[pd.Series]) -> pd.Series:
    """Ranks of ``metric`` within each block with ties where intervals overlap the best's
    (:func:`snnarena.report.stats.tied_ranks`; no ``<metric>_ci_half`` column: no intervals)."""
    means = summary[f"{metric}_mean"]
    half = summary[f"{metric}_ci_half"] if f"{metric}_ci_half" in summary else pd.Series(np.nan, index=summary.index)
    rank = pd.Series(np.nan, index=summary.index)
    for _key, idx in means.groupby(blocks_of, sort=False).groups.items():
        rank.loc[idx] = tied_ranks(means.loc[idx].to_numpy(float), half.loc[idx].to_numpy(float), higher)
    return rank


def _score_ranks(summary: pd.DataFrame, blocks_of: list[pd.Series]) -> pd.Series:
    """Rank within each block by the block's task score: the first score of :data:`SCORES` with
    values (a block is one setting, so one task)."""
    rank = pd.Series(np.nan, index=summary.index)
    for score in SCORES:
        if f"test_{score.name}_mean" in summary:
            rank = rank.fillna(_block_ranks(summary, f"test_{score.name}", score.higher_is_better, blocks_of))
    return rank


def rankings(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean rank (1 = best) of each method variant per criterion over the (setting, T) blocks.

    Within a block, a variant whose 95 % confidence interval of the criterion (``<metric>_ci_half``)
    overlaps the interval of the variant with the best mean shares rank 1; every other variant's
    rank is 1 + the number of variants with a strictly better mean (equal means share a rank); a
    variant with one seed has no interval and counts as its mean alone
    (:func:`snnarena.report.stats.tied_ranks`). BPTT, the reference, is not ranked on gradient
    cosine. Columns: ``variant``, one per criterion, ``blocks``.
    """
    if summary.empty:
        return pd.DataFrame(columns=["variant", *[c[1] for c in RANK_CRITERIA], "blocks"])
    ranks: dict[str, pd.Series] = {}
    core = columns_by_name(CORE_COLUMNS)
    blocks_of = [summary["setting"], summary["T"]]
    for metric, label in RANK_CRITERIA:
        if metric == "score":
            ranks[label] = _score_ranks(summary, blocks_of).groupby(summary["variant"]).mean()
            continue
        ranked = summary
        if metric == "grad_cosine_bptt":  # the reference itself is not ranked
            not_reference = summary["method"] != BASELINE
            ranked = summary.assign(grad_cosine_bptt_mean=summary[f"{metric}_mean"].where(not_reference))
        rank = _block_ranks(ranked, metric, bool(core[metric].higher_is_better), blocks_of)
        ranks[label] = rank.groupby(summary["variant"]).mean()
    blocks = summary.groupby("variant").size().rename("blocks")
    out = pd.DataFrame(ranks).join(blocks).reset_index().rename(columns={"index": "variant"})
    return out.sort_values(["task score", "variant"], na_position="last").reset_index(drop=True)


def load(run_dirs: Sequence[str | Path]) -> ReportData:
    """Read the run directories (each once, in the given order) and build the summaries."""
    paths: list[Path] = []
    for d in run_dirs:
        p = Path(d).resolve()
        if p not in paths:
            paths.append(p)
    if not paths:
        raise ValueError("build_report needs at least one run directory")
    runs = [Run(p, RunDirectory(p).manifest()) for p in paths]
    _run_labels(runs)
    frames, curve_frames = [], []
    for run in runs:
        results, curves = load_run(run.path)
        results = results.copy()
        results["run"] = run.label
        curves = curves.copy()
        curves["run"] = run.label
        frames.append(results)
        curve_frames.append(curves)
    results = _ensure_columns(pd.concat(frames, ignore_index=True))
    declared: dict[str, Column] = {}
    for run in reversed(runs):  # the first run's declaration wins
        declared.update(columns_from_manifest(run.manifest))
    columns = metric_columns([results], declared)
    multi_run = len(runs) > 1
    results = label_rows(results, multi_run)
    summary = summarise(results, list(columns))
    curves = pd.concat(curve_frames, ignore_index=True)
    if not curves.empty:
        labels = results[["run", "cell_id", "variant", "setting"]].drop_duplicates(["run", "cell_id"])
        curves = curves.drop(columns=[c for c in ("variant", "setting") if c in curves.columns])
        curves = curves.merge(labels, on=["run", "cell_id"], how="inner")
        for column in ("epoch", "train_loss", "val_accuracy", "T", "seed"):
            # runs made before the validation split have no val_accuracy in their curves
            curves[column] = pd.to_numeric(curves[column], errors="coerce") if column in curves else np.nan
    settings = list(dict.fromkeys(sorted(results["setting"].unique())))
    method_of = results.groupby("variant")["method"].first()
    variants = sorted(method_of.index, key=lambda v: (_method_order(method_of[v]), v))
    return ReportData(runs, results, curves, summary, settings, variants, multi_run, columns)
