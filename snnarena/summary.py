"""A plain-text summary of a results table, printed at the end of ``snnarena run``."""

from __future__ import annotations

import pandas as pd


def method_label(label: str) -> str:
    """The method part of a cell label, e.g. ``tbptt[K=4]`` (the parameters the suite set)."""
    return label.split(" | ")[0]


def summary_table(results: pd.DataFrame) -> str:
    """Mean over seeds per (dataset, T, method): accuracy, step time, peak saved memory, fidelity."""
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
    bad = frame[frame["status"] != "done"]
    for _, row in bad.iterrows():
        lines.append(f"{row['status']}: {row['label']}: {row['reason']}")
    return "\n".join(lines)
