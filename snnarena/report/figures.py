"""The report's figures, drawn with seaborn on plain ``matplotlib.figure.Figure`` objects.

No pyplot state and no global backend change: each figure is rendered straight to PNG (for the
HTML, base64-embedded) and SVG (for export). Every label that comes from a suite or a plugin goes
through :func:`mpl_text` so that ``$`` cannot start mathtext and a leading ``_`` cannot hide a
legend entry.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullFormatter, NullLocator
from matplotlib.typing import RcKeyType

from snnarena.report.tables import loglog_slope, pareto_mask
from snnarena.task import Score, score_of

ACCURACY = score_of("accuracy")

MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
_RC: dict[RcKeyType, Any] = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "svg.fonttype": "none",
    "svg.hashsalt": "snnarena",
    "text.usetex": False,
}


@dataclass
class Plot:
    """A rendered figure: its file stem, caption and bytes."""

    name: str
    caption: str
    png: bytes
    svg: str


def mpl_text(value: str) -> str:
    """``value`` safe as a matplotlib label (no mathtext, no hidden ``_`` legend entries)."""
    out = str(value).replace("\\", "\\\\").replace("$", r"\$")
    return " " + out if out.startswith("_") else out


def human_bytes(value: float) -> str:
    if not math.isfinite(value):
        return ""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.0f} B"


def palette(variants: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """One stable colour per variant (tab10, then husl for more than ten)."""
    colours = sns.color_palette("tab10" if len(variants) <= 10 else "husl", max(len(variants), 1))
    return {v: tuple(colours[i]) for i, v in enumerate(variants)}


def render(fig: Figure, name: str, caption: str) -> Plot:
    with mpl.rc_context(_RC):
        png, svg = io.BytesIO(), io.StringIO()
        fig.savefig(png, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
        fig.savefig(svg, format="svg", bbox_inches="tight", metadata={"Date": None})
    return Plot(name, caption, png.getvalue(), svg.getvalue())


def _figure(width: float, height: float) -> Figure:
    with mpl.rc_context(_RC):
        return Figure(figsize=(width, height), layout="constrained")


def _styled() -> AbstractContextManager[Any]:
    return sns.axes_style("whitegrid", {"grid.linestyle": ":"})


def _finite(v: float) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def _log_axis(axis: object, metric: str) -> None:
    """Readable major ticks on a log axis: powers of two for bytes, 1-2-5 steps otherwise."""
    if metric.endswith("_bytes"):
        axis.set_major_locator(LogLocator(base=2.0, subs=(1.0,)))  # type: ignore[attr-defined]
        axis.set_major_formatter(FuncFormatter(lambda v, _pos: human_bytes(v)))  # type: ignore[attr-defined]
    else:
        axis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))  # type: ignore[attr-defined]
        axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))  # type: ignore[attr-defined]
    axis.set_minor_formatter(NullFormatter())  # type: ignore[attr-defined]


def _dodge(x: np.ndarray, spread: float = 0.035) -> np.ndarray:
    """Spread points that share an x value a little apart (multiplicatively, for log axes)."""
    out = x.copy()
    keys = np.round(np.log(np.where(x > 0, x, np.nan)), 6)
    for key in np.unique(keys[np.isfinite(keys)]):
        idx = np.flatnonzero(keys == key)
        if len(idx) > 1:
            out[idx] = x[idx] * np.exp(spread * (np.arange(len(idx)) - (len(idx) - 1) / 2))
    return out


def _log_errors(mean: float, std: float | None) -> list[list[float]] | None:
    """Asymmetric error bars for a log axis; the lower arm stops at half the mean."""
    if std is None or not math.isfinite(std):
        return None
    return [[min(std, 0.5 * mean)], [std]]


def _score_scale(score: Score) -> float:
    return 100.0 if score.percent else 1.0


def score_axis_label(score: Score, split: str = "test") -> str:
    """``test accuracy (%)``, ``test MSE (lower is better)`` ..."""
    unit = " (%)" if score.percent else ""
    direction = "" if score.higher_is_better else ", lower is better"
    return f"{split} {score.label}{unit}{direction}"


def tradeoff(
    summary: pd.DataFrame,
    metric: str,
    xlabel: str,
    title: str,
    colours: dict[str, tuple[float, float, float]],
    score: Score = ACCURACY,
) -> Figure | None:
    """The task's test ``score`` (y; accuracy in %) against a cost ``metric`` (x, log) per
    (variant, T), Pareto front dashed (in the score's direction)."""
    scale = _score_scale(score)
    x = summary[f"{metric}_mean"].to_numpy(dtype=float)
    y = scale * summary[f"test_{score.name}_mean"].to_numpy(dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0)
    if not ok.any():
        return None
    rows = summary[ok]
    x, y = x[ok], y[ok]
    shown_x = _dodge(x)
    Ts = sorted(rows["T"].unique())
    marker_of = {T: MARKERS[i % len(MARKERS)] for i, T in enumerate(Ts)}
    with mpl.rc_context(_RC), _styled():
        fig = _figure(6.8, 4.2)
        ax = fig.subplots()
        for (_, r), xi, yi in zip(rows.iterrows(), shown_x, y, strict=True):
            xerr = _log_errors(r[f"{metric}_mean"], r[f"{metric}_std"])
            yerr = _finite(scale * r[f"test_{score.name}_std"])
            ax.errorbar(
                xi,
                yi,
                xerr=xerr,
                yerr=yerr,
                fmt=marker_of[r["T"]],
                color=colours[r["variant"]],
                markersize=7,
                capsize=2,
                elinewidth=0.8,
                alpha=0.9,
                zorder=3,
            )
        front = pareto_mask(x, y if score.higher_is_better else -y)
        order = np.argsort(x[front])
        fx, fy = shown_x[front][order], y[front][order]
        ax.step(fx, fy, where="post", linestyle="--", color="0.35", linewidth=1, zorder=2)
        ax.scatter(fx, fy, s=170, facecolors="none", edgecolors="0.2", linewidths=1, zorder=4)
        ax.set_xscale("log")
        _log_axis(ax.xaxis, metric)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(score_axis_label(score))
        ax.set_title(mpl_text(title))
        handles = [
            Line2D([], [], color=colours[v], marker="o", linestyle="", label=mpl_text(v))
            for v in dict.fromkeys(rows["variant"])
        ]
        if len(Ts) > 1:
            handles += [
                Line2D([], [], color="0.3", marker=marker_of[T], linestyle="", label=f"T = {int(T)}") for T in Ts
            ]
        handles.append(
            Line2D([], [], color="0.35", linestyle="--", marker="o", markerfacecolor="none", label="Pareto front")
        )
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def scaling(
    summary: pd.DataFrame,
    metric: str,
    ylabel: str,
    title: str,
    colours: dict[str, tuple[float, float, float]],
) -> tuple[Figure, dict[str, float]] | None:
    """``metric`` against ``T`` on log-log axes, one line per variant, fitted slopes in the legend."""
    Ts = sorted(summary["T"].unique())
    if len(Ts) < 2 or not np.isfinite(summary[f"{metric}_mean"].to_numpy(dtype=float)).any():
        return None
    slopes: dict[str, float] = {}
    with mpl.rc_context(_RC), _styled():
        fig = _figure(6.8, 4.2)
        ax = fig.subplots()
        firsts = []
        for variant, rows in summary.groupby("variant", sort=False):
            rows = rows.sort_values("T")
            t = rows["T"].to_numpy(dtype=float)
            v = rows[f"{metric}_mean"].to_numpy(dtype=float)
            ok = np.isfinite(v) & (v > 0)
            if not ok.any():
                continue
            slope = loglog_slope(t, v)
            slopes[str(variant)] = slope
            memory_class = rows["memory_class"].iloc[0]
            tag = f" [{memory_class}]" if memory_class else ""
            label = f"{variant}{tag}  slope {slope:.2f}" if math.isfinite(slope) else f"{variant}{tag}"
            err = np.nan_to_num(rows[f"{metric}_std"].to_numpy(dtype=float)[ok])
            ax.errorbar(
                t[ok],
                v[ok],
                yerr=[np.minimum(err, 0.5 * v[ok]), err],
                marker="o",
                color=colours[str(variant)],
                capsize=2,
                linewidth=1.4,
                label=mpl_text(label),
            )
            firsts.append(v[ok][0])
        if firsts:
            anchor = float(np.exp(np.mean(np.log(firsts))))
            t = np.array([Ts[0], Ts[-1]], dtype=float)
            ax.plot(t, anchor * t / t[0], linestyle=":", color="0.55", linewidth=1, label="slope 1: O(T)")
            ax.plot(t, [anchor, anchor], linestyle="-.", color="0.7", linewidth=1, label="slope 0: O(1)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(FixedLocator([float(T) for T in Ts]))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
        _log_axis(ax.yaxis, metric)
        ax.set_xlabel("time steps T")
        ax.set_ylabel(ylabel)
        ax.set_title(mpl_text(title))
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig, slopes


def fidelity_heatmap(layers: pd.DataFrame, title: str, order: Sequence[str]) -> Figure | None:
    """Per-layer gradient cosine vs BPTT: rows method variant (and T) in ``order``, columns
    parameter tensors. The colour scale spans [min(0.9, lowest), 1] so small losses show."""
    if layers.empty:
        return None
    rank = {v: i for i, v in enumerate(order)}
    frame = layers.assign(_rank=layers["variant"].map(lambda v: rank.get(v, len(rank))))
    frame = frame.sort_values(["_rank", "variant", "T"], kind="stable")
    several_T = frame["T"].nunique() > 1
    frame["row"] = frame["variant"] + (" · T=" + frame["T"].astype(int).astype(str) if several_T else "")
    table = frame.pivot_table(index="row", columns="layer", values="cosine", sort=False)
    table = table.loc[list(dict.fromkeys(frame["row"])), list(dict.fromkeys(frame["layer"]))]
    values = table.to_numpy(dtype=float)
    lowest = float(np.nanmin(values)) if np.isfinite(values).any() else 0.0
    vmin = max(-1.0, min(0.9, math.floor(lowest * 20) / 20))
    n_rows, n_cols = table.shape
    with mpl.rc_context(_RC):
        fig = _figure(max(4.5, 0.9 * n_cols + 2.5), max(2.2, 0.32 * n_rows + 1.6))
        ax = fig.subplots()
        sns.heatmap(
            table,
            ax=ax,
            cmap="viridis",
            vmin=vmin,
            vmax=1.0,
            annot=n_rows * n_cols <= 240,
            fmt=".3f",
            annot_kws={"fontsize": 7},
            linewidths=0.5,
            linecolor="white",
            cbar_kws={"label": "cosine vs BPTT"},
        )
        ax.set_yticks(np.arange(n_rows) + 0.5, [mpl_text(r) for r in table.index], rotation=0)
        ax.set_xticks(np.arange(n_cols) + 0.5, [mpl_text(c) for c in table.columns], rotation=35, ha="right")
        ax.set_xlabel("parameter tensor")
        ax.set_ylabel("")
        ax.set_title(mpl_text(title))
    return fig


def _method_hues(
    data: pd.DataFrame, colours: dict[str, tuple[float, float, float]], order: Sequence[str]
) -> tuple[list[str], dict[str, tuple[float, float, float]]]:
    """The variants of ``data`` in report order (unknown ones last) and their colours by label."""
    present = set(data["variant"])
    hues = [v for v in order if v in present] + sorted(present - set(order))
    return hues, {mpl_text(v): colours[v] for v in hues}


def _method_lines(
    ax: Any,
    data: pd.DataFrame,
    x: str,
    y: str,
    hues: Sequence[str],
    palette: dict[str, tuple[float, float, float]],
    legend: bool,
) -> None:
    """One line per method (column ``method``) of ``y`` against ``x``, band ± one std over seeds."""
    sns.lineplot(
        data,
        x=x,
        y=y,
        hue="method",
        hue_order=[mpl_text(v) for v in hues],
        palette=palette,
        errorbar="sd",
        marker="o",
        markersize=4,
        ax=ax,
        legend=legend,
    )


def learning_curves(
    curves: pd.DataFrame,
    title: str,
    colours: dict[str, tuple[float, float, float]],
    order: Sequence[str],
    score: Score = ACCURACY,
) -> Figure | None:
    """Training loss and the task's validation ``score`` per epoch; the band is ± one standard
    deviation over seeds."""
    if curves.empty:
        return None
    data = curves.copy()
    data["method"] = data["variant"].map(mpl_text)
    score_label = score_axis_label(score, "validation")
    data[score_label] = _score_scale(score) * data[f"val_{score.name}"]
    data["training loss"] = data["train_loss"]
    hues, pal = _method_hues(data, colours, order)
    with mpl.rc_context(_RC), _styled():
        fig = _figure(9.0, 3.6)
        axes = fig.subplots(1, 2)
        for ax, column in zip(axes, ("training loss", score_label), strict=True):
            rows = data[np.isfinite(data[column].to_numpy(dtype=float))]
            if rows.empty:
                ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
            else:
                _method_lines(ax, rows, "epoch", column, hues, pal, legend=ax is axes[1])
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if axes[1].get_legend() is not None:
            sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title=None)
        fig.suptitle(mpl_text(title))
    return fig


def ranking_heatmap(ranks: pd.DataFrame) -> Figure | None:
    """Mean rank (1 = best) of every variant on each criterion over all (setting, T) blocks."""
    if ranks.empty:
        return None
    table = ranks.set_index("variant").drop(columns="blocks").astype(float)
    if not np.isfinite(table.to_numpy()).any():
        return None
    n_rows, n_cols = table.shape
    with mpl.rc_context(_RC):
        fig = _figure(2.0 + 1.3 * n_cols, max(2.0, 0.35 * n_rows + 1.4))
        ax = fig.subplots()
        sns.heatmap(
            table,
            ax=ax,
            cmap="viridis_r",
            annot=True,
            fmt=".2f",
            linewidths=0.5,
            linecolor="white",
            cbar_kws={"label": "mean rank (1 = best)"},
        )
        ax.set_yticks(np.arange(n_rows) + 0.5, [mpl_text(r) for r in table.index], rotation=0)
        ax.set_xticks(np.arange(n_cols) + 0.5, list(table.columns), rotation=0)
        ax.set_ylabel("")
        ax.set_title("Mean rank across datasets, models and T")
    return fig


def series_axis_label(ylabel: str, higher_is_better: object) -> str:
    """``ylabel`` with the series' direction (``error, lower is better``); none for ``None``/NaN."""
    if not isinstance(higher_is_better, (bool, np.bool_)):
        return ylabel
    return f"{ylabel}, {'higher' if higher_is_better else 'lower'} is better"


def metric_series(
    points: pd.DataFrame,
    title: str,
    colours: dict[str, tuple[float, float, float]],
    order: Sequence[str],
) -> Figure | None:
    """One metric series (rows of :func:`~snnarena.report.tables.metric_series_points` of a single
    series and setting) against its index, a line per variant (mean over seeds, band ± one standard
    deviation) and a panel per ``T``."""
    if points.empty:
        return None
    first = points.iloc[0]
    data = points.assign(method=points["variant"].map(mpl_text))
    hues, pal = _method_hues(data, colours, order)
    Ts = sorted(int(T) for T in data["T"].unique())
    with mpl.rc_context(_RC), _styled():
        fig = _figure(3.4 * len(Ts) + 2.4, 3.6)
        axes = np.atleast_1d(fig.subplots(1, len(Ts), sharey=True, squeeze=False)[0])
        for ax, T in zip(axes, Ts, strict=True):
            _method_lines(ax, data[data["T"] == T], "x", "value", hues, pal, legend=ax is axes[-1])
            ax.set_xlabel(mpl_text(first["xlabel"]))
            ax.set_ylabel(mpl_text(series_axis_label(first["ylabel"], first["higher_is_better"])))
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(f"T = {T}")
        if axes[-1].get_legend() is not None:
            sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title=None)
        fig.suptitle(mpl_text(title))
    return fig
