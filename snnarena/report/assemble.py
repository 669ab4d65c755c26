"""Assembling the report: summary tables, figures, failures and provenance for one or more runs.

Layout of the output folder ``<out_root>/<suite>/<run_id>/`` (several runs:
``<out_root>/<suite or "combined">/<run_idA>+<run_idB>/``)::

    index.html     self-contained page (inline CSS, base64 PNG figures, no script)
    report.md      the same tables, figures linked from figures/
    summary.csv    mean/std/count/95 % CI half-width over seeds per (setting, method variant, T), and
                   paired comparisons with BPTT (see snnarena.report.tables)
    figures/       every figure as PNG and SVG
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import snnarena
from snnarena.columns import Column
from snnarena.report import figures as F
from snnarena.report.claims_section import installed_claims_section
from snnarena.report.render import (
    Cell,
    Details,
    Figures,
    HtmlWriter,
    KeyValues,
    Links,
    MarkdownWriter,
    Section,
    Table,
    Text,
)
from snnarena.report.stats import ALPHA, CONFIDENCE, MIN_SEEDS, significant_best
from snnarena.report.tables import (
    BASELINE,
    ReportData,
    Run,
    layer_cosines,
    load,
    metric_series_points,
    rankings,
    seed_table,
    seed_values,
    text,
)
from snnarena.results import atomic_write_text, check_writable
from snnarena.summary import selection_sentence
from snnarena.task import SCORES, Score

UP, DOWN = "↑", "↓"
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


def slug(value: str, limit: int = 60) -> str:
    """A file-name-safe version of ``value``."""
    out = _SLUG.sub("-", value).strip("-.")[:limit]
    return out or "x"


def _arrow(column: Column) -> str:
    return UP if column.higher_is_better is True else DOWN if column.higher_is_better is False else ""


def _format_kind(column: Column) -> str:
    """How :func:`_fmt` shows a column's values: bytes, a share in [0, 1], or SI-prefixed."""
    return "bytes" if column.unit == "B" else "share" if column.kind == "ratio" else "si"


# -- number formatting --------------------------------------------------------------------------
def _si(value: float) -> str:
    if not math.isfinite(value):
        return ""
    for suffix, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g} {suffix}"
    return f"{value:.3g}"


def _fmt(kind: str, value: float) -> str:
    if value is None or not math.isfinite(value):
        return ""
    if kind == "pct":
        return f"{100 * value:.1f}"
    if kind == "ms":
        return f"{value:.{_decimals(value)}f}"
    if kind == "bytes":
        return F.human_bytes(value)
    if kind == "cos":
        return f"{value:.4f}"
    if kind == "slope":
        return f"{value:.2f}"
    if kind == "ratio":
        return f"{value:.2f}×"
    if kind == "share":
        return f"{value:.4f}"
    return _si(value)


def _decimals(value: float) -> int:
    """Decimals that show three significant digits of ``value`` (none for values >= 100)."""
    return 0 if value == 0 or abs(value) >= 100 else max(0, 2 - math.floor(math.log10(abs(value))))


def mean_ci(kind: str, mean: float, half_width: float) -> str:
    """``mean ± half_width`` (just the mean when there is no interval, or it is 0); ms with matching decimals."""
    shown = _fmt(kind, mean)
    if not shown or half_width is None or not math.isfinite(half_width) or half_width == 0:
        return shown
    if kind == "ms":
        return f"{shown} ± {half_width:.{_decimals(mean)}f}"
    return f"{shown} ± {_fmt(kind, half_width)}"


#: Column kinds whose values do not depend on the seed: their best is marked on a strict difference.
EXACT_KINDS: tuple[str, ...] = ("memory", "count")
#: How the tables' values and marks are computed (each results table says it under the table).
STATISTICS_NOTE = (
    f"Values: mean ± half-width of the {100 * CONFIDENCE:g} % Student-t confidence interval over seeds "
    f"(t with n−1 degrees of freedom; a value without ± has one seed, so no interval, or no spread). "
    f"Highlighted: the best mean at that T, only where it is better than the runner-up at α = {ALPHA:g} "
    "(two-sided paired t-test on the seeds both share, which start from the same weights and data order; "
    "Welch's t-test when they share fewer than two); with fewer than 2 seeds nothing is highlighted, except "
    "memory and count columns, which do not depend on the seed and are highlighted on a strict difference."
)


