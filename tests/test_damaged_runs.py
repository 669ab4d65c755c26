"""A battery of damaged run directories and data files, met through the real ``snnarena`` command.

One real run (two finished cells) is made once per module; each case damages a copy of it and
runs ``report``, ``compare`` or ``run --resume`` on the copy. The documented outcomes (README,
"Runs that survive faults" and "The results table"): a damaged or missing ``results.parquet`` or
``curves.parquet`` is rebuilt from the cell files with a warning (exit 0, same tables as before the
damage); a damaged manifest or cell file, a locked directory or damaged dataset files are one
message naming the path and what to do (exit 2). Never a traceback, and no finished cell file
changes.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from snnarena.cli import main
from snnarena.errors import EXIT_OK, EXIT_USAGE
from snnarena.results import RebuiltTablesWarning, RunDirectory, load_run

PLUGIN = """
import snnarena
from plugin_fixtures import TinyBlobs


@snnarena.hookimpl
def register_datasets(register):
    register(TinyBlobs)
"""

SUITE = """
name = "tiny"

[train]
steps = 1
batch_size = 8
fidelity = false
timing_warmup = 0
optimizer = { name = "adam", lr = 0.03 }

[grid]
seeds = [0]
T = [2]

[[methods]]
name = "bptt"

[[methods]]
name = "tbptt"
params = { K = 1 }

[[models]]
name = "mlp"
params = { hidden = [8] }

[[datasets]]
name = "tiny_blobs"
params = { n = 24 }
"""


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass(frozen=True)
class Finished:
    """The run made once for the module: its directory, plugin folder, and its tables as read."""

    run: Path
    plugins: Path
    results: pd.DataFrame
    curves: pd.DataFrame


def invoke(capsys: Any, *args: str | Path) -> Result:
    try:
        code = main([str(a) for a in args])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Finished:
    root = tmp_path_factory.mktemp("finished")
    plugins = root / "plugins"
    plugins.mkdir()
    (plugins / "arena.py").write_text(PLUGIN)
    (root / "tiny.toml").write_text(SUITE)
    args = ["run", root / "tiny.toml", "--plugins-dir", plugins, "--results", root / "results", "--device", "cpu"]
    assert main([str(a) for a in [*args, "--no-report"]]) == EXIT_OK
    (run,) = (root / "results" / "tiny").iterdir()
    results, curves = load_run(run)
    assert list(results["status"]) == ["done", "done"] and len(curves) > 0
    return Finished(run, plugins, results, curves)


@pytest.fixture
def run(finished: Finished, tmp_path: Path) -> Path:
    """A copy of the finished run (files and modification times), to damage."""
    copy = tmp_path / "results" / "tiny" / finished.run.name
    shutil.copytree(finished.run, copy)
    return copy


@pytest.fixture
def cli(capsys: Any) -> Callable[..., Result]:
    return lambda *args: invoke(capsys, *args)


@pytest.fixture(autouse=True)
def original_stays_intact(finished: Finished) -> Iterator[None]:
    """No case may change the module's finished run (compare reads it as run A)."""
    before = snapshot(finished.run)
    yield
    assert snapshot(finished.run) == before


def snapshot(run: Path, *, but: Path | None = None) -> dict[str, bytes]:
    """The bytes of every cell file (records and tracebacks) except ``but``."""
    return {p.name: p.read_bytes() for p in sorted((run / "cells").glob("[!.]*")) if p.is_file() and p != but}


def cell_files(run: Path) -> list[Path]:
    return sorted((run / "cells").glob("*.json"))


def resume_args(finished: Finished, tmp_path: Path, run: Path) -> list[str | Path]:
    suite = tmp_path / "tiny.toml"
    suite.write_text(SUITE)
    return [
        "run",
        suite,
        "--resume",
        run,
        "--plugins-dir",
        finished.plugins,
        "--results",
        tmp_path / "results",
        "--device",
        "cpu",
        "--no-report",
    ]


def assert_clean_error(result: Result, *fragments: str) -> None:
    assert result.code == EXIT_USAGE, (result.code, result.out, result.err)
    assert "Traceback" not in result.out + result.err, result.err
    for fragment in fragments:
        assert fragment in result.err, (fragment, result.err)


