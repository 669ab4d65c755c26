"""compare_runs: matching cells, the noise model, cells on one side only, suites, machines, output."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from snnarena.columns import CORE_COLUMNS, Column, columns_by_name, columns_from_manifest
from snnarena.compare import (
    CompareError,
    NoiseModel,
    RunTable,
    Tolerance,
    compare_runs,
    parse_tolerances,
    render,
    summary,
)
from snnarena.results import CellRecord, RunDirectory, rows_frame


def row(method: str, seed: int, T: int = 8, status: str = "done", **metrics: Any) -> dict[str, Any]:
    params = '{"K": 2}' if method == "tbptt" else "{}"
    base = {
        "run_id": "r",
        "suite": "s",
        "cell_id": f"{method}-{T}-{seed}",
        "method": method,
        "label": f"{method} | mlp/lif | digits | T={T} | seed={seed}",
        "method_params": params,
        "model": "mlp",
        "model_params": "{}",
        "dataset": "digits",
        "dataset_params": "{}",
        "neuron": "lif",
        "neuron_params": "{}",
        "surrogate": "atan",
        "loss": "per_step",
        "T": T,
        "seed": seed,
        "status": status,
        "reason": "RuntimeError: boom\nmore" if status == "failed" else "",
    }
    return {**base, **metrics}


def frame(*rows: dict[str, Any]) -> pd.DataFrame:
    return rows_frame(rows)


def run(*rows: dict[str, Any], suite: str = "s", columns: tuple[Column, ...] = (), **env: Any) -> RunTable:
    manifest = {"suite": suite, "environment": env, "columns": {c.name: c.to_dict() for c in columns}}
    return RunTable(frame(*rows), manifest, suite)


def pick(result: Any, method: str, metric: str) -> pd.Series:
    rows = result.rows
    hit = rows[(rows["method"] == method) & (rows["metric"] == metric)]
    assert len(hit) == 1, hit
    return hit.iloc[0]


def test_two_seeds_need_the_tolerance_and_the_pooled_spread() -> None:
    a = frame(
        row("bptt", 0, test_accuracy=0.80, step_time_ms=10.0), row("bptt", 1, test_accuracy=0.82, step_time_ms=14.0)
    )
    b = frame(
        row("bptt", 0, test_accuracy=0.70, step_time_ms=13.0), row("bptt", 1, test_accuracy=0.72, step_time_ms=15.0)
    )
    out = compare_runs(a, b)
    acc = pick(out, "bptt", "test_accuracy")
    # s_a = s_b = 0.01414, pooled 0.01414; |Δ| = 0.10 > 2 · 0.01414 and > 0.01
    assert acc["delta"] == pytest.approx(-0.10)
    assert acc["pooled_std"] == pytest.approx(math.sqrt(0.0002))
    assert acc["verdict"] == "regression"
    assert acc["basis"].startswith("2 seeds each: |Δ| > 2·s_p = 0.0283 and |Δ| > 0.01 (score tolerance)")
    time = pick(out, "bptt", "step_time_ms")
    # +16.7 % is beyond the 10 % time tolerance, but s_p = sqrt(5) = 2.24 and |Δ| = 2 < 4.47
    assert time["pooled_std"] == pytest.approx(math.sqrt(5.0))
    assert time["verdict"] == "unchanged"
    assert list(out.regressions["metric"]) == ["test_accuracy"]


def test_an_identical_one_seed_rerun_has_no_regression() -> None:
    """The timing jitter of a rerun (a few %) is within the time tolerance; memory and scores are equal."""
    a = frame(
        *[
            row(
                m,
                0,
                T,
                test_accuracy=0.8,
                step_time_ms=10.0,
                forward_ms=4.0,
                duration_s=30.0,
                peak_activation_bytes=1000.0,
            )
            for m in ("bptt", "tbptt")
            for T in (8, 16)
        ]
    )
    b = frame(
        *[
            row(
                m,
                0,
                T,
                test_accuracy=0.8,
                step_time_ms=10.6,
                forward_ms=3.7,
                duration_s=31.5,
                peak_activation_bytes=1000.0,
            )
            for m in ("bptt", "tbptt")
            for T in (8, 16)
        ]
    )
    out = compare_runs(a, b)
    assert out.gate_failures.empty
    assert out.counts() == {"unchanged": 4 * 5}  # 4 cells × 5 metrics
    first = out.rows[out.rows["metric"] == "step_time_ms"].iloc[0]
    assert first["basis"] == "1 seed: |Δ| > 10% (time tolerance)"


def test_one_seed_flags_changes_beyond_the_tolerance_of_each_kind() -> None:
    a = frame(
        row("bptt", 0, test_accuracy=0.8, step_time_ms=10.0, peak_activation_bytes=100.0, spike_rate=0.1),
        row("tbptt", 0, test_accuracy=0.7, step_time_ms=5.0, peak_activation_bytes=50.0, spike_rate=0.1),
    )
    b = frame(
        row("bptt", 0, test_accuracy=0.75, step_time_ms=8.0, peak_activation_bytes=100.0, spike_rate=0.2),
        row("tbptt", 0, test_accuracy=0.705, step_time_ms=6.0, peak_activation_bytes=51.0, spike_rate=0.1),
    )
    out = compare_runs(a, b)
    assert pick(out, "bptt", "test_accuracy")["verdict"] == "regression"  # 0.05 > 0.01
    assert pick(out, "tbptt", "test_accuracy")["verdict"] == "unchanged"  # 0.005 < 0.01
    assert pick(out, "bptt", "step_time_ms")["verdict"] == "improvement"  # -20 %
    assert pick(out, "tbptt", "step_time_ms")["verdict"] == "regression"  # +20 %
    assert pick(out, "tbptt", "peak_activation_bytes")["verdict"] == "regression"  # memory: any change
    assert pick(out, "bptt", "spike_rate")["verdict"] == "changed"  # no direction
    worse = out.regressions
    assert list(zip(worse["method"], worse["metric"], strict=True)) == [
        ("tbptt", "step_time_ms"),
        ("bptt", "test_accuracy"),
        ("tbptt", "peak_activation_bytes"),
    ]
    assert worse["rel_delta"].tolist() == pytest.approx([0.2, -0.0625, 0.02])


def test_tolerances_are_configurable_by_kind_or_column() -> None:
    a = frame(row("bptt", 0, test_accuracy=0.8, step_time_ms=10.0, peak_activation_bytes=100.0))
    b = frame(row("bptt", 0, test_accuracy=0.75, step_time_ms=12.0, peak_activation_bytes=101.0))
    noise = NoiseModel(parse_tolerances(["time=30%", "memory=2%", "test_accuracy=0.1"]))
    out = compare_runs(a, b, noise)
    assert out.regressions.empty
    assert pick(out, "bptt", "test_accuracy")["basis"] == "1 seed: |Δ| > 0.1 (--tolerance test_accuracy)"
    assert Tolerance.parse("10%") == Tolerance(0.1, True) and Tolerance.parse("0.5") == Tolerance(0.5, False)
    for bad in (["time"], ["time=fast"], ["time=-1%"]):
        with pytest.raises(CompareError, match="--tolerance"):
            parse_tolerances(bad)
    with pytest.raises(CompareError, match="--spread must be a number >= 0"):
        NoiseModel(spread_factor=-1.0)
    with pytest.raises(CompareError, match="neither a column kind"):
        compare_runs(a, b, NoiseModel(parse_tolerances(["tme=5%"])))


def test_gpu_runs_allow_allocator_noise_in_memory() -> None:
    a = run(row("bptt", 0, peak_device_bytes=1000.0, device="cuda:0"), device="cuda:0")
    b = run(row("bptt", 0, peak_device_bytes=1020.0, device="cuda:0"), device="cuda:0")
    verdict = pick(compare_runs(a, b), "bptt", "peak_device_bytes")
    assert verdict["verdict"] == "unchanged" and "memory tolerance on GPU" in verdict["basis"]


def test_cells_lost_on_either_side_fail_the_gate() -> None:
    """The issue's case: B's cells all failed or are missing, and nothing was flagged."""
    a = frame(
        row("bptt", 0, test_accuracy=0.8),
        row("bptt", 1, test_accuracy=0.8),
        row("tbptt", 0, test_accuracy=0.7),
        row("tbptt", 1, status="failed"),
    )
    b = frame(row("bptt", 0, status="failed"), row("bptt", 1, status="skipped"), row("tbptt", 1, test_accuracy=0.7))
    out = compare_runs(a, b)
    assert out.regressions.empty  # no metric can be compared ...
    lost = out.one_sided.set_index(["method", "seed"])["verdict"].to_dict()
    assert lost == {
        ("bptt", "0"): "failed in B",
        ("bptt", "1"): "skipped in B",
        ("tbptt", "0"): "missing in B",
        ("tbptt", "1"): "failed in A",
    }
    assert len(out.gate_failures) == 4  # ... but the gate fails
    reason = out.rows[(out.rows["method"] == "bptt") & (out.rows["seed"] == "0")].iloc[0]["basis"]
    assert reason == "done in A, failed in B: RuntimeError: boom"


def test_a_metric_measured_on_one_side_only_is_reported() -> None:
    a = frame(row("bptt", 0, test_accuracy=0.8, spike_rate=0.1))
    b = frame(row("bptt", 0, test_accuracy=0.8, spike_rate=float("nan")))
    out = compare_runs(a, b)
    assert pick(out, "bptt", "spike_rate")["verdict"] == "missing in B"
    assert len(out.gate_failures) == 1
    assert "peak_device_bytes" not in set(out.rows["metric"])  # NaN on both sides: not a metric of these runs


def test_cells_are_matched_on_their_parameters() -> None:
    a = frame(row("bptt", 0, test_accuracy=0.8), row("tbptt", 0, test_accuracy=0.6))
    b_row = row("tbptt", 0, test_accuracy=0.1)
    b_row["method_params"] = '{"K": 4}'  # another variant: not the same cell
    b = frame(row("bptt", 0, test_accuracy=0.8), b_row)
    out = compare_runs(a, b)
    assert set(out.one_sided["verdict"]) == {"missing in A", "missing in B"}
    assert out.regressions.empty and pick(out, "bptt", "test_accuracy")["verdict"] == "unchanged"


def test_a_method_run_under_its_paper_preset_is_another_cell() -> None:
    a = frame(row("ottt", 0, test_accuracy=0.8))  # written before runs had protocol/preset columns
    paper = row("ottt", 0, test_accuracy=0.5)
    paper.update(protocol="paper", preset="paper")
    same = row("ottt", 0, test_accuracy=0.8)
    same.update(protocol="harmonized", preset="")
    out = compare_runs(a, frame(same, paper))
    assert list(out.one_sided["verdict"]) == ["missing in A"]
    assert out.regressions.empty and pick(out, "ottt", "test_accuracy")["verdict"] == "unchanged"


def test_different_suites_compare_only_their_common_cells() -> None:
    a = run(row("bptt", 0, test_accuracy=0.8), row("tbptt", 0, test_accuracy=0.7), suite="one")
    b = run(row("bptt", 0, test_accuracy=0.8), row("ottt", 0, test_accuracy=0.7), row("ottt", 1), suite="two")
    out = compare_runs(a, b)
    assert out.common_cells == 1 and out.gate_failures.empty
    assert out.notes == [
        "different suites (one vs two): only the 1 cells both ran are compared (1 only in A, 2 only in B are left out)"
    ]
    assert set(out.rows["method"]) == {"bptt"}
    with pytest.raises(CompareError, match="no cell in common"):
        compare_runs(a, run(row("ottt", 0), suite="two"))


def test_timings_are_not_compared_across_machines_unless_asked() -> None:
    a = run(row("bptt", 0, test_accuracy=0.8, step_time_ms=10.0), device="cpu", processor="Intel")
    b = run(row("bptt", 0, test_accuracy=0.8, step_time_ms=20.0), device="cpu", processor="AMD")
    out = compare_runs(a, b)
    time = pick(out, "bptt", "step_time_ms")
    assert time["verdict"] == "not comparable" and "processor: Intel vs AMD" in time["basis"]
    assert out.regressions.empty and "time columns are not compared" in out.notes[0]
    assert pick(out, "bptt", "test_accuracy")["verdict"] == "unchanged"  # scores still are
    forced = compare_runs(a, b, NoiseModel(timings_across_machines=True))
    time = pick(forced, "bptt", "step_time_ms")
    assert time["verdict"] == "regression" and time["basis"].startswith("across machines; ")
    same = run(row("bptt", 0, step_time_ms=10.0), device="cpu", processor="Intel")
    assert not compare_runs(a, same).notes  # keys only one manifest records are not a difference


def write_run(path: Path, rows: list[dict[str, Any]], columns: tuple[Column, ...] = ()) -> Path:
    run_dir = RunDirectory(path)
    run_dir.write_manifest(
        {
            "run_id": path.name,
            "suite": "s",
            "description": "",
            "environment": {"device": "cpu"},
            "plugins": {},
            "columns": {c.name: c.to_dict() for c in columns},
        },
        "",
    )
    for r in rows:
        run_dir.write_cell(CellRecord({}, r, []))
    run_dir.aggregate()
    return path


def test_metric_plugin_columns_come_from_the_manifest(tmp_path: Path) -> None:
    """An external metric declares its direction; compare needs no name of it."""
    synapses = Column("synapse_ops", False, "ops", "count", "an external plugin's metric")
    a = write_run(
        tmp_path / "a", [row("bptt", s, test_accuracy=0.8, synapse_ops=100.0, legacy=1.0) for s in (0, 1)], (synapses,)
    )
    b = write_run(
        tmp_path / "b", [row("bptt", s, test_accuracy=0.8, synapse_ops=150.0, legacy=2.0) for s in (0, 1)], (synapses,)
    )
    out = compare_runs(a, b)
    ops = pick(out, "bptt", "synapse_ops")
    assert ops["verdict"] == "regression" and ops["unit"] == "ops" and ops["kind"] == "count"
    assert pick(out, "bptt", "legacy")["verdict"] == "changed"  # undeclared (an older run): no direction
    assert list(out.regressions["metric"]) == ["synapse_ops"]
    assert pick(out, "bptt", "test_accuracy")["n_a"] == 2


def test_output_formats_and_a_summary_that_fits_the_terminal() -> None:
    long = "tbptt_with_a_very_long_name_indeed[K=4,every=2,other=long-value]"
    a = frame(
        row("bptt", 0, test_accuracy=0.8, step_time_ms=10.0),
        row(long, 0, test_accuracy=0.8),
        row("tbptt", 0, test_accuracy=0.8),
    )
    b = frame(
        row("bptt", 0, test_accuracy=0.7, step_time_ms=5.0),
        row(long, 0, test_accuracy=0.6),
        row("tbptt", 0, status="failed"),
    )
    out = compare_runs(a, b)
    text = summary(out, width=70)
    assert all(len(line) <= 70 for line in text.splitlines())
    lines = text.splitlines()
    assert (
        lines.index("done or measured on one side only (count as regressions):")
        < lines.index("regressions:")
        < lines.index("improvements:")
    )
    assert any("test_accuracy  0.8 → 0.7  -12.5%" in line for line in lines)
    assert "… 1 more" in summary(out, width=200, max_lines=1)
    table = pd.read_csv(io.StringIO(render(out, "csv")))
    assert len(table) == len(out.rows) and {"verdict", "basis", "mean_a", "rel_delta"} <= set(table.columns)
    data = json.loads(render(out, "json"))
    assert data["counts"]["regression"] == 2 and data["rows"][0]["verdict"]
    markdown = render(out, "md").splitlines()
    assert markdown[0] == f"> {out.notes[0]}" and "timing verdict(s)" in out.notes[0]  # bptt's step time
    assert markdown[2] == "| cell | metric | A | B | change | verdict | basis |" and len(markdown) == 4 + len(out.rows)
    assert "regression" in render(out, "table")


# -- within-cell spread: the noise floor of time columns ------------------------------------------------------
def timed(method: str, seed: int, step: float, iqr: float | None, T: int = 8) -> dict[str, Any]:
    spread = {} if iqr is None else {"step_time_iqr_ms": iqr}
    return row(method, seed, T, test_accuracy=0.8, step_time_ms=step, **spread)


def test_a_rerun_on_a_loaded_machine_within_the_cells_spread_is_not_a_regression() -> None:
    """+40 % step time, but each cell's step times spread wider than that: noise, not a regression."""
    a = frame(timed("bptt", 0, 10.0, iqr=3.0), timed("tbptt", 0, 8.0, iqr=2.0))
    b = frame(timed("bptt", 0, 14.0, iqr=2.5), timed("tbptt", 0, 5.0, iqr=1.0))
    out = compare_runs(a, b)
    assert out.gate_failures.empty and out.improvements.empty
    step = pick(out, "bptt", "step_time_ms")
    # |Δ| = 4 > 10 % of 10 but < 2 × max(3.0, 2.5) = 6
    assert step["verdict"] == "unchanged" and step["threshold"] == pytest.approx(6.0)
    assert step["basis"] == "1 seed: |Δ| > 10% (time tolerance) and > 2×IQR = 6"
    assert (step["spread_a"], step["spread_b"]) == (3.0, 2.5)
    assert pick(out, "tbptt", "step_time_ms")["verdict"] == "unchanged"  # -37.5 %, |Δ| = 3 < 2 × 2.0
    assert "step_time_iqr_ms" not in set(out.rows["metric"])  # the noise estimate is not judged itself
    assert not out.notes  # no timing verdict, no warning about them
    # without the floor (k_iqr = 0) the same rerun is a regression and an improvement
    bare = compare_runs(a, b, NoiseModel(iqr_factor=0.0))
    assert list(bare.regressions["method"]) == ["bptt"] and list(bare.improvements["method"]) == ["tbptt"]
    assert pick(bare, "bptt", "step_time_ms")["basis"] == "1 seed: |Δ| > 10% (time tolerance)"


