"""build_report on small synthetic run directories: self-contained, escaped, figures, combined runs."""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from snnarena.columns import Column
from snnarena.report import build_report
from snnarena.report.tables import loglog_slope, pareto_mask
from snnarena.results import CellRecord, RunDirectory

EVIL = "<script>alert(1)</script>"
LAYERS = ("stages.0.synapse.weight", "readout.weight")


def cell(
    run_id: str,
    method: str,
    T: int,
    seed: int = 0,
    status: str = "done",
    reason: str = "",
    device: str = "cpu",
    params: dict[str, Any] | None = None,
    **metrics: Any,
) -> CellRecord:
    params = params if params is not None else {}
    cell_id = hashlib.sha1(f"{method}-{json.dumps(params, sort_keys=True)}-{T}-{seed}".encode()).hexdigest()[:12]
    row: dict[str, Any] = {
        "run_id": run_id,
        "suite": "synthetic",
        "cell_id": cell_id,
        "label": f"{method} | mlp/lif | digits | T={T}",
        "method": method,
        "method_params": json.dumps(params, sort_keys=True),
        "model": "mlp",
        "model_params": '{"hidden": [8]}',
        "dataset": "digits",
        "dataset_params": "{}",
        "neuron": "lif",
        "neuron_params": "{}",
        "surrogate": "atan",
        "loss": "per_step",
        "T": T,
        "seed": seed,
        "status": status,
        "reason": reason,
        "device": device,
        "memory_class": "O(T)" if method == "bptt" else "O(1)",
        "peak_device_bytes": math.nan,
    }
    curves: list[dict[str, Any]] = []
    if status == "done":
        memory = 1000.0 * T if method == "bptt" else 1000.0
        row.update(
            test_accuracy=0.5 + 0.01 * T + (0.05 if method == "bptt" else 0.0),
            val_accuracy=0.6,
            select="last",
            selected_epoch=2,
            train_loss=1.0,
            step_time_ms=2.0 * T,
            forward_ms=1.0 * T,
            backward_ms=0.8 * T,
            optimizer_ms=0.2 * T,
            peak_activation_bytes=memory,
            grad_cosine_bptt=1.0 if method == "bptt" else 0.9,
            grad_cosine_layers=json.dumps({k: 1.0 if method == "bptt" else 0.8 for k in LAYERS}),
            spike_rate=0.1,
            metric_errors="",
            Effective_ACs=123.0 * T,
        )
        curves = [
            {
                "run_id": run_id,
                "cell_id": cell_id,
                "method": method,
                "model": "mlp",
                "dataset": "digits",
                "T": T,
                "seed": seed,
                "epoch": e,
                "step": 10 * e,
                "train_loss": 2.0 / e,
                "val_accuracy": 0.3 * e,
                "elapsed_s": float(e),
            }
            for e in (1, 2)
        ]
    row.update(metrics)
    traceback = "Traceback (most recent call last):\nValueError: boom" if status == "failed" else ""
    return CellRecord({}, row, curves, traceback)


def write_run(
    root: Path, run_id: str, records: list[CellRecord], device: str = "cpu", columns: tuple[Column, ...] = ()
) -> Path:
    run = RunDirectory(root / "synthetic" / run_id)
    manifest = {
        "run_id": run_id,
        "suite": "synthetic",
        "description": f"a test suite {EVIL}",
        "columns": {c.name: c.to_dict() for c in columns},
        "environment": {"device": device, "torch": "2.x", "python": "3.11"},
        "plugins": {
            "loaded": {
                "bptt": {
                    "distribution": "snnarena",
                    "version": "0.1.0",
                    "source": "entry point",
                    "registered": ["method:bptt"],
                }
            },
            "failures": [{"plugin": "broken", "error": f"ImportError: {EVIL}"}],
        },
    }
    run.write_manifest(manifest, "")
    for record in records:
        run.write_cell(record)
    run.aggregate()
    return run.path