def _block_flags(
    summary: pd.DataFrame,
    per_seed: pd.Series,
    higher: bool,
    eligible: np.ndarray,
    exact: bool,
    scale: pd.Series | None = None,
) -> np.ndarray:
    """Best marks of one column (:func:`~snnarena.report.stats.significant_best`) per ``T`` of a
    setting's ``summary``, from the column's values by seed; ``scale`` divides each row's values
    (the ratio columns: the reference's mean)."""
    flags = np.zeros(len(summary), dtype=bool)
    for _, block in summary.groupby("T", sort=False):
        positions = summary.index.get_indexer(block.index)
        divisors = np.ones(len(block)) if scale is None else scale.to_numpy(float)[positions]
        samples = [seed_values(per_seed, r) / d for (_, r), d in zip(block.iterrows(), divisors, strict=True)]
        flags[positions] = significant_best(samples, higher, eligible[positions], exact)
    return flags


#: How the ranking table ranks (its caption).
RANKING_NOTE = (
    "Mean rank (1 = best) over the (dataset, model, T) blocks; highlighted: the lowest mean rank. Within a block, "
    f"a method whose {100 * CONFIDENCE:g} % confidence interval overlaps the interval of the method with the best "
    "mean shares rank 1; any other method ranks 1 + the number of methods with a strictly better mean (equal "
    "means share a rank). A method with one seed has no interval and counts as its mean alone."
)


# -- tables ---------------------------------------------------------------------------------------
def _score_main_columns() -> tuple[tuple[str, str, str, bool], ...]:
    """The test and validation columns of every task score (shown when some cell has a value)."""
    out = []
    for score in SCORES:
        test, fmt = (f"{score.label} (%)", "pct") if score.percent else (f"test {score.label}", "mse")
        out += [(test, f"test_{score.name}", fmt, False)]
        out += [(f"val {score.label}" + (" (%)" if score.percent else ""), f"val_{score.name}", fmt, False)]
    return tuple(out)


#: (header, core column, format, best-eligible excludes BPTT); directions are the columns'.
MAIN_COLUMNS: tuple[tuple[str, str, str, bool], ...] = (
    *_score_main_columns(),
    ("step time (ms)", "step_time_ms", "ms", False),
    ("activation memory", "peak_activation_bytes", "bytes", False),
    ("device memory", "peak_device_bytes", "bytes", False),
    ("hidden grad cosine (min)", "grad_cosine_hidden_min", "cos", True),
    ("grad cosine vs BPTT", "grad_cosine_bptt", "cos", True),
)
#: Main columns shown only when some cell has a value: each task shows its own scores (a run of
#: regression tasks alone has no accuracy column); CPU runs have no device memory; runs made before
#: the per-layer fidelity columns have no hidden-layer cosine.
OPTIONAL_MAIN_COLUMNS: tuple[str, ...] = (
    "peak_device_bytes",
    "grad_cosine_hidden_min",
    *(f"{split}_{score.name}" for score in SCORES for split in ("test", "val")),
)


def _has_values(summary: pd.DataFrame, column: str) -> bool:
    return f"{column}_mean" in summary and bool(np.isfinite(summary[f"{column}_mean"].to_numpy(float)).any())


def setting_score(summary: pd.DataFrame) -> Score:
    """The primary score of a setting's task: the first score with a test value (accuracy when none has)."""
    for score in SCORES:
        if f"test_{score.name}_mean" in summary and _has_values(summary, f"test_{score.name}"):
            return score
    return SCORES[0]


def _shown_main_columns(summary: pd.DataFrame) -> list[tuple[str, str, str, bool]]:
    """The main columns with a value in some row."""
    return [c for c in MAIN_COLUMNS if c[1] not in OPTIONAL_MAIN_COLUMNS or _has_values(summary, c[1])]


