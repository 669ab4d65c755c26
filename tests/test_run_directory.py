"""The run directory: fingerprint and resume, lock, self-healing tables, file modes and errors."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import warnings
from pathlib import Path

import pandas as pd
import pytest
from plugin_fixtures import TINY_SUITE

from snnarena.errors import OutputLocationError, RunDirectoryError
from snnarena.results import (
    RESULT_COLUMNS,
    CellRecord,
    RebuiltTablesWarning,
    RunDirectory,
    atomic_write_text,
    check_writable,
    load_run,
)
from snnarena.runner import run_suite
from snnarena.suite import parse_suite

OK = TINY_SUITE.format(behaviours='["ok", "raise"]')
ONE = "method=bptt,seed=0"


def run(host, text, tmp_path, **kwargs):
    kwargs.setdefault("only", ONE)
    return run_suite(
        parse_suite(text, host, "tiny.toml"), host, results_root=tmp_path / "results", device="cpu", **kwargs
    )


def fake_record(cell_id: str, status: str = "done", traceback: str = "") -> CellRecord:
    row = {"cell_id": cell_id, "run_id": "r", "status": status, "method": "bptt", "test_accuracy": 0.5}
    return CellRecord({}, row, [{"epoch": 1, "step": 3, "train_loss": 1.0}], traceback)


def new_run_dir(tmp_path: Path, name: str = "run") -> RunDirectory:
    run_dir = RunDirectory(tmp_path / name)
    run_dir.write_manifest({"run_id": name, "suite": "s"}, "")
    return run_dir


# -- 1. fingerprint ----------------------------------------------------------------------------
def test_resume_refuses_an_edited_suite_naming_what_differs(arena_host, tmp_path):
    first = run(arena_host, OK, tmp_path)
    edited = OK.replace("lr = 0.03", "lr = 0.5").replace("epochs = 2", "epochs = 1")
    with pytest.raises(RunDirectoryError) as err:
        run(arena_host, edited, tmp_path, resume=first.run_dir)
    message = str(err.value)
    assert "train.optimizer.lr: 0.03 -> 0.5" in message and "train.epochs: 2 -> 1" in message
    assert "--force" in message and "leave out --resume" in message
    assert len(list((first.run_dir / "cells").glob("*.json"))) == 1  # nothing ran


def test_resume_refuses_other_plugin_versions(arena_host, tmp_path):
    first = run(arena_host, OK, tmp_path)
    manifest = json.loads((first.run_dir / "manifest.json").read_text())
    assert manifest["fingerprint"]["plugins"]["snnarena"]
    manifest["fingerprint"]["plugins"]["snnarena"] = "0.0.1"
    manifest["fingerprint"]["torch"] = "1.0"
    (first.run_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RunDirectoryError, match=r"plugin snnarena: \"0.0.1\" -> \"") as err:
        run(arena_host, OK, tmp_path, resume=first.run_dir)
    assert 'torch: "1.0" -> ' in str(err.value)


def test_an_unchanged_resume_is_recorded(arena_host, tmp_path):
    first = run(arena_host, OK, tmp_path)
    # comments and the description change no result
    unchanged = OK.replace("throwaway", "other").replace("[grid]", "# a comment\n[grid]")
    run(arena_host, unchanged, tmp_path, resume=first.run_dir, only="seed=0")
    resumes = json.loads((first.run_dir / "manifest.json").read_text())["resumes"]
    assert [r["forced"] for r in resumes] == [False] and resumes[0]["only"] == "seed=0"


def test_force_resumes_and_keeps_the_history(arena_host, tmp_path):
    first = run(arena_host, OK, tmp_path)
    edited = OK.replace("lr = 0.03", "lr = 0.05")
    again = run(arena_host, edited, tmp_path, resume=first.run_dir, force=True)
    assert again.ran == 1 and sorted(again.results["lr"]) == [0.03, 0.05]  # the old cell stays, told apart by lr
    manifest = json.loads((first.run_dir / "manifest.json").read_text())
    (resume,) = manifest["resumes"]
    assert resume["forced"] and resume["differences"] == ["train.optimizer.lr: 0.03 -> 0.05"]
    assert manifest["fingerprint"]["suite"]["train"]["optimizer"]["lr"] == 0.05
    assert resume["previous_fingerprint"]["suite"]["train"]["optimizer"]["lr"] == 0.03
    assert (first.run_dir / "suite.toml").read_text() == edited
    assert (first.run_dir / resume["previous_suite"]).read_text() == OK
    # the forced fingerprint is the run's now: resuming with the edited suite needs no force
    run(arena_host, edited, tmp_path, resume=first.run_dir)


# -- 2. training settings columns --------------------------------------------------------------
def test_training_settings_follow_batch_size():
    at = RESULT_COLUMNS.index("batch_size")
    assert RESULT_COLUMNS[at + 1 : at + 9] == (
        "optimizer",
        "lr",
        "weight_decay",
        "weight_decay_on",
        "momentum",
        "lr_schedule",
        "budget_epochs",
        "budget_steps",
    )


# -- 3. lock and self-healing tables ------------------------------------------------------------
def test_a_locked_run_directory_is_refused_naming_the_holder(arena_host, tmp_path):
    first = run(arena_host, OK, tmp_path)
    with RunDirectory(first.run_dir).lock():
        with pytest.raises(RunDirectoryError, match=rf"in use by another snnarena run: pid {os.getpid()} on host"):
            run(arena_host, OK, tmp_path, resume=first.run_dir)
    run(arena_host, OK, tmp_path, resume=first.run_dir)  # free again


def test_the_aggregate_is_a_function_of_the_cell_files(tmp_path):
    a = new_run_dir(tmp_path)
    b = RunDirectory(a.path)  # a second writer of the same directory (another process)
    a.write_cell(fake_record("aaa"))
    assert len(a.aggregate()) == 1
    b.write_cell(fake_record("bbb"))
    assert list(a.aggregate()["cell_id"]) == ["aaa", "bbb"]  # a re-reads the folder, not only its cache
    (a.cells_dir / "bbb.json").unlink()
    assert list(a.aggregate()["cell_id"]) == ["aaa"]


def test_curve_points_are_identified_by_their_cell(tmp_path):
    run_dir = new_run_dir(tmp_path)
    run_dir.write_cell(fake_record("aaa"))  # its curve point carries no ids (an interrupted cell's)
    run_dir.aggregate()
    _, curves = load_run(run_dir.path)
    assert list(curves["cell_id"]) == ["aaa"] and list(curves["run_id"]) == ["r"]


@pytest.mark.parametrize("damage", ["missing", "corrupted", "a row short", "older", "edited"])
def test_load_run_rebuilds_damaged_tables(tmp_path, damage):
    run_dir = new_run_dir(tmp_path)
    run_dir.write_cell(fake_record("aaa"))
    run_dir.aggregate()
    if damage == "missing":
        run_dir.results_path.unlink()
    elif damage == "corrupted":
        run_dir.results_path.write_bytes(b"not parquet at all")
    elif damage == "a row short":
        RunDirectory(run_dir.path).write_cell(fake_record("bbb"))
        os.utime(run_dir.cells_dir / "bbb.json", ns=(0, 0))  # not newer: only the digest tells
    elif damage == "edited":  # same cells, a number changed by another tool: the digest is gone
        table = pd.read_parquet(run_dir.results_path)
        table["status"] = "failed"
        table.to_parquet(run_dir.results_path, index=False)
    else:
        record = fake_record("aaa", status="failed")
        atomic_write_text(run_dir.cells_dir / "aaa.json", record.to_json())
    with pytest.warns(RebuiltTablesWarning, match="rebuilt the tables from the .* cell files .written back"):
        results, curves = load_run(run_dir.path)
    expected = ["aaa", "bbb"] if damage == "a row short" else ["aaa"]
    assert list(results["cell_id"]) == expected and len(curves) == len(expected)
    assert list(results["status"]) == (["failed"] if damage == "older" else ["done"] * len(expected))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(load_run(run_dir.path)[0]["cell_id"]) == expected  # healed: read as is now


def test_tables_are_never_emptied_when_the_cell_files_are_gone(tmp_path):
    run_dir = new_run_dir(tmp_path)
    run_dir.write_cell(fake_record("aaa"))
    run_dir.aggregate()
    shutil.rmtree(run_dir.cells_dir)
    with pytest.warns(RebuiltTablesWarning, match="cells/ folder is missing; the tables are read as they are"):
        results, _ = load_run(run_dir.path)
    assert list(results["cell_id"]) == ["aaa"]
    assert list(pd.read_parquet(run_dir.results_path)["cell_id"]) == ["aaa"]  # not overwritten
    run_dir.results_path.unlink()
    with pytest.raises(RunDirectoryError, match="missing, and the tables cannot be read either"):
        load_run(run_dir.path)


def test_load_run_of_a_locked_directory_reads_without_writing(tmp_path):
    run_dir = new_run_dir(tmp_path)
    run_dir.write_cell(fake_record("aaa"))
    with run_dir.lock():
        with pytest.warns(RebuiltTablesWarning, match="not written back"):
            results, _ = load_run(run_dir.path)
    assert list(results["cell_id"]) == ["aaa"] and not run_dir.results_path.exists()


# -- 4. traceback files -------------------------------------------------------------------------
def test_a_failed_cell_has_a_traceback_file(arena_host, tmp_path):
    outcome = run(arena_host, OK, tmp_path, only="seed=0")
    assert outcome.failed == 1
    run_dir = RunDirectory(outcome.run_dir)
    failed = outcome.results[outcome.results["status"] == "failed"].iloc[0]
    text = run_dir.traceback_path(failed["cell_id"]).read_text()
    assert "Traceback" in text and "flaky exploded on purpose" in text
    done = outcome.results[outcome.results["status"] == "done"].iloc[0]
    assert not run_dir.traceback_path(done["cell_id"]).exists()
    # a cell that later succeeds loses its traceback file
    run_dir.write_cell(fake_record(failed["cell_id"]))
    assert not run_dir.traceback_path(failed["cell_id"]).exists()


# -- 6. file modes and stale temporary files ------------------------------------------------------
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_umask_mode(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        run_dir = new_run_dir(tmp_path)
        run_dir.write_cell(fake_record("aaa", status="failed", traceback="Traceback ..."))
        run_dir.aggregate()
    finally:
        os.umask(previous)
    files = [
        run_dir.manifest_path,
        run_dir.cells_dir / "aaa.json",
        run_dir.traceback_path("aaa"),
        run_dir.results_path,
        run_dir.curves_path,
        run_dir.path / "results.csv",
        run_dir.path / "suite.toml",
    ]
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {oct(mode)}


def test_stale_temporary_files_are_removed_when_a_run_resumes(arena_host, tmp_path):
    first = run(arena_host, OK, tmp_path)
    leftovers = [first.run_dir / ".results.parquet.abc123.tmp", first.run_dir / "cells" / ".x.json.def456.tmp"]
    for path in leftovers:
        path.write_text("half written")
    run(arena_host, OK, tmp_path, resume=first.run_dir)
    assert not any(p.exists() for p in leftovers)


# -- 7. output locations ------------------------------------------------------------------------
def test_check_writable(tmp_path):
    check_writable(tmp_path / "new" / "folder")
    assert (tmp_path / "new" / "folder").is_dir() and not list((tmp_path / "new" / "folder").iterdir())
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(OutputLocationError, match=r"a-file: exists and is not a folder"):
        check_writable(blocker)
    with pytest.raises(OutputLocationError, match=r"a-file/results: cannot write there \(Not a directory\)"):
        check_writable(blocker / "results")


def test_an_unwritable_results_root_fails_before_any_cell(arena_host, tmp_path):
    (tmp_path / "results").write_text("")  # a file where the results folder should be
    started = []
    with pytest.raises(OutputLocationError, match="results"):
        run(arena_host, OK, tmp_path, on_start=lambda run_dir, todo: started.append(todo))
    assert started == []


def test_a_full_disk_never_damages_a_finished_cell(tmp_path, monkeypatch):
    run_dir = new_run_dir(tmp_path)
    run_dir.write_cell(fake_record("aaa"))
    before = (run_dir.cells_dir / "aaa.json").read_text()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputLocationError, match=r"aaa.json: cannot write there \(No space left on device\); free"):
        run_dir.write_cell(fake_record("aaa", status="failed"))
    monkeypatch.undo()
    assert (run_dir.cells_dir / "aaa.json").read_text() == before
    assert not list(run_dir.cells_dir.glob(".*.tmp"))


# -- 8. damaged cell files ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"spec": {}, "row": {"cell_id": "x\xff"}}', "not UTF-8 text: byte 0xff at offset 34"),
        (b"[1, 2, 3]", "expected a JSON object, got a JSON list"),
        (b'{"spec": {}, "row": {"cell_id": "x"}, "cur', "Unterminated string"),
        (b'{"spec": {}, "row": {}, "curves": []}', "its row has no cell_id"),
    ],
)
def test_a_damaged_cell_file_is_named_with_what_to_do(tmp_path, content, problem):
    run_dir = new_run_dir(tmp_path)
    (run_dir.cells_dir / "x.json").write_bytes(content)
    with pytest.raises(RunDirectoryError) as err:
        RunDirectory(run_dir.path).records()
    message = str(err.value)
    assert message.startswith(f"{run_dir.cells_dir / 'x.json'}: damaged cell record (")
    assert problem in message and f"delete this file and run again with --resume {run_dir.path}" in message


def test_a_damaged_or_missing_manifest_is_named(tmp_path):
    with pytest.raises(RunDirectoryError, match="is not a snnarena run directory"):
        load_run(tmp_path)
    with pytest.raises(FileNotFoundError):  # still what older callers catch
        load_run(tmp_path)
    (tmp_path / "manifest.json").write_text("[]")
    with pytest.raises(RunDirectoryError, match=r"manifest.json: damaged manifest \(a JSON list"):
        load_run(tmp_path)


# -- 9. measured columns in the manifest ----------------------------------------------------------
def test_the_manifest_records_the_measured_columns(arena_host, tmp_path):
    text = OK.replace('description = "throwaway suite for tests"', 'description = "x"\nmetrics = ["weight_norm"]')
    outcome = run(arena_host, text, tmp_path)
    columns = json.loads((outcome.run_dir / "manifest.json").read_text())["columns"]
    assert columns["test_accuracy"]["higher_is_better"] is True
    assert columns["step_time_ms"]["unit"] == "ms" and columns["step_time_ms"]["kind"] == "time"
    assert columns["weight_norm"] == {
        "name": "weight_norm",
        "higher_is_better": False,
        "unit": "",
        "kind": "score",
        "doc": "sum of squared weights",
    }