def main_records(run_id: str, device: str = "cpu") -> list[CellRecord]:
    records = []
    for T in (4, 8):
        records.append(cell(run_id, "bptt", T, device=device))
        records.append(cell(run_id, "tbptt", T, device=device, params={"K": 2}))
        records.append(cell(run_id, EVIL, T, device=device))
    records.append(cell(run_id, "tbptt", 4, status="failed", reason=f"RuntimeError: {EVIL}", params={"K": 9}))
    records.append(cell(run_id, "ottt", 4, status="skipped", reason="ottt does not support BatchNorm layers"))
    records.append(cell(run_id, "bptt", 16, metric_errors=json.dumps({"footprint": f"ValueError: {EVIL}"})))
    return records


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    run = write_run(root, "runA", main_records("runA"))
    (run / "profile" / "cell1" / "tb").mkdir(parents=True)
    (run / "profile" / "cell1" / "operators.csv").write_text("key,count\naten::mm,1\n")
    (run / "profile" / "cell1" / "tb" / "w.1.pt.trace.json").write_text('{"traceEvents": []}')
    suite_level = run.parent / "profile" / main_records("runA")[0].row["cell_id"]  # `snnarena profile` default
    suite_level.mkdir(parents=True)
    (suite_level / "profile.json").write_text("{}")
    (run.parent / "profile" / "not-a-cell-of-this-run").mkdir()
    (run.parent / "profile" / "not-a-cell-of-this-run" / "other.csv").write_text("")
    return run, build_report([run], root / "report")


def test_layout_and_self_contained_html(report: tuple[Path, Path]) -> None:
    run, index = report
    assert index.name == "index.html" and index.parent.name == "runA" and index.parent.parent.name == "synthetic"
    page = index.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, flags=re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert page.count('src="data:image/png;base64,') >= 5


def test_untrusted_strings_are_escaped(report: tuple[Path, Path]) -> None:
    _, index = report
    page = index.read_text(encoding="utf-8")
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert EVIL not in page
    assert escaped in page  # method name, failure reason, metric error, plugin failure, description
    markdown = (index.parent / "report.md").read_text(encoding="utf-8")
    assert EVIL not in markdown and "&lt;script&gt;" in markdown


def test_tables_failures_and_links(report: tuple[Path, Path]) -> None:
    run, index = report
    page = index.read_text(encoding="utf-8")
    for text in (
        'accuracy (%) <span class="arrow">↑</span>',
        'step time (ms) <span class="arrow">↓</span>',
        "× memory vs BPTT",
        "ottt does not support BatchNorm layers",
        "ValueError: boom",
        "Effective_ACs",
        "operators.csv",
        "Environment and provenance",
        "Metric errors",
    ):
        assert text in page, text
    assert 'class="num best"' in page
    results_table = re.search(r'id="setting-1".*?</table>', page, flags=re.S)
    assert results_table is not None and "device memory" not in results_table.group(0)  # NaN on CPU: no column
    href = re.search(r'href="([^"]*operators\.csv)"', page)
    assert (
        href is not None
        and (index.parent / href.group(1)).resolve() == (run / "profile" / "cell1" / "operators.csv").resolve()
    )
    assert "profile.json" in page and "other.csv" not in page
    markdown = (index.parent / "report.md").read_text(encoding="utf-8")
    assert "| method | T | seeds | memory class | accuracy (%) ↑ |" in markdown
    assert "| tbptt\\[K=2\\] | 4 | 1 | O(1) | 54.0 |" in markdown
    assert "- **tbptt\\[K=2\\] parameters**: K=2" in markdown
    assert "(figures/" in markdown
    assert (index.parent / "summary.csv").is_file()


