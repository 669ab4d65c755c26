"""Plain-text summaries of a results table, printed at the end of ``snnarena run``."""

from __future__ import annotations

import pandas as pd

from snnarena.results import RunDirectory


def method_label(label: str) -> str:
    """The method part of a cell label, e.g. ``tbptt[K=4]`` (the parameters the suite set)."""
    return label.split(" | ")[0]


def summary_table(results: pd.DataFrame) -> str:
    """Cell counts per status; mean over seeds per (dataset, T, method) of accuracy, step time, peak
    saved memory and fidelity; then each skipped cell with its reason (failures: :func:`failure_report`)."""
    if results.empty:
        return "no cells ran"
    frame = results.copy()
    frame["method"] = [method_label(label) for label in frame["label"]]
    lines = []
    counts = frame["status"].value_counts().to_dict()
    lines.append("cells: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    done = frame[frame["status"] == "done"]
    if not done.empty:
        table = (
            done.groupby(["dataset", "model", "T", "method"], sort=True)
            .agg(
                seeds=("seed", "nunique"),
                test_acc=("test_accuracy", "mean"),
                step_ms=("step_time_ms", "mean"),
                peak_saved_MB=("peak_activation_bytes", lambda b: b.mean() / 2**20),
                cos_bptt=("grad_cosine_bptt", "mean"),
            )
            .round({"test_acc": 3, "step_ms": 1, "peak_saved_MB": 2, "cos_bptt": 3})
        )
        with pd.option_context("display.width", 160, "display.max_columns", 20):
            lines.append(table.to_string())
    for _, row in frame[frame["status"] == "skipped"].iterrows():
        lines.append(f"skipped: {row['label']}: {row['reason']}")
    return "\n".join(lines)


def failure_report(results: pd.DataFrame, run: RunDirectory) -> str:
    """Each failed cell of ``results``: its label, the first line of its reason, and the file that
    holds its full traceback (``""`` when no cell failed)."""
    failed = results[results["status"] == "failed"] if len(results) else results
    if failed.empty:
        return ""
    lines = [f"{len(failed)} cell(s) failed:"]
    for _, row in failed.iterrows():
        reason = str(row["reason"] or "").strip().splitlines()
        traceback = run.traceback_path(str(row["cell_id"]))
        where = traceback if traceback.is_file() else run.cell_path(str(row["cell_id"]))
        lines.append(f"  {row['label']}")
        lines.append(f"    {reason[0] if reason else '(no reason recorded)'}")
        lines.append(f"    traceback: {where}")
    return "\n".join(lines)