def results_table(
    summary: pd.DataFrame, results: pd.DataFrame, columns_of: Mapping[str, Column], caption: str = ""
) -> Table:
    """Per (variant, T) of one setting's ``summary``: mean ± 95 % confidence half-width over seeds
    of the main metrics and the ratios to BPTT, best marks tested on the seeds' values in
    ``results`` (:data:`STATISTICS_NOTE`); ``caption`` says which weights the test accuracy is of."""
    columns = ["method", "T", "seeds", "memory class"]
    arrows = ["", "", "", ""]
    shown = _shown_main_columns(summary)
    for header, metric, _, _ in shown:
        columns.append(header)
        arrows.append(_arrow(columns_of[metric]))
    columns += ["× memory vs BPTT", "× time vs BPTT"]
    arrows += [DOWN, DOWN]
    everyone = np.ones(len(summary), dtype=bool)
    not_base = (summary["method"] != BASELINE).to_numpy()
    flags: dict[str, np.ndarray] = {}
    for _, column, _, skip_base in shown:
        col = columns_of[column]
        flags[column] = _block_flags(
            summary,
            seed_table(results, column),
            bool(col.higher_is_better),
            not_base if skip_base else everyone,
            col.kind in EXACT_KINDS,
        )
    for metric, ratio in (("peak_activation_bytes", "mem_ratio"), ("step_time_ms", "time_ratio")):
        reference_mean = summary[f"{metric}_mean"] / summary[ratio]
        exact = columns_of[metric].kind in EXACT_KINDS
        flags[ratio] = _block_flags(summary, seed_table(results, metric), False, everyone, exact, reference_mean)
    rows = []
    for i, (_, r) in enumerate(summary.iterrows()):
        row = [
            Cell(r["variant"]),
            Cell(str(int(r["T"])), numeric=True),
            Cell(str(int(r["n"])), numeric=True),
            Cell(text(r["memory_class"])),
        ]
        for _, column, kind, _ in shown:
            row.append(Cell(mean_ci(kind, r[f"{column}_mean"], r[f"{column}_ci_half"]), flags[column][i], True))
        row.append(Cell(_fmt("ratio", r["mem_ratio"]), flags["mem_ratio"][i], True))
        row.append(Cell(_fmt("ratio", r["time_ratio"]), flags["time_ratio"][i], True))
        rows.append(row)
    return Table(columns, rows, arrows, caption)


#: Metric-plugin columns per efficiency table (more are split over several tables).
EFFICIENCY_COLUMNS_PER_TABLE = 6


def efficiency_tables(summary: pd.DataFrame, results: pd.DataFrame, extra: Sequence[Column]) -> list[Table]:
    """The metric plugins' columns with a finite value, mean ± 95 % confidence half-width over seeds,
    a few per table, best marks as in :func:`results_table`; headers carry the declared unit and
    direction, captions the declared meaning."""
    shown = [c for c in extra if np.isfinite(summary[f"{c.name}_mean"].to_numpy(float)).any()]
    step = EFFICIENCY_COLUMNS_PER_TABLE
    return [_efficiency_table(summary, results, shown[i : i + step]) for i in range(0, len(shown), step)]


def _efficiency_table(summary: pd.DataFrame, results: pd.DataFrame, metrics: Sequence[Column]) -> Table:
    headers = [f"{c.name} ({c.unit})" if c.unit else c.name for c in metrics]
    everyone = np.ones(len(summary), dtype=bool)
    flags = {
        c.name: (
            np.zeros(len(summary), dtype=bool)
            if c.higher_is_better is None
            else _block_flags(summary, seed_table(results, c.name), c.higher_is_better, everyone, c.kind in EXACT_KINDS)
        )
        for c in metrics
    }
    rows = []
    for i, (_, r) in enumerate(summary.iterrows()):
        row = [Cell(r["variant"]), Cell(str(int(r["T"])), numeric=True)]
        for c in metrics:
            shown = mean_ci(_format_kind(c), r[f"{c.name}_mean"], r[f"{c.name}_ci_half"])
            row.append(Cell(shown, flags[c.name][i], True))
        rows.append(row)
    caption = "; ".join(f"{c.name}: {c.doc}" for c in metrics if c.doc)
    return Table(["method", "T", *headers], rows, ["", "", *[_arrow(c) for c in metrics]], caption)