def test_a_slowdown_beyond_the_cells_spread_is_a_regression_with_a_warning() -> None:
    a = frame(timed("bptt", 0, 10.0, iqr=0.5), timed("tbptt", 0, 10.0, iqr=0.5))
    b = frame(timed("bptt", 0, 30.0, iqr=1.5), timed("tbptt", 0, 10.4, iqr=0.4))
    out = compare_runs(a, b)
    step = pick(out, "bptt", "step_time_ms")
    assert step["verdict"] == "regression" and step["rel_delta"] == pytest.approx(2.0)
    assert step["basis"] == "1 seed: |Δ| > 10% (time tolerance) and > 2×IQR = 3"
    assert pick(out, "tbptt", "step_time_ms")["verdict"] == "unchanged"  # +4 %: within the tolerance
    assert len(out.notes) == 1 and out.notes[0].startswith("1 timing verdict(s) hold only if both runs had the ")
    assert "--tolerance time=60%" in out.notes[0]
    assert "note: 1 timing verdict(s)" in summary(out, width=200)
    # a larger k_iqr raises the floor: 15 × max(0.5, 1.5) = 22.5 > |Δ| = 20
    assert compare_runs(a, b, NoiseModel(iqr_factor=15.0)).regressions.empty
    with pytest.raises(CompareError, match="IQR factor must be a number >= 0"):
        NoiseModel(iqr_factor=math.nan)