def test_figures_exported_as_png_and_svg(report: tuple[Path, Path]) -> None:
    _, index = report
    figures = index.parent / "figures"
    pngs = sorted(p.stem for p in figures.glob("*.png"))
    svgs = sorted(p.stem for p in figures.glob("*.svg"))
    assert pngs == svgs
    for kind in (
        "ranking",
        "accuracy-vs-memory",
        "accuracy-vs-time",
        "memory-vs-T",
        "time-vs-T",
        "gradient-fidelity",
        "learning-curves",
    ):
        assert any(kind in name for name in pngs), kind
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", name) for name in pngs)
    assert (figures / f"{pngs[0]}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (figures / f"{svgs[0]}.svg").read_text(encoding="utf-8")


def test_combined_runs(tmp_path: Path) -> None:
    a = write_run(tmp_path, "cpuRun", [cell("cpuRun", m, T) for m in ("bptt", "tbptt") for T in (4, 8)])
    b = write_run(
        tmp_path,
        "gpuRun",
        [cell("gpuRun", m, T, device="cuda", peak_device_bytes=5e6 * T) for m in ("bptt", "tbptt") for T in (4, 8)],
        device="cuda",
    )
    index = build_report([a, b], tmp_path / "out")
    assert index.parent == tmp_path / "out" / "synthetic" / "cpuRun+gpuRun"
    page = index.read_text(encoding="utf-8")
    assert "bptt @ cpu" in page and "tbptt @ cuda" in page
    results_table = re.search(r'id="setting-1".*?</table>', page, flags=re.S)
    assert results_table is not None and "device memory" in results_table.group(0)


def test_only_failed_cells_and_a_single_T(tmp_path: Path) -> None:
    failed = write_run(
        tmp_path,
        "failedRun",
        [
            cell("failedRun", "bptt", 4, status="failed", reason="CUDA out of memory"),
            cell("failedRun", "tbptt", 4, status="skipped", reason="needs per_step loss"),
        ],
    )
    page = build_report([failed], tmp_path / "out").read_text(encoding="utf-8")
    assert "No cell finished" in page and "CUDA out of memory" in page
    single = write_run(tmp_path, "oneT", [cell("oneT", m, 8) for m in ("bptt", "tbptt")])
    index = build_report([single], tmp_path / "out")
    assert "the scaling plots need at least two values of T" in index.read_text(encoding="utf-8")
    assert not list((index.parent / "figures").glob("*-vs-T-*"))


def test_pareto_and_slope_helpers() -> None:
    import numpy as np

    cost = np.array([1.0, 2.0, 2.0, 3.0, np.nan])
    gain = np.array([0.5, 0.7, 0.6, 0.7, 0.9])
    assert pareto_mask(cost, gain).tolist() == [True, True, False, False, False]
    assert loglog_slope([4, 8, 16], [40, 80, 160]) == pytest.approx(1.0)
    assert loglog_slope([4, 8, 16], [7, 7, 7]) == pytest.approx(0.0)
    assert math.isnan(loglog_slope([4], [1.0]))


def test_nan_metrics_and_no_curves(tmp_path: Path) -> None:
    records = []
    for method in ("bptt", "tbptt"):
        for T in (4, 8):
            record = cell("nanRun", method, T)
            for key in ("test_accuracy", "step_time_ms", "peak_activation_bytes", "grad_cosine_bptt", "Effective_ACs"):
                record.row[key] = math.nan
            record.row["grad_cosine_layers"] = ""
            record.curves = []
            records.append(record)
    page = build_report([write_run(tmp_path, "nanRun", records)], tmp_path / "out").read_text(encoding="utf-8")
    assert "No finite accuracy/memory/time values to plot." in page
    assert "No learning curves were recorded." in page
    assert "No per-layer gradient cosines were recorded" in page


def test_a_metric_plugin_column_gets_its_declared_direction_unit_and_meaning(tmp_path: Path) -> None:
    """Directions come from the manifest: the host knows no plugin column's name."""
    ops = Column("synapse_ops", False, "ops", "count", "synaptic operations per test sample")
    rate = Column("firing_share", None, "", "ratio", "share of neurons that fired")
    records = [
        cell("ext", m, T, synapse_ops=(10.0 if m == "bptt" else 4.0) * T, firing_share=0.25)
        for m in ("bptt", "tbptt")
        for T in (4, 8)
    ]
    page = build_report([write_run(tmp_path, "ext", records, columns=(ops, rate))], tmp_path / "out").read_text(
        encoding="utf-8"
    )
    efficiency = re.search(r"<h\d[^>]*>Efficiency metrics.*?</table>", page, flags=re.S)
    assert efficiency is not None
    table = efficiency.group(0)
    assert 'synapse_ops (ops) <span class="arrow">↓</span>' in table
    assert "<th>firing_share</th>" in table  # no direction: no arrow, never highlighted
    assert "synapse_ops: synaptic operations per test sample" in table
    best = re.findall(r'<tr><td>([^<]*)</td>(?:(?!</tr>).)*<td class="num best">(\d+)</td>', table)
    assert best == [("tbptt", "16"), ("tbptt", "32")]  # fewer operations is better, at each T
    assert "0.2500" in table  # a ratio column is shown as a share


def test_the_report_says_which_weights_the_test_scores_are_of(tmp_path: Path) -> None:
    best = [cell("bestRun", m, T, select="best_val", selected_epoch=1) for m in ("bptt", "tbptt") for T in (4, 8)]
    index = build_report([write_run(tmp_path, "bestRun", best)], tmp_path / "out")
    page = html.unescape(index.read_text(encoding="utf-8"))
    sentence = (
        "Test scores (read once per cell) follow train.select = 'best_val': the weights of the epoch with the "
        "best validation score (the highest accuracy, or the lowest MSE on regression tasks), the earliest on ties."
    )
    overview = re.search(r'id="overview".*?</section>', page, flags=re.S)
    assert overview is not None and sentence in overview.group(0)
    assert "Learning curves and val accuracy are on the validation split." in overview.group(0)
    caption = re.search(r'id="setting-1".*?<caption>(.*?)</caption>', page, flags=re.S)
    assert caption is not None and caption.group(1) == sentence  # each results table says it too
    assert "val accuracy (%)" in page and "training loss and validation accuracy per epoch" in page
    markdown = (index.parent / "report.md").read_text(encoding="utf-8")
    assert "train.select = 'best\\_val'" in markdown


def test_runs_before_the_select_option_count_as_last_and_mixed_rules_are_counted(tmp_path: Path) -> None:
    old = []
    for T in (4, 8):
        record = cell("oldRun", "bptt", T)
        for key in ("select", "selected_epoch", "val_accuracy"):
            del record.row[key]
        old.append(record)
    page = html.unescape(build_report([write_run(tmp_path, "oldRun", old)], tmp_path / "out").read_text("utf-8"))
    assert "follow train.select = 'last': the weights after the last epoch." in page
    assert "val accuracy (%)" not in page  # nothing recorded: no column
    mixed = [cell("mixed", "bptt", 4, select="best_val"), cell("mixed", "bptt", 8), cell("mixed", "tbptt", 8)]
    page = html.unescape(build_report([write_run(tmp_path, "mixed", mixed)], tmp_path / "out").read_text("utf-8"))
    assert (
        "follow train.select = 'last' in 2 cells (the weights after the last epoch) and 'best_val' in 1 cell "
        "(the weights of the epoch with the best validation score (the highest accuracy, or the lowest MSE on "
        "regression tasks), the earliest on ties)."
    ) in page


def test_regression_cells_are_ranked_by_their_test_mse() -> None:
    import pandas as pd

    from snnarena.report.tables import rankings

    nan = math.nan
    summary = pd.DataFrame(
        {
            "setting": ["digits · mlp", "digits · mlp", "adding · rsnn", "adding · rsnn"],
            "T": [8, 8, 16, 16],
            "method": ["bptt", "tbptt", "bptt", "tbptt"],
            "variant": ["bptt", "tbptt", "bptt", "tbptt"],
            "test_accuracy_mean": [0.9, 0.8, nan, nan],
            "test_mse_mean": [nan, nan, 0.30, 0.10],  # tbptt is better on the regression task
            "step_time_ms_mean": [1.0, 2.0, 1.0, 2.0],
            "peak_activation_bytes_mean": [2.0, 1.0, 2.0, 1.0],
            "grad_cosine_bptt_mean": [1.0, 0.9, 1.0, 0.9],
        }
    )
    ranks = rankings(summary).set_index("variant")
    assert ranks.loc["bptt", "task score"] == 1.5 and ranks.loc["tbptt", "task score"] == 1.5  # 1 and 2 per block
    assert list(ranks["blocks"]) == [2, 2]