def slopes_table(memory: dict[str, float], time_: dict[str, float], summary: pd.DataFrame) -> Table:
    classes = summary.groupby("variant", sort=False)["memory_class"].first()
    rows = []
    for variant in dict.fromkeys([*memory, *time_]):
        rows.append(
            [
                Cell(variant),
                Cell(text(classes.get(variant, ""))),
                Cell(_fmt("slope", memory.get(variant, math.nan)), numeric=True),
                Cell(_fmt("slope", time_.get(variant, math.nan)), numeric=True),
            ]
        )
    return Table(
        ["method", "memory class", "slope: activation memory", "slope: step time"],
        rows,
        caption="Least-squares slope of log(value) against log(T): about 1 for O(T), about 0 for O(1).",
    )


def _lowest_flags(values: np.ndarray) -> np.ndarray:
    """The finite values equal to the lowest, when not all are equal (nothing stands out then)."""
    ok = np.isfinite(values)
    if ok.sum() < 2 or np.nanmin(values) == np.nanmax(values):
        return np.zeros(len(values), dtype=bool)
    return ok & (values == np.nanmin(values))


def ranking_table(ranks: pd.DataFrame) -> Table:
    criteria = [c for c in ranks.columns if c not in ("variant", "blocks")]
    rows = []
    flags = {c: _lowest_flags(ranks[c].to_numpy(float)) for c in criteria}
    for i, (_, r) in enumerate(ranks.iterrows()):
        rows.append(
            [
                Cell(r["variant"]),
                *[Cell(_fmt("slope", r[c]), flags[c][i], True) for c in criteria],
                Cell(str(int(r["blocks"])), numeric=True),
            ]
        )
    return Table(
        ["method", *[f"{c} (rank)" for c in criteria], "blocks"],
        rows,
        ["", *[DOWN for _ in criteria], ""],
        caption=RANKING_NOTE,
    )


# -- sections -------------------------------------------------------------------------------------
class _Plots:
    """Collects rendered figures under unique, file-name-safe names."""

    def __init__(self) -> None:
        self.plots: list[F.Plot] = []

    def add(self, fig: Any, name: str, caption: str) -> F.Plot | None:
        if fig is None:
            return None
        plot = F.render(fig, f"{len(self.plots) + 1:02d}-{slug(name, 70)}", caption)
        self.plots.append(plot)
        return plot


