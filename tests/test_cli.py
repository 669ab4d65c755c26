"""The ``snnarena`` command in-process: options, exit codes, failure listings, refusals, compare, pipes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from plugin_fixtures import TINY_SUITE

from snnarena.cli import DEFAULT_MAX_CELLS, main
from snnarena.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from snnarena.results import CellRecord, RunDirectory

ARENA_PLUGIN = """
import snnarena
from plugin_fixtures import Broken, Flaky, TinyBlobs, WeightNorm


@snnarena.hookimpl
def register_datasets(register):
    register(TinyBlobs)


@snnarena.hookimpl
def register_gradient_methods(register):
    register(Flaky)


@snnarena.hookimpl
def register_metrics(register):
    register(WeightNorm)
    register(Broken)
"""
MISSPELLED_PLUGIN = """
import snnarena


@snnarena.hookimpl
def register_gradient_method(register):
    pass
"""


@pytest.fixture
def plugins(tmp_path: Path) -> Path:
    """A plugin folder with the test plugins (tiny dataset, flaky method, metrics)."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "arena.py").write_text(ARENA_PLUGIN)
    return folder


def suite_file(tmp_path: Path, behaviours: str = '["raise"]', seeds: str = "[0]", lr: str = "0.03") -> Path:
    text = TINY_SUITE.format(behaviours=behaviours).replace("seeds = [0, 1]", f"seeds = {seeds}")
    path = tmp_path / "tiny.toml"
    path.write_text(text.replace("lr = 0.03", f"lr = {lr}"))
    return path


def run_args(tmp_path: Path, plugins: Path, *extra: str) -> list[str]:
    return [
        "run",
        str(tmp_path / "tiny.toml"),
        "--plugins-dir",
        str(plugins),
        "--results",
        str(tmp_path / "results"),
        "--device",
        "cpu",
        "--no-report",
        *extra,
    ]


def run_dirs(tmp_path: Path) -> list[Path]:
    root = tmp_path / "results" / "tiny"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


# -- global options, help, list -----------------------------------------------------------------------
def test_plugins_dir_is_accepted_before_and_after_the_subcommand(tmp_path: Path, plugins: Path, capsys: Any) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "misspelled.py").write_text(MISSPELLED_PLUGIN)
    assert main(["list", "--kind", "dataset", "--plugins-dir", str(plugins)]) == EXIT_OK
    assert "tiny_blobs" in capsys.readouterr().out
    assert main(["--plugins-dir", str(plugins), "list", "--plugins-dir", str(other), "--json"]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert "tiny_blobs" in {p["name"] for p in data["plugins"]}  # from the folder given before the subcommand
    assert {w["plugin"] for w in data["warnings"]} == {"local:misspelled"}  # and from the one after it


def test_list_shows_plugin_failures_and_warnings(tmp_path: Path, capsys: Any) -> None:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "misspelled.py").write_text(MISSPELLED_PLUGIN)
    (folder / "broken.py").write_text("raise ImportError('no such thing')\n")
    assert main(["list", "--kind", "method", "--plugins-dir", str(folder)]) == EXIT_OK
    out = capsys.readouterr().out
    failures, warnings = out.split("plugins that failed to load:")[1].split("plugin warnings:")
    assert "local:broken: ImportError: no such thing" in failures
    assert "local:misspelled: " in warnings and "register_gradient_method" in warnings


def test_help_documents_the_exit_codes(capsys: Any) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "exit codes:" in out
    for code in ("0    success", "1    a cell failed", "2    the input is wrong", "130  interrupted", "141"):
        assert code in out, code