def test_runs_without_the_spread_column_compare_with_the_tolerance_alone(tmp_path: Path) -> None:
    """An older run (no IQR column, a manifest without ``columns``) or a NaN IQR on one side."""
    old_rows = [
        row("bptt", 0, test_accuracy=0.8, step_time_ms=10.0),
        row("tbptt", 0, test_accuracy=0.8, step_time_ms=10.0),
    ]
    old = tmp_path / "old"
    RunDirectory(old).write_manifest({"run_id": "old", "suite": "s", "environment": {"device": "cpu"}}, "")
    for r in old_rows:
        RunDirectory(old).write_cell(CellRecord({}, r, []))
    RunDirectory(old).aggregate()
    new = frame(timed("bptt", 0, 12.0, iqr=5.0), timed("tbptt", 0, 12.0, iqr=math.nan))
    out = compare_runs(old, new)
    for method in ("bptt", "tbptt"):
        step = pick(out, method, "step_time_ms")
        assert step["verdict"] == "regression" and step["basis"] == "1 seed: |Δ| > 10% (time tolerance)"
        assert step["threshold"] == pytest.approx(1.0)
    half = compare_runs(frame(timed("bptt", 0, 10.0, iqr=math.nan)), frame(timed("bptt", 0, 12.0, iqr=5.0)))
    assert pick(half, "bptt", "step_time_ms")["verdict"] == "regression"  # an IQR on one side only is no floor