def setting_section(
    data: ReportData, setting: str, index: int, plots: _Plots, colours: dict[str, tuple[float, float, float]]
) -> Section:
    summary = data.setting_summary(setting).reset_index(drop=True)
    section = Section(setting, anchor=f"setting-{index}")
    tag = f"s{index}-{setting}"
    if summary.empty:
        section.blocks.append(Text("No cell of this setting finished; see skipped and failed cells.", "note"))
        return section
    Ts = data.Ts(setting)
    rows = data.results[data.results["setting"] == setting]
    section.blocks.append(results_table(summary, rows, data.columns, selection_sentence(rows)))
    section.blocks.append(Text(STATISTICS_NOTE, "note"))
    params = summary.drop_duplicates("method_label")
    labels_and_params = zip(params["method_label"], params["params_text"], strict=True)
    section.blocks.append(KeyValues([(f"{v} parameters", p or "(none)") for v, p in labels_and_params]))
    efficiency = efficiency_tables(summary, rows, [data.columns[m] for m in data.extra_metrics])
    if efficiency:
        section.children.append(Section("Efficiency metrics", list(efficiency)))

    bands = "dashed: Pareto front; bars: ± one std over seeds"
    score = setting_score(summary)
    name = score.label[:1].upper() + score.label[1:]
    trade = [
        plots.add(
            F.tradeoff(
                summary,
                "peak_activation_bytes",
                "peak activation memory (saved for backward)",
                setting,
                colours,
                score,
            ),
            f"{score.name}-vs-memory-{tag}",
            f"{name} vs peak activation memory, {setting}; {bands}",
        ),
        plots.add(
            F.tradeoff(summary, "step_time_ms", "median step time (ms)", setting, colours, score),
            f"{score.name}-vs-time-{tag}",
            f"{name} vs step time, {setting}; {bands}",
        ),
    ]
    if np.isfinite(summary["peak_device_bytes_mean"].to_numpy(float)).any():
        trade.append(
            plots.add(
                F.tradeoff(summary, "peak_device_bytes", "peak device memory", setting, colours, score),
                f"{score.name}-vs-device-memory-{tag}",
                f"{name} vs peak device memory, {setting}",
            )
        )
    shown = [p for p in trade if p is not None]
    section.children.append(
        Section(
            "Trade-offs",
            [Figures(shown)] if shown else [Text(f"No finite {score.label}/memory/time values to plot.", "note")],
        )
    )

    scaling = Section("Scaling with T")
    if len(Ts) < 2:
        scaling.blocks.append(
            Text(f"Only T = {Ts[0]} was run; the scaling plots need at least two values of T.", "note")
        )
    else:
        figs, slopes = [], {}
        for metric, label, name in (
            ("peak_activation_bytes", "peak activation memory", "memory"),
            ("step_time_ms", "median step time (ms)", "time"),
            ("peak_device_bytes", "peak device memory", "device-memory"),
        ):
            made = F.scaling(summary, metric, label, setting, colours)
            if made is None:
                continue
            fig, slopes[metric] = made
            figs.append(plots.add(fig, f"{name}-vs-T-{tag}", f"{label.capitalize()} vs T (log-log), {setting}"))
        scaling.blocks.append(Figures([p for p in figs if p is not None]))
        scaling.blocks.append(
            slopes_table(slopes.get("peak_activation_bytes", {}), slopes.get("step_time_ms", {}), summary)
        )
    section.children.append(scaling)

    layers = layer_cosines(data.results[(data.results["setting"] == setting) & (data.results["method"] != BASELINE)])
    fidelity = Section("Gradient fidelity per layer")
    plot = plots.add(
        F.fidelity_heatmap(layers, setting, data.variants),
        f"gradient-fidelity-{tag}",
        f"Cosine between each parameter's gradient and BPTT's on the probe batch, {setting}",
    )
    fidelity.blocks.append(
        Figures([plot])
        if plot
        else Text("No per-layer gradient cosines were recorded for methods other than BPTT.", "note")
    )
    section.children.append(fidelity)

    curves = data.curves[data.curves["setting"] == setting] if not data.curves.empty else data.curves
    curves_section = Section("Learning curves")
    if curves.empty:
        curves_section.blocks.append(Text("No learning curves were recorded.", "note"))
    else:
        # the T with the most methods (the largest such T)
        methods_per_T = curves.groupby("T")["variant"].nunique()
        T_pick = int(max(zip(methods_per_T.to_numpy(), methods_per_T.index.to_numpy(float), strict=True))[1])
        plot = plots.add(
            F.learning_curves(curves[curves["T"] == T_pick], f"{setting}, T = {T_pick}", colours, data.variants, score),
            f"learning-curves-{tag}",
            f"Learning curves at T = {T_pick}, {setting}: training loss and validation {score.label} per epoch; "
            "band: ± one standard deviation over seeds",
        )
        curves_section.blocks.append(Figures([plot]) if plot else Text("No learning curves.", "note"))
    section.children.append(curves_section)
    series = metric_series_section(metric_series_points(rows), setting, tag, plots, colours, data.variants)
    if series is not None:
        section.children.append(series)
    return section