# -- user errors: one line, exit 2 -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "no-such-suite.toml"], "no such file"),
        (["report", "{tmp}/nowhere"], "nowhere"),
        (["compare", "{tmp}/a", "{tmp}/b"], "{tmp}/a"),
        (["run", "{tmp}/tiny.toml", "--only", "methd=bptt", "--plugins-dir", "{tmp}/plugins"], "unknown key 'methd'"),
        (["profile", "{tmp}/tiny.toml", "--only", "seed=0", "--plugins-dir", "{tmp}/plugins"], "selects 2 cells"),
    ],
)
def test_user_errors_are_one_message_without_traceback(
    tmp_path: Path, plugins: Path, capsys: Any, args: list[str], message: str
) -> None:
    suite_file(tmp_path, behaviours='["ok"]')
    assert main([a.format(tmp=tmp_path) for a in args]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message.format(tmp=tmp_path) in err
    assert "Traceback" not in err


def test_compare_reports_a_bad_tolerance(tmp_path: Path, capsys: Any) -> None:
    a = write_run(tmp_path / "a", [row("bptt", 0)])
    assert main(["compare", str(a), str(a), "--tolerance", "time=fast"]) == EXIT_USAGE
    assert "--tolerance: 'fast' is not a tolerance" in capsys.readouterr().err


# -- run ---------------------------------------------------------------------------------------------------
def test_failed_cells_exit_1_and_are_listed_with_their_traceback_file(
    tmp_path: Path, plugins: Path, capsys: Any
) -> None:
    suite_file(tmp_path)
    assert main(run_args(tmp_path, plugins)) == EXIT_FAILED
    captured = capsys.readouterr()
    assert "suite tiny: 2 cells" in captured.out
    (run_dir,) = run_dirs(tmp_path)
    record = next(r for r in RunDirectory(run_dir).records() if r.row["status"] == "failed")
    lines = captured.err.splitlines()
    at = lines.index("1 cell(s) failed:")
    label, reason, traceback = lines[at + 1 : at + 4]
    assert label.strip() == record.row["label"] and "flaky[behaviour=raise]" in label
    assert reason.strip() == "RuntimeError: flaky exploded on purpose"
    path = Path(traceback.strip().removeprefix("traceback: "))
    assert path == RunDirectory(run_dir).traceback_path(record.row["cell_id"])
    assert "flaky exploded on purpose" in path.read_text()


def test_a_clean_run_exits_0_and_an_interrupted_one_130(
    tmp_path: Path, plugins: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plugin_fixtures import Flaky

    suite_file(tmp_path, behaviours='["ok"]')
    assert main(run_args(tmp_path, plugins, "--only", "method=bptt")) == EXIT_OK

    def interrupt(self: Any, *args: Any) -> float:
        raise KeyboardInterrupt

    monkeypatch.setattr(Flaky, "accumulate_gradients", interrupt)
    assert main(run_args(tmp_path, plugins, "--only", "method=flaky")) == EXIT_INTERRUPTED
    assert "continue with --resume" in capsys.readouterr().err


def test_an_unwritable_report_folder_fails_before_training(tmp_path: Path, plugins: Path, capsys: Any) -> None:
    suite_file(tmp_path, behaviours='["ok"]')
    blocked = tmp_path / "report-is-a-file"
    blocked.write_text("")
    args = run_args(tmp_path, plugins, "--report-dir", str(blocked))
    args.remove("--no-report")
    assert main(args) == EXIT_USAGE
    assert str(blocked) in capsys.readouterr().err
    assert run_dirs(tmp_path) == []  # no cell trained


def test_a_huge_grid_needs_yes(tmp_path: Path, plugins: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    suite_file(tmp_path, behaviours='["ok", "raise", "nan", "skip"]', seeds="[0, 1, 2]")
    (plugins / "misspelled.py").write_text(MISSPELLED_PLUGIN)
    assert main(run_args(tmp_path, plugins, "--max-cells", "14")) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "warning: plugin local:misspelled: " in err  # plugin warnings come first, on stderr
    assert "the suite has 15 cells, more than --max-cells 14" in err and "--yes" in err
    assert run_dirs(tmp_path) == []
    assert DEFAULT_MAX_CELLS == 10_000
    # with --yes the run goes ahead (stopped at once here: this is about the refusal)
    import snnarena.runner

    def no_run(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(snnarena.runner, "run_suite", no_run)
    assert main(run_args(tmp_path, plugins, "--max-cells", "14", "--yes")) == EXIT_INTERRUPTED


def test_resume_of_a_changed_suite_needs_force(tmp_path: Path, plugins: Path, capsys: Any) -> None:
    suite_file(tmp_path, behaviours='["ok"]')
    assert main(run_args(tmp_path, plugins, "--only", "method=bptt")) == EXIT_OK
    (run_dir,) = run_dirs(tmp_path)
    suite_file(tmp_path, behaviours='["ok"]', lr="0.05")
    resume = run_args(tmp_path, plugins, "--resume", str(run_dir), "--only", "method=bptt")
    capsys.readouterr()
    assert main(resume) == EXIT_USAGE
    assert "--force" in capsys.readouterr().err
    assert main([*resume, "--force"]) == EXIT_OK


def test_profile_still_works(tmp_path: Path, plugins: Path, capsys: Any) -> None:
    suite_file(tmp_path, behaviours='["ok"]')
    args = [
        "profile",
        str(tmp_path / "tiny.toml"),
        "--only",
        "method=bptt",
        "--plugins-dir",
        str(plugins),
        "--results",
        str(tmp_path / "results"),
        "--device",
        "cpu",
        "--steps",
        "1",
    ]
    assert main(args) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("profiled bptt") and "operators_csv: " in out


# -- compare ------------------------------------------------------------------------------------------------
def row(method: str, seed: int, status: str = "done", **metrics: Any) -> dict[str, Any]:
    return {
        "run_id": "r",
        "suite": "s",
        "cell_id": f"{method}-{seed}",
        "method": method,
        "method_params": "{}",
        "label": f"{method} | mlp/lif | digits | T=8 | seed={seed}",
        "model": "mlp",
        "model_params": "{}",
        "dataset": "digits",
        "dataset_params": "{}",
        "neuron": "lif",
        "neuron_params": "{}",
        "surrogate": "atan",
        "loss": "per_step",
        "T": 8,
        "seed": seed,
        "status": status,
        "reason": "boom" if status == "failed" else "",
        **({"test_accuracy": 0.8, "step_time_ms": 10.0} if status == "done" else {}),
        **metrics,
    }


def write_run(path: Path, rows: list[dict[str, Any]]) -> Path:
    run = RunDirectory(path)
    run.write_manifest({"run_id": path.name, "suite": "s", "environment": {"device": "cpu"}}, "")
    for r in rows:
        run.write_cell(CellRecord({}, r, []))
    run.aggregate()
    return path


def test_compare_gate_summary_and_formats(tmp_path: Path, capsys: Any) -> None:
    a = write_run(tmp_path / "a", [row("bptt", 0), row("tbptt", 0)])
    rerun = write_run(tmp_path / "rerun", [row("bptt", 0, step_time_ms=10.5), row("tbptt", 0, step_time_ms=9.7)])
    broken = write_run(tmp_path / "broken", [row("bptt", 0, status="failed")])
    assert main(["compare", str(a), str(rerun), "--fail-on-regression"]) == EXIT_OK  # jitter is not a regression
    assert "0 regression(s)" in capsys.readouterr().out
    assert main(["compare", str(a), str(broken), "--fail-on-regression"]) == EXIT_FAILED
    captured = capsys.readouterr()
    assert "done in A, failed in B: boom" in captured.out and "missing in B" not in captured.out.split("\n")[0]
    assert "--fail-on-regression: 2" in captured.err  # bptt failed, tbptt missing
    assert main(["compare", str(a), str(broken)]) == EXIT_OK  # without the gate: a report, not a failure
    capsys.readouterr()
    assert main(["compare", str(a), str(rerun), "--format", "json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["counts"] == {"unchanged": 4}
    assert main(["compare", str(a), str(rerun), "--all"]) == EXIT_OK
    assert capsys.readouterr().out.splitlines()[0].split() == ["cell", "metric", "A", "B", "change", "verdict", "basis"]
    assert main(["compare", str(a), str(rerun), "--tolerance", "time=1%", "--fail-on-regression"]) == EXIT_FAILED


# -- pipes ---------------------------------------------------------------------------------------------------
def test_a_closed_stdout_pipe_ends_the_command_quietly() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "snnarena", "list", "--json", "-v"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # like `| head` that has read enough, before the command writes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_progress_shows_each_tasks_own_score():
    from snnarena.cli import _score_text

    assert _score_text({"test_accuracy": 0.95312, "test_mse": float("nan")}) == "acc=0.9531"
    assert _score_text({"test_accuracy": float("nan"), "test_mse": 0.16444}) == "mse=0.1644"
    assert _score_text({"test_accuracy": None}) == ""