def test_the_floor_holds_with_several_seeds_too() -> None:
    """Both seeds of a run share the machine's load: a tight seed spread does not make +30 % real."""
    a = frame(timed("bptt", 0, 10.0, iqr=3.0), timed("bptt", 1, 10.2, iqr=4.0))
    b = frame(timed("bptt", 0, 13.0, iqr=3.0), timed("bptt", 1, 13.2, iqr=3.0))
    step = pick(compare_runs(a, b), "bptt", "step_time_ms")
    assert step["verdict"] == "unchanged" and step["spread_a"] == pytest.approx(3.5)
    assert step["basis"].startswith("2 seeds each: |Δ| > 2·s_p = 0.283 and |Δ| > 10% (time tolerance) and > 2×IQR = 7")


def test_a_plugin_time_column_declares_its_spread_in_the_manifest(tmp_path: Path) -> None:
    """The floor is the columns' mechanism, not the step time's special case."""
    latency = Column("latency_ms", False, "ms", "time", "median inference latency", spread="latency_iqr_ms")
    iqr = Column("latency_iqr_ms", None, "ms", "time", "interquartile range of the latency")
    a = write_run(tmp_path / "a", [row("bptt", 0, latency_ms=10.0, latency_iqr_ms=4.0)], (latency, iqr))
    b = write_run(tmp_path / "b", [row("bptt", 0, latency_ms=15.0, latency_iqr_ms=4.0)], (latency, iqr))
    out = compare_runs(a, b)
    assert pick(out, "bptt", "latency_ms")["basis"] == "1 seed: |Δ| > 10% (time tolerance) and > 2×IQR = 8"
    assert pick(out, "bptt", "latency_ms")["verdict"] == "unchanged"
    assert "latency_iqr_ms" not in set(out.rows["metric"])