def metric_series_section(
    points: pd.DataFrame,
    setting: str,
    tag: str,
    plots: _Plots,
    colours: dict[str, tuple[float, float, float]],
    order: Sequence[str],
) -> Section | None:
    """A figure per metric series recorded in the setting (``points``: its
    :func:`~snnarena.report.tables.metric_series_points`); ``None`` when there is none."""
    if points.empty:
        return None
    shown = []
    for name, rows in points.groupby("series", sort=False):
        first = rows.iloc[0]
        doc = f": {first['doc']}" if first["doc"] else ""
        caption = (
            f"{name} of the {first['metric']} metric{doc}, against {first['xlabel']}, {setting}; "
            "line: mean over seeds, band: ± one standard deviation"
        )
        shown.append(plots.add(F.metric_series(rows, f"{setting}: {name}", colours, order), f"{name}-{tag}", caption))
    return Section("Metric curves", [Figures([p for p in shown if p is not None])])


def unfinished_section(data: ReportData) -> Section:
    section = Section("Skipped and failed cells", anchor="unfinished")
    rows = data.results[data.results["status"] != "done"].sort_values(["run", "status", "label"], kind="stable")
    if rows.empty:
        section.blocks.append(Text("Every cell finished.", "note"))
        return section
    by_label = {r.label: r for r in data.runs}
    table_rows = []
    details: list[Details] = []
    for _, r in rows.iterrows():
        label = r["label"] or f"{r['variant']} | {r['setting']} | T={text(r['T'])} | seed={text(r['seed'])}"
        table_rows.append([Cell(r["run"]), Cell(label), Cell(r["status"]), Cell(r["reason"])])
        run = by_label.get(r["run"])
        tb = run.traceback(r["cell_id"]) if run is not None and r["status"] == "failed" else ""
        if tb:
            details.append(Details(f"traceback: {label}", "\n".join(tb.strip().splitlines()[-25:])))
    columns = ["run", "cell", "status", "reason"]
    table = Table(columns, table_rows) if data.multi_run else Table(columns[1:], [t[1:] for t in table_rows])
    section.blocks.append(table)
    section.blocks.extend(details)
    return section


def metric_errors_section(data: ReportData) -> Section | None:
    rows = data.results[data.results["metric_errors"] != ""]
    if rows.empty:
        return None
    table_rows = []
    for _, r in rows.iterrows():
        try:
            errors = json.loads(r["metric_errors"])
        except json.JSONDecodeError:
            errors = {"?": r["metric_errors"]}
        items = errors.items() if isinstance(errors, dict) else [("?", str(errors))]
        for metric, message in items:
            table_rows.append([Cell(r["label"] or r["variant"]), Cell(str(metric)), Cell(str(message))])
    return Section(
        "Metric errors",
        [
            Text("These metrics raised; their columns are missing (never 0).", "note"),
            Table(["cell", "metric", "error"], table_rows),
        ],
        anchor="metric-errors",
    )


_PROFILE_NOTES: tuple[tuple[str, str], ...] = (
    (
        ".pt.trace.json",
        "Chrome trace: open in Perfetto (ui.perfetto.dev) or chrome://tracing; its tb/ folder "
        "also loads in TensorBoard with the optional torch-tb-profiler",
    ),
    ("memory_snapshot.pickle", "CUDA memory snapshot: drop it on pytorch.org/memory_viz"),
    (".csv", "operator table (torch.profiler key_averages)"),
    (".txt", "operator table, text"),
    ("profile.json", "what was profiled"),
)


def profile_section(data: ReportData, out_dir: Path) -> Section | None:
    items: list[tuple[str, str, str]] = []
    for run in data.runs:
        cell_ids = data.results.loc[data.results["run"] == run.label, "cell_id"]
        for path in run.profile_files(cell_ids):
            try:
                href = os.path.relpath(path, out_dir)
            except ValueError:  # another drive (Windows)
                href = path.as_posix()
            note = next((n for suffix, n in _PROFILE_NOTES if path.name.endswith(suffix)), "")
            base = run.path if path.is_relative_to(run.path) else run.path.parent
            rel = path.relative_to(base).as_posix()
            items.append((f"{run.label}: {rel}" if data.multi_run else rel, Path(href).as_posix(), note))
    if not items:
        return None
    return Section("Profiler artefacts", [Links(items)], anchor="profiles")


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list):
        out.append((prefix, ", ".join(json.dumps(v) if isinstance(v, (dict, list)) else text(v) for v in value)))
    else:
        out.append((prefix, text(value)))