def test_the_healthy_copy_reports_compares_and_resumes(
    finished: Finished, run: Path, tmp_path: Path, cli: Callable[..., Result], recwarn: Any
) -> None:
    """The control: an undamaged copy needs no rebuild and no cell re-runs."""
    before = snapshot(run)
    assert cli("compare", finished.run, run).code == EXIT_OK
    resumed = cli(*resume_args(finished, tmp_path, run))
    assert resumed.code == EXIT_OK, resumed.err
    assert "2 cell(s) already finished" in resumed.out
    assert not [w for w in recwarn if issubclass(w.category, RebuiltTablesWarning)]
    assert snapshot(run) == before


# -- 1. damaged tables: rebuilt from the cell files, with a warning ----------------------------
def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def one_row_short(run: Path) -> None:
    """results.parquet holding only the first cell (an aggregate written before the second cell)."""
    frame = pd.read_parquet(run / "results.parquet")
    frame.iloc[:1].to_parquet(run / "results.parquet", index=False)
    os.utime(run / "results.parquet", ns=(1, 1))


def newer_cell_file(run: Path) -> None:
    """A cell file written after the tables (bytes unchanged, modification time later)."""
    cell = cell_files(run)[0]
    stamp = (run / "results.parquet").stat().st_mtime_ns + 10**9
    os.utime(cell, ns=(stamp, stamp))


def other_cells(run: Path) -> None:
    """A results.parquet as fresh and as long as the cell files, but of other cells."""
    frame = pd.read_parquet(run / "results.parquet")
    frame["cell_id"] = ["0" * 12, "1" * 12]
    frame["test_accuracy"] = 1.0
    frame.to_parquet(run / "results.parquet", index=False)


TABLE_DAMAGE: dict[str, Callable[[Path], object]] = {
    "results-missing": lambda run: (run / "results.parquet").unlink(),
    "results-garbage": lambda run: (run / "results.parquet").write_bytes(b"not parquet at all" * 10),
    "results-truncated": lambda run: truncate(run / "results.parquet"),
    "results-empty": lambda run: (run / "results.parquet").write_bytes(b""),
    "results-one-row-short": one_row_short,
    "results-older-than-a-cell": newer_cell_file,
    "curves-missing": lambda run: (run / "curves.parquet").unlink(),
    "curves-garbage": lambda run: (run / "curves.parquet").write_bytes(b"PAR1" + b"\0" * 64 + b"PAR1"),
    "curves-truncated": lambda run: truncate(run / "curves.parquet"),
}


def assert_tables_as_before(finished: Finished, run: Path) -> None:
    results, curves = load_run(run)  # no warning now: written back
    pd.testing.assert_frame_equal(results, finished.results)
    pd.testing.assert_frame_equal(curves, finished.curves)


#: ``report`` builds every figure (seconds each): it meets one damage of each kind, ``compare`` all of them.
REPORT_DAMAGE = ["results-garbage", "results-one-row-short", "curves-truncated"]


@pytest.mark.parametrize("damage", REPORT_DAMAGE)
def test_report_rebuilds_damaged_tables(
    finished: Finished, run: Path, tmp_path: Path, cli: Callable[..., Result], damage: str
) -> None:
    before = snapshot(run)
    TABLE_DAMAGE[damage](run)
    with pytest.warns(RebuiltTablesWarning, match="rebuilt the tables from the 2 cell files"):
        result = cli("report", run, "--out", tmp_path / "report")
    assert result.code == EXIT_OK and "Traceback" not in result.err, result.err
    assert Path(result.out.split("report: ")[1].split("\n")[0]).is_file()
    assert snapshot(run) == before
    assert_tables_as_before(finished, run)


@pytest.mark.parametrize("damage", list(TABLE_DAMAGE))
def test_compare_rebuilds_damaged_tables(
    finished: Finished, run: Path, cli: Callable[..., Result], damage: str
) -> None:
    before = snapshot(run)
    TABLE_DAMAGE[damage](run)
    with pytest.warns(RebuiltTablesWarning, match="rebuilt the tables"):
        result = cli("compare", finished.run, run, "--format", "json", "--fail-on-regression")
    assert result.code == EXIT_OK and "Traceback" not in result.err, result.err
    counts = json.loads(result.out)["counts"]
    assert set(counts) == {"unchanged"}, counts  # the rebuilt run is the run
    assert snapshot(run) == before
    assert_tables_as_before(finished, run)