def test_columns_round_trip_their_spread_and_older_manifests_get_the_core_one() -> None:
    core = columns_by_name(CORE_COLUMNS)
    assert core["step_time_ms"].spread == "step_time_iqr_ms"
    assert all(core[c.spread].unit == c.unit for c in CORE_COLUMNS if c.spread)  # same unit, and declared
    latency = Column("latency_ms", False, "ms", "time", "", spread="latency_iqr_ms")
    assert Column.from_dict(latency.to_dict()) == latency
    assert core["forward_ms"].spread == "forward_iqr_ms" and core["optimizer_ms"].spread == "optimizer_iqr_ms"
    assert (
        "spread" not in core["spike_rate"].to_dict() and Column.from_dict(core["spike_rate"].to_dict()).spread is None
    )
    old_entry = {k: v for k, v in core["step_time_ms"].to_dict().items() if k != "spread"}
    recorded = columns_from_manifest(
        {
            "columns": {
                "step_time_ms": {**old_entry, "doc": "older doc"},
                "forward_ms": {**core["forward_ms"].to_dict(), "spread": None},
                "latency_ms": latency.to_dict(),
            }
        }
    )
    assert recorded["step_time_ms"].spread == "step_time_iqr_ms" and recorded["step_time_ms"].doc == "older doc"
    assert recorded["forward_ms"].spread is None and recorded["latency_ms"] == latency
    assert columns_from_manifest({})["step_time_ms"] == core["step_time_ms"]
    with pytest.raises(ValueError, match="spread must be None or the name of another column"):
        Column("x_ms", False, "ms", "time", spread="x_ms")