def provenance_section(data: ReportData) -> Section:
    section = Section("Environment and provenance", anchor="provenance")
    for run in data.runs:
        m = run.manifest
        items: list[tuple[str, str]] = [("run directory", str(run.path))]
        for key in ("run_id", "suite", "description", "created", "source", "cells", "only"):
            if key in m:
                items.append((key, text(m[key])))
        env = m.get("environment")
        if isinstance(env, dict):
            _flatten("", env, items)
        child = Section(f"Run {run.label}" if data.multi_run else f"Run {run.run_id}", [KeyValues(items)])
        plugins = m.get("plugins")
        if isinstance(plugins, dict):
            loaded = plugins.get("loaded")
            if isinstance(loaded, dict) and loaded:
                rows = []
                for name, info in loaded.items():
                    info = info if isinstance(info, dict) else {}
                    registered = info.get("registered")
                    rows.append(
                        [
                            Cell(str(name)),
                            Cell(text(info.get("distribution"))),
                            Cell(text(info.get("version"))),
                            Cell(text(info.get("source"))),
                            Cell(", ".join(map(str, registered)) if isinstance(registered, list) else ""),
                        ]
                    )
                child.blocks.append(
                    Table(["plugin", "distribution", "version", "source", "registered"], rows, caption="Plugins loaded")
                )
            failures = plugins.get("failures")
            if isinstance(failures, list) and failures:
                rows = [
                    [
                        Cell(text(f.get("plugin")) if isinstance(f, dict) else ""),
                        Cell(text(f.get("error")) if isinstance(f, dict) else str(f)),
                    ]
                    for f in failures
                ]
                child.blocks.append(Table(["plugin", "error"], rows, caption="Plugins that failed to load"))
        section.children.append(child)
    return section


def overview_section(data: ReportData) -> Section:
    counts = data.results.groupby(["run", "status"]).size().unstack(fill_value=0)
    statuses = [s for s in ("done", "skipped", "failed") if s in counts.columns] + sorted(
        s for s in counts.columns if s not in ("done", "skipped", "failed")
    )
    rows = [
        [
            Cell(run),
            Cell(next(r.run_id for r in data.runs if r.label == run)),
            *[Cell(str(int(counts.loc[run, s])), numeric=True) for s in statuses],
        ]
        for run in counts.index
    ]
    selection = selection_sentence(data.results)
    blocks: list[Any] = [
        Table(["run", "run id", *statuses], rows, caption="Cells per run"),
        KeyValues(
            [
                ("settings (dataset · model)", "; ".join(data.settings) or "none"),
                ("methods", "; ".join(data.variants) or "none"),
            ]
        ),
        Text(
            f"Tables show the mean ± half-width of the {100 * CONFIDENCE:g} % Student-t confidence interval over "
            f'seeds ("seeds" = how many; t with n−1 degrees of freedom; one seed: the mean alone). '
            f"{UP} higher is better, {DOWN} lower is better; highlighted: the best among the methods at the same T, "
            f"only where it is significantly better than the runner-up (α = {ALPHA:g}, two-sided paired t-test on "
            "shared seeds, Welch's otherwise; BPTT, the reference, is not ranked on gradient cosine). summary.csv "
            f"adds, per method, paired t-tests against {BASELINE.upper()} on the shared seeds (task score, step time, "
            "activation memory). Activation memory is the peak of bytes "
            "autograd saves for the backward pass; device memory is CUDA's peak allocation (CPU runs: empty). "
            "× memory/× time: ratio to BPTT's activation memory/step time at the same T"
            + (" and run." if data.multi_run else ".")
            + (f" {selection} Learning curves and val accuracy are on the validation split." if selection else ""),
            "note",
        ),
    ]
    warning = seeds_warning(data.results)
    if warning:
        blocks.insert(0, Text(warning, "warning"))
    return Section("Overview", blocks, anchor="overview")


