"""Plain-text summaries of a results table, printed at the end of ``snnarena run``."""

from __future__ import annotations

from collections import Counter

import pandas as pd

from snnarena.results import RunDirectory
from snnarena.suite import SELECT_RULES
from snnarena.task import SCORES, Score


def method_label(label: str) -> str:
    """The method part of a cell label, e.g. ``tbptt[K=4]`` (the parameters the suite set)."""
    return label.split(" | ")[0]


def selection_sentence(results: pd.DataFrame) -> str:
    """Which weights the test scores of ``results``' done cells were read from, as a sentence
    (``""`` when no cell is done). Rows of runs made before ``train.select`` existed count as
    ``last``: their test score was read after the last epoch."""
    if results.empty or "status" not in results:
        return ""
    done = results[results["status"] == "done"]
    if done.empty:
        return ""
    chosen = done["select"] if "select" in done else pd.Series("", index=done.index)
    counts = Counter(value if isinstance(value, str) and value else "last" for value in chosen)
    rules = [rule for rule in SELECT_RULES if rule in counts] + sorted(set(counts) - set(SELECT_RULES))
    if len(rules) == 1:
        (rule,) = rules
        return f"Test scores (read once per cell) follow train.select = {rule!r}: {SELECT_RULES.get(rule, rule)}."
    parts = [
        f"{rule!r} in {counts[rule]} cell{'' if counts[rule] == 1 else 's'} ({SELECT_RULES.get(rule, rule)})"
        for rule in rules
    ]
    return f"Test scores (read once per cell) follow train.select = {', '.join(parts[:-1])} and {parts[-1]}."


def _header(score: Score, split: str) -> str:
    """``test_acc``, ``val_mse↓`` ...: the arrow marks a score where lower is better."""
    return f"{split}_{score.short}" + ("" if score.higher_is_better else "↓")


#: Decimals per column of :func:`summary_table`.
SUMMARY_DECIMALS = {
    **{_header(score, split): 3 if score.higher_is_better else 4 for score in SCORES for split in ("test", "val")},
    "step_ms": 1,
    "peak_saved_MB": 2,
    "cos_bptt": 3,
}


def _has_values(frame: pd.DataFrame, column: str) -> bool:
    return column in frame and bool(pd.to_numeric(frame[column], errors="coerce").notna().any())


def _score_columns(done: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """The score columns of :func:`summary_table`: the test and validation values of every task
    score some cell has (accuracy when none has)."""
    present = [score for score in SCORES if _has_values(done, f"test_{score.name}")] or [SCORES[0]]
    return {_header(score, split): (f"{split}_{score.name}", "mean") for score in present for split in ("test", "val")}


def summary_table(results: pd.DataFrame) -> str:
    """Cell counts per status; mean over seeds per (dataset, T, method) of test and validation
    accuracy (and MSE, lower is better, when some cell has a regression task), step time, peak
    saved memory and fidelity; which weights the test scores are of; then
    each skipped cell with its reason (failures: :func:`failure_report`)."""
    if results.empty:
        return "no cells ran"
    frame = results.copy()
    frame["method"] = [method_label(label) for label in frame["label"]]
    lines = []
    counts = frame["status"].value_counts().to_dict()
    lines.append("cells: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    done = frame[frame["status"] == "done"]
    if not done.empty:
        scores = _score_columns(done)
        from snnarena.report.tables import label_rows  # here: the report package imports this module

        labels = label_rows(done.assign(run=""), multi_run=False)
        done = done.assign(dataset=labels["dataset_label"], model=labels["model_label"], method=labels["method_label"])
        table = (
            done.groupby(["dataset", "model", "T", "method"], sort=True)
            .agg(
                seeds=("seed", "nunique"),
                **scores,
                step_ms=("step_time_ms", "mean"),
                peak_saved_MB=("peak_activation_bytes", lambda b: b.mean() / 2**20),
                cos_bptt=("grad_cosine_bptt", "mean"),
            )
            .round(SUMMARY_DECIMALS)
        )
        with pd.option_context("display.width", 160, "display.max_columns", 20):
            lines.append(table.to_string())
        lines.append(selection_sentence(frame))
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