def test_a_table_of_other_cells_is_rebuilt(finished: Finished, run: Path, cli: Callable[..., Result]) -> None:
    other_cells(run)
    with pytest.warns(RebuiltTablesWarning):
        result = cli("compare", finished.run, run, "--format", "json")
    assert result.code == EXIT_OK
    assert_tables_as_before(finished, run)


def test_a_deleted_cell_file_is_left_out_with_a_warning(
    finished: Finished, run: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    """Deleting a damaged cell file is what its message says to do: the tables follow the files."""
    first, second = cell_files(run)
    second.unlink()
    with pytest.warns(RebuiltTablesWarning, match="was not built from the cell files now in"):
        result = cli("compare", finished.run, run)
    assert result.code == EXIT_OK, result.err
    assert list(load_run(run)[0]["cell_id"]) == [first.stem]


# -- 2. damaged manifest: exit 2 naming it -----------------------------------------------------
def replace_with_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def command_args(command: str, finished: Finished, tmp_path: Path, run: Path) -> list[str | Path]:
    """``report``, ``compare`` (the intact run as A) or ``run --resume`` of ``run``."""
    if command == "report":
        return ["report", run, "--out", tmp_path / "report"]
    if command == "compare":
        return ["compare", finished.run, run]
    return resume_args(finished, tmp_path, run)


MANIFEST_DAMAGE: dict[str, tuple[Callable[[Path], object], str]] = {
    "missing": (lambda m: m.unlink(), "not a snnarena run directory (no manifest.json)"),
    "truncated": (truncate, "damaged manifest"),
    "json-list": (lambda m: m.write_text("[1, 2]"), "damaged manifest (a JSON list, not an object)"),
    "non-utf8": (lambda m: m.write_bytes(b'{"run_id": "caf\xe9"}'), "damaged manifest"),
    "empty": (lambda m: m.write_bytes(b""), "damaged manifest"),
    "a-folder": (replace_with_folder, "not a snnarena run directory"),
}


@pytest.mark.parametrize("command", ["report", "compare", "resume"])
@pytest.mark.parametrize("damage", list(MANIFEST_DAMAGE))
def test_a_damaged_manifest_is_named(
    finished: Finished, run: Path, tmp_path: Path, cli: Callable[..., Result], damage: str, command: str
) -> None:
    before = snapshot(run)
    spoil, message = MANIFEST_DAMAGE[damage]
    spoil(run / "manifest.json")
    result = cli(*command_args(command, finished, tmp_path, run))
    assert_clean_error(result, str(run), message)
    assert snapshot(run) == before
    assert not (tmp_path / "report").exists()


# -- 3. damaged cell files: exit 2 naming the file, saying to delete it and resume --------------
CELL_DAMAGE: dict[str, tuple[Callable[[Path], object], str]] = {
    "truncated": (truncate, "damaged cell record"),
    "non-utf8": (lambda c: c.write_bytes(b'{"row": "\xff"}'), "not UTF-8 text: byte 0xff at offset 9"),
    "json-list": (lambda c: c.write_text("[]"), "expected a JSON object, got a JSON list"),
    "json-null": (lambda c: c.write_text("null"), "expected a JSON object"),
    "empty": (lambda c: c.write_bytes(b""), "damaged cell record"),
    "no-row": (lambda c: c.write_text('{"spec": {}, "curves": []}'), "missing row"),
    "row-without-id": (lambda c: c.write_text('{"spec": {}, "row": {}, "curves": []}'), "its row has no cell_id"),
    "curves-not-a-list": (
        lambda c: c.write_text(json.dumps({**json.loads(c.read_text()), "curves": 3})),
        "its curves are not a list of objects",
    ),
    "a-folder": (replace_with_folder, "damaged cell record"),
}


@pytest.mark.parametrize("command", ["report", "compare", "resume"])
@pytest.mark.parametrize("damage", list(CELL_DAMAGE))
def test_a_damaged_cell_file_is_named_with_what_to_do(
    finished: Finished, run: Path, tmp_path: Path, cli: Callable[..., Result], damage: str, command: str
) -> None:
    cell = cell_files(run)[1]
    spoil, message = CELL_DAMAGE[damage]
    spoil(cell)
    before = snapshot(run, but=cell)
    result = cli(*command_args(command, finished, tmp_path, run))
    assert_clean_error(result, str(cell), message, f"delete this file and run again with --resume {run}")
    assert snapshot(run, but=cell) == before
    assert len(list((run / "cells").iterdir())) == 2  # nothing ran


def test_deleting_the_damaged_cell_file_and_resuming_reruns_only_that_cell(
    finished: Finished, run: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    """The advice of the message works."""
    kept, damaged = cell_files(run)
    truncate(damaged)
    before = snapshot(run, but=damaged)
    assert cli(*resume_args(finished, tmp_path, run)).code == EXIT_USAGE
    damaged.unlink()
    result = cli(*resume_args(finished, tmp_path, run))
    assert result.code == EXIT_OK, result.err
    assert "1 cell(s) already finished" in result.out
    assert snapshot(run, but=damaged) == before and damaged.is_file()
    assert sorted(load_run(run)[0]["cell_id"]) == sorted(finished.results["cell_id"])


# -- 4. leftovers and locks ------------------------------------------------------------------
def test_stale_temporary_files_are_ignored_by_readers_and_removed_by_resume(
    finished: Finished, run: Path, tmp_path: Path, cli: Callable[..., Result], recwarn: Any
) -> None:
    left = [run / ".results.parquet.abc123.tmp", run / "cells" / f".{cell_files(run)[0].name}.def456.tmp"]
    for path in left:
        path.write_bytes(b"half a fi")
    before = snapshot(run)
    assert cli("compare", finished.run, run, "--fail-on-regression").code == EXIT_OK
    assert all(p.exists() for p in left)  # readers delete nothing
    result = cli(*resume_args(finished, tmp_path, run))
    assert result.code == EXIT_OK, result.err
    assert not any(p.exists() for p in left)
    assert snapshot(run) == before


def test_a_locked_run_directory_refuses_a_resume_naming_the_holder(
    finished: Finished, run: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    before = snapshot(run)
    with RunDirectory(run).lock():
        result = cli(*resume_args(finished, tmp_path, run))
    assert_clean_error(result, str(run), "is in use by another snnarena run", f"pid {os.getpid()}")
    assert snapshot(run) == before


def test_a_locked_run_directory_is_read_without_writing(
    finished: Finished, run: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    before = snapshot(run)
    (run / "results.parquet").unlink()
    with RunDirectory(run).lock():
        with pytest.warns(RebuiltTablesWarning, match="not written back: a running run holds the directory"):
            result = cli("report", run, "--out", tmp_path / "report")
        assert result.code == EXIT_OK, result.err
        assert not (run / "results.parquet").exists()
        with pytest.warns(RebuiltTablesWarning):
            assert cli("compare", finished.run, run, "--fail-on-regression").code == EXIT_OK
    assert snapshot(run) == before


def test_a_lock_file_left_by_a_dead_run_does_not_block(
    finished: Finished, run: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    (run / ".lock").write_text('{"pid": 999999, "host": "gone", "started": "yesterday", "command": "snnarena"}')
    before = snapshot(run)
    result = cli(*resume_args(finished, tmp_path, run))
    assert result.code == EXIT_OK, result.err
    assert snapshot(run) == before


def test_a_held_lock_with_a_garbled_file_is_still_refused(
    finished: Finished, run: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    with RunDirectory(run).lock():
        (run / ".lock").write_bytes(b"\xff\xfe garbage")
        result = cli(*resume_args(finished, tmp_path, run))
    assert_clean_error(result, str(run), "is in use by another snnarena run")


def test_a_missing_suite_copy_does_not_stop_a_resume(
    finished: Finished, run: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    (run / "suite.toml").unlink()
    before = snapshot(run)
    result = cli(*resume_args(finished, tmp_path, run))
    assert result.code == EXIT_OK, result.err
    assert snapshot(run) == before


# -- 5. missing and damaged MNIST files: refused at validation, before any training -------------
IMAGES, LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX: 0x00 0x00, type 0x08 (ubyte), ndim, big-endian uint32 sizes, then the bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder: Path, gz: bool = False) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    gen = np.random.default_rng(0)
    arrays = {
        IMAGES: gen.integers(0, 256, (20, 28, 28)),
        LABELS: np.arange(20) % 10,
        TEST_IMAGES: gen.integers(0, 256, (10, 28, 28)),
        TEST_LABELS: np.arange(10) % 10,
    }
    out = {}
    for name, array in arrays.items():
        path = folder / (name + (".gz" if gz else ""))
        data = idx_bytes(array)
        path.write_bytes(gzip.compress(data) if gz else data)
        out[name] = path
    return out


def mnist_suite(tmp_path: Path, root: Path) -> Path:
    text = SUITE.replace('name = "tiny_blobs"\nparams = { n = 24 }', f'name = "mnist"\nparams = {{ root = "{root}" }}')
    path = tmp_path / "mnist.toml"
    path.write_text(text.replace('name = "tiny"', 'name = "tiny-mnist"'))
    return path


def mnist_run(tmp_path: Path, root: Path, cli: Callable[..., Result], *extra: str) -> Result:
    suite = mnist_suite(tmp_path, root)
    return cli("run", suite, "--results", tmp_path / "results", "--device", "cpu", "--no-report", *extra)


def test_a_healthy_mnist_folder_runs(tmp_path: Path, cli: Callable[..., Result]) -> None:
    """The control: the files the damaged cases start from are valid, and the suite trains."""
    write_mnist(tmp_path / "data" / "MNIST" / "raw")
    result = mnist_run(tmp_path, tmp_path / "data", cli, "--only", "method=bptt")
    assert result.code == EXIT_OK, result.err


def spoil_magic(path: Path) -> None:
    path.write_bytes(b"\x12\x34\x56\x78" + path.read_bytes()[4:])


def compress_in_place(paths: Iterable[Path]) -> None:
    """Leave only the ``.gz`` archives, as downloaded from the official mirrors."""
    for path in paths:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()


def images_count(path: Path) -> None:
    """train images that say they hold 21 images, complete, beside 20 labels."""
    path.write_bytes(idx_bytes(np.zeros((21, 28, 28))))


MNIST_DAMAGE: dict[str, tuple[Callable[[dict[str, Path]], object], Callable[[dict[str, Path]], list[str]]]] = {
    "all-missing": (
        lambda f: shutil.rmtree(f[IMAGES].parent),
        lambda f: ["data files not found", str(f[IMAGES].parent), TEST_LABELS],
    ),
    "one-of-four-missing": (
        lambda f: f[TEST_LABELS].unlink(),
        lambda f: [f"missing {f[TEST_LABELS].parent}/{TEST_LABELS}. "],
    ),
    "only-the-gz-archives": (
        lambda f: compress_in_place(f.values()),
        lambda f: ["data files not found", f"gunzip -k {f[IMAGES].parent}/*.gz"],
    ),
    "truncated": (
        lambda f: truncate(f[TEST_IMAGES]),
        lambda f: [str(f[TEST_IMAGES]), "delete it and download it again"],
    ),
    "empty": (lambda f: f[LABELS].write_bytes(b""), lambda f: [str(f[LABELS])]),
    "bad-magic": (lambda f: spoil_magic(f[IMAGES]), lambda f: [str(f[IMAGES]), "not an IDX file"]),
    "images-and-labels-disagree": (
        lambda f: images_count(f[IMAGES]),
        lambda f: [str(f[IMAGES]), "21 images", str(f[LABELS]), "20 labels"],
    ),
    "labels-in-place-of-images": (
        lambda f: f[TEST_IMAGES].write_bytes(f[TEST_LABELS].read_bytes()),
        lambda f: [str(f[TEST_IMAGES]), "holds shape [10], expected [N, 28, 28]"],
    ),
}


@pytest.mark.parametrize("damage", list(MNIST_DAMAGE))
def test_damaged_mnist_files_are_refused_before_training(
    tmp_path: Path, cli: Callable[..., Result], damage: str
) -> None:
    files = write_mnist(tmp_path / "data" / "MNIST" / "raw")
    spoil, fragments = MNIST_DAMAGE[damage]
    spoil(files)
    result = mnist_run(tmp_path, tmp_path / "data", cli)
    assert_clean_error(result, str(tmp_path / "mnist.toml"), "datasets[0]", *fragments(files))
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("manifest.json"))


def test_a_truncated_plain_idx_file_is_refused(tmp_path: Path, cli: Callable[..., Result]) -> None:
    files = write_mnist(tmp_path / "data" / "MNIST" / "raw")
    truncate(files[IMAGES])
    result = mnist_run(tmp_path, tmp_path / "data", cli)
    assert_clean_error(result, str(files[IMAGES]), "truncated or damaged", "delete it and download it again")


def test_a_file_as_mnist_root_is_refused(tmp_path: Path, cli: Callable[..., Result]) -> None:
    root = tmp_path / "mnist.tar"
    root.write_bytes(b"\0" * 100)
    assert_clean_error(mnist_run(tmp_path, root, cli), str(root), "data files not found")