def seeds_warning(results: pd.DataFrame) -> str:
    """The warning for fewer than :data:`MIN_SEEDS` seeds among the finished cells (``""`` otherwise)."""
    done = results[results["status"] == "done"]
    if done.empty:
        return ""
    n = int(done["seed"].nunique())
    if n >= MIN_SEEDS:
        return ""
    seeds = f"{n} seed{'' if n == 1 else 's'}"
    return f"Warning — {seeds}: intervals and significance are not meaningful below {MIN_SEEDS}."


def ranking_section(data: ReportData, plots: _Plots) -> Section:
    ranks = rankings(data.summary)
    section = Section("Ranking across datasets", anchor="ranking")
    if ranks.empty:
        section.blocks.append(Text("No finished cells to rank.", "note"))
        return section
    plot = plots.add(F.ranking_heatmap(ranks), "ranking", "Mean rank per criterion (1 = best)")
    if plot is not None:
        section.blocks.append(Figures([plot]))
    section.blocks.append(ranking_table(ranks))
    return section


# -- entry point ---------------------------------------------------------------------------------
def output_dir(runs: list[Run], out_root: Path) -> Path:
    suites = sorted({r.suite for r in runs})
    suite_dir = slug(suites[0]) if len(suites) == 1 else "combined"
    if len(runs) == 1:
        return out_root / suite_dir / slug(runs[0].run_id, 120)
    name = "+".join(slug(r.run_id) for r in runs)
    if len(name) > 120:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"combined-{len(runs)}runs-{digest}"
    return out_root / suite_dir / name


def build_report(run_dirs: Sequence[str | Path], out_root: str | Path = "report") -> Path:
    """Write the report of ``run_dirs`` (one or several run directories) and return its index.html."""
    data = load(list(run_dirs))
    check_writable(Path(out_root))  # a file or read-only folder fails here, naming it
    out_dir = output_dir(data.runs, Path(out_root))
    figures_dir = out_dir / "figures"
    check_writable(figures_dir)
    for stale in [*figures_dir.glob("*.png"), *figures_dir.glob("*.svg")]:
        stale.unlink()

    colours = F.palette(data.variants)
    plots = _Plots()
    sections = [overview_section(data), ranking_section(data, plots)]
    results_section = Section("Results by dataset and model", anchor="results")
    for i, setting in enumerate(data.settings, start=1):
        if not data.setting_summary(setting).empty:
            results_section.children.append(setting_section(data, setting, i, plots, colours))
    if not results_section.children:
        results_section.blocks.append(Text("No cell finished, so there is nothing to compare.", "note"))
    sections.append(results_section)
    sections.append(unfinished_section(data))
    optional: list[Callable[[], Section | None]] = [
        lambda: installed_claims_section(data),
        lambda: metric_errors_section(data),
        lambda: profile_section(data, out_dir),
    ]
    sections.extend(s for s in (make() for make in optional) if s is not None)
    sections.append(provenance_section(data))

    suites = sorted({r.suite for r in data.runs})
    title = f"snnarena report: {', '.join(suites)}"
    ids = ", ".join(f"{r.run_id} ({r.label})" if data.multi_run else r.run_id for r in data.runs)
    subtitle = (
        f"{'Runs' if data.multi_run else 'Run'} {ids} · generated {time.strftime('%Y-%m-%d %H:%M')} "
        f"by snnarena {snnarena.__version__}"
    )
    descriptions = [text(r.manifest.get("description")) for r in data.runs]
    if any(descriptions):
        sections[0].blocks.insert(0, Text(" / ".join(dict.fromkeys(d for d in descriptions if d))))

    for plot in plots.plots:
        (figures_dir / f"{plot.name}.png").write_bytes(plot.png)
        atomic_write_text(figures_dir / f"{plot.name}.svg", plot.svg)
    data.summary.to_csv(out_dir / "summary.csv", index=False)
    atomic_write_text(out_dir / "report.md", MarkdownWriter().page(title, subtitle, sections))
    index = out_dir / "index.html"
    atomic_write_text(index, HtmlWriter().page(title, subtitle, sections))
    return index
