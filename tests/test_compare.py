"""compare_runs/regressions: matching cells across runs and the seed-spread significance rule."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from snnarena.compare import compare_runs, regressions
from snnarena.results import CellRecord, RunDirectory, rows_frame


def row(method: str, seed: int, T: int = 8, status: str = "done", **metrics: Any) -> dict[str, Any]:
    base = {
        "run_id": "r", "suite": "s", "cell_id": f"{method}-{T}-{seed}", "label": method, "method": method,
        "method_params": '{"K": 2}' if method == "tbptt" else "{}", "model": "mlp", "model_params": "{}",
        "dataset": "digits", "dataset_params": "{}", "neuron": "lif", "neuron_params": "{}", "surrogate": "atan",
        "loss": "per_step", "T": T, "seed": seed, "status": status, "reason": "",
    }
    return {**base, **metrics}


def frame(*rows: dict[str, Any]) -> pd.DataFrame:
    return rows_frame(rows)


def pick(result: pd.DataFrame, method: str, metric: str) -> pd.Series:
    hit = result[(result["method"] == method) & (result["metric"] == metric)]
    assert len(hit) == 1
    return hit.iloc[0]


def test_two_seeds_use_the_pooled_spread() -> None:
    a = frame(row("bptt", 0, test_accuracy=0.80, step_time_ms=10.0),
              row("bptt", 1, test_accuracy=0.82, step_time_ms=14.0))
    b = frame(row("bptt", 0, test_accuracy=0.70, step_time_ms=13.0),
              row("bptt", 1, test_accuracy=0.72, step_time_ms=15.0))
    out = compare_runs(a, b)
    acc = pick(out, "bptt", "test_accuracy")
    # s_a = s_b = 0.01414, pooled 0.01414; |Δ| = 0.10 > 2 · 0.01414
    assert acc["delta"] == pytest.approx(-0.10)
    assert acc["pooled_std"] == pytest.approx(math.sqrt(0.0002))
    assert acc["significant"] and acc["worse"] and not acc["better"]
    time = pick(out, "bptt", "step_time_ms")
    # s_a = 2.83, s_b = 1.41, pooled = sqrt((8 + 2) / 2) = 2.24; |Δ| = 2 < 4.47: within the spread
    assert time["pooled_std"] == pytest.approx(math.sqrt(5.0))
    assert not time["significant"] and not time["worse"]
    assert list(regressions(out)["metric"]) == ["test_accuracy"]


def test_single_seed_flags_any_change_with_its_direction() -> None:
    a = frame(row("bptt", 0, test_accuracy=0.8, step_time_ms=10.0, peak_activation_bytes=100.0),
              row("tbptt", 0, test_accuracy=0.7, step_time_ms=5.0, peak_activation_bytes=50.0))
    b = frame(row("bptt", 0, test_accuracy=0.8, step_time_ms=9.0, peak_activation_bytes=100.0),
              row("tbptt", 0, test_accuracy=0.7, step_time_ms=6.0, peak_activation_bytes=60.0))
    out = compare_runs(a, b)
    assert not pick(out, "bptt", "test_accuracy")["significant"]
    assert pick(out, "bptt", "step_time_ms")["better"]
    assert pick(out, "tbptt", "step_time_ms")["worse"]
    worse = regressions(out)
    assert list(zip(worse["method"], worse["metric"])) == [("tbptt", "step_time_ms"), ("tbptt", "peak_activation_bytes")]
    assert worse["rel_delta"].tolist() == pytest.approx([0.2, 0.2])
    assert compare_runs(a, b, rel_tol=0.5)["significant"].sum() == 0


def test_cells_are_matched_on_their_parameters_and_failed_cells_ignored() -> None:
    a = frame(row("bptt", 0, test_accuracy=0.8), row("tbptt", 0, test_accuracy=0.6),
              row("bptt", 0, T=16, status="failed", test_accuracy=float("nan")))
    b_row = row("tbptt", 0, test_accuracy=0.1)
    b_row["method_params"] = '{"K": 4}'  # another variant: not the same cell
    b = frame(row("bptt", 0, test_accuracy=0.8), b_row)
    out = compare_runs(a, b)
    acc = out[out["metric"] == "test_accuracy"]
    assert len(acc) == 3  # bptt T=8 (both), tbptt K=2 (a only), tbptt K=4 (b only); failed T=16 dropped
    only_a = acc[(acc["method"] == "tbptt") & (acc["n_b"] == 0)].iloc[0]
    assert only_a["n_a"] == 1 and math.isnan(only_a["mean_b"]) and not only_a["significant"]
    assert regressions(out).empty


def test_metric_directions_and_nan_metrics() -> None:
    a = frame(row("bptt", 0, grad_cosine_bptt=0.9, spike_rate=0.1, peak_device_bytes=float("nan")))
    b = frame(row("bptt", 0, grad_cosine_bptt=0.8, spike_rate=0.2, peak_device_bytes=float("nan")))
    out = compare_runs(a, b)
    assert pick(out, "bptt", "grad_cosine_bptt")["worse"]
    spike = pick(out, "bptt", "spike_rate")
    assert spike["significant"] and not spike["worse"] and not spike["better"]  # no direction
    assert "peak_device_bytes" not in set(out["metric"])


def write_run(path: Path, rows: list[dict[str, Any]]) -> Path:
    run = RunDirectory(path)
    run.write_manifest({"run_id": path.name, "suite": "s", "description": "", "environment": {}, "plugins": {}}, "")
    for r in rows:
        run.write_cell(CellRecord({}, r, []))
    run.aggregate()
    return path


def test_run_directories(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", [row("bptt", s, test_accuracy=0.8 + 0.01 * s, Effective_ACs=100.0) for s in (0, 1)])
    b = write_run(tmp_path / "b", [row("bptt", s, test_accuracy=0.5 + 0.01 * s, Effective_ACs=150.0) for s in (0, 1)])
    out = compare_runs(a, b)
    assert set(regressions(out)["metric"]) == {"test_accuracy", "Effective_ACs"}
    assert pick(out, "bptt", "test_accuracy")["n_a"] == 2
