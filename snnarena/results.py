"""The run directory: the single source of truth of a suite run.

Layout of ``results/<suite>/<run_id>/``::

    manifest.json        suite name, source, environment, fingerprint, measured columns, resumes
    suite.toml           the suite as it runs now (suite.previous-<n>.toml: before the n-th forced resume)
    .lock                flock-ed by the one process writing the directory (pid, host, start time)
    cells/<cell_id>.json one file per finished cell: {"spec", "row", "curves", "traceback"}
    cells/<cell_id>.traceback.txt  the full traceback of a failed cell
    results.parquet      one row per cell (+ results.csv), rebuilt after every cell
    curves.parquet       per-epoch learning curves of every cell

Every file is written to a temporary name, synced and renamed, so an interrupted run or a full
disk never leaves a half-written or damaged file; files get the mode the umask gives. The
aggregate tables are a pure function of the cell files: :func:`load_run` rebuilds them when they
are missing, older than a cell file, short of a cell, or unreadable.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import socket
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from snnarena.errors import OutputLocationError, RunDirectoryError
from snnarena.task import SCORE_NAMES

#: Gradient-fidelity columns a learning curve carries at the epochs ``train.fidelity_points`` picks
#: (NaN at the others).
FIDELITY_CURVE_COLUMNS: tuple[str, ...] = (
    "grad_cosine_bptt",
    "grad_cosine_readout",
    "grad_cosine_hidden_min",
    "grad_cosine_first_layer",
    "grad_norm_ratio_bptt",
)
#: Columns every results table has, in this order (the public contract users script against).
RESULT_COLUMNS: tuple[str, ...] = (
    "run_id",
    "suite",
    "cell_id",
    "label",
    "method",
    "method_params",
    "protocol",
    "preset",
    "tuned",
    "model",
    "model_params",
    "dataset",
    "dataset_params",
    "neuron",
    "neuron_params",
    "surrogate",
    "loss",
    "T",
    "seed",
    "status",
    "reason",
    *(f"{split}_{name}" for name in SCORE_NAMES for split in ("test", "val")),
    "train_loss",
    "step_time_ms",
    "step_time_iqr_ms",
    "forward_ms",
    "backward_ms",
    "optimizer_ms",
    "forward_iqr_ms",
    "backward_iqr_ms",
    "optimizer_iqr_ms",
    "peak_activation_bytes",
    "peak_device_bytes",
    "grad_cosine_bptt",
    "grad_cosine_readout",
    "grad_cosine_hidden_min",
    "grad_cosine_first_layer",
    "grad_norm_ratio_bptt",
    "grad_sign_agreement_bptt",
    "grad_cosine_layers",
    "spike_rate",
    "n_parameters",
    "extra_parameters",
    "memory_class",
    "train_steps",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "weight_decay",
    "weight_decay_on",
    "momentum",
    "lr_schedule",
    "budget_epochs",
    "budget_steps",
    "select",
    "selected_epoch",
    "device",
    "worker",
    "gpu",
    "torch_threads",
    "torch_version",
    "snnarena_version",
    "plugin",
    "plugin_version",
    "plugin_versions",
    "metric_errors",
    "metric_series",
    "duration_s",
)
CURVE_COLUMNS: tuple[str, ...] = (
    "run_id",
    "cell_id",
    "method",
    "model",
    "dataset",
    "T",
    "seed",
    "epoch",
    "step",
    "train_loss",
    *(f"val_{name}" for name in SCORE_NAMES),
    "elapsed_s",
    *FIDELITY_CURVE_COLUMNS,
)
#: Curve columns that identify the cell; always taken from the cell's row.
_CURVE_IDENTITY: tuple[str, ...] = ("run_id", "cell_id", "method", "model", "dataset", "T", "seed")
FINISHED = ("done", "skipped")
_RECORD_KEYS = ("spec", "row", "curves")


class RebuiltTablesWarning(UserWarning):
    """``results.parquet``/``curves.parquet`` did not match the cell files and were rebuilt from them."""


class NotARunDirectoryError(RunDirectoryError, FileNotFoundError):
    """A folder given as a run directory that has no ``manifest.json``."""


# -- writing files ----------------------------------------------------------------------------
def _file_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask: ``0o666 & ~umask``."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _location_problem(path: Path, err: OSError) -> str:
    """One line naming ``path``, what went wrong and what to do."""
    reason = err.strerror or str(err)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "free some space on that disk, or choose another location"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "make it writable, or choose another location"
    else:
        hint = "choose another location"
    return f"{path}: cannot write there ({reason}); {hint}"


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing ``path`` into an :class:`OutputLocationError`."""
    try:
        yield
    except OSError as err:
        raise OutputLocationError(_location_problem(path, err)) from err


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` a temporary file beside ``path``, give it the umask's mode, sync it and
    rename it over ``path``: ``path`` holds the old or the new content, never a mix."""
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
        try:
            write(tmp)
            os.chmod(tmp, _file_mode())
            _fsync(tmp)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`_atomic_write`); an ``OSError`` (read-only
    folder, full disk) becomes an :class:`OutputLocationError` naming the path."""
    _atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


#: Parquet schema-metadata key holding the digest of the cell files a table was built from.
CELLS_DIGEST_KEY = b"snnarena.cells_digest"


def _atomic_frame(frame: pd.DataFrame, path: Path, kind: str, cells_digest: str = "") -> None:
    if kind == "parquet":
        table = pa.Table.from_pandas(frame, preserve_index=False)
        metadata = {**(table.schema.metadata or {}), CELLS_DIGEST_KEY: cells_digest.encode()}
        _atomic_write(path, lambda tmp: pq.write_table(table.replace_schema_metadata(metadata), tmp))
    else:
        _atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def cells_digest(stamps: Iterable[tuple[str, tuple[int, int]]]) -> str:
    """A digest of cell files' names, modification times and sizes: tables record the digest of
    the files they were built from, so any change to the cell files shows them out of date."""
    text = "\n".join(f"{cell_id} {mtime} {size}" for cell_id, (mtime, size) in sorted(stamps))
    return hashlib.sha256(text.encode()).hexdigest()


def check_writable(path: Path) -> None:
    """Create the folder ``path`` if needed and prove that files can be written in it (a probe
    file is written and deleted); otherwise raise :class:`OutputLocationError` naming it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputLocationError(f"{path}: exists and is not a folder; choose another location")
    with _writing(path):
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".snnarena-probe.", suffix=".tmp")
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
            Path(probe).unlink(missing_ok=True)


def json_safe(value: Any) -> Any:
    """``value`` with NaN as ``None`` and infinities as ``"inf"``/``"-inf"`` (how JSON files hold them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# -- cell records -----------------------------------------------------------------------------
@dataclass
class CellRecord:
    """What one cell produced: its spec, its results row, its curves, and a traceback if failed."""

    spec: dict[str, Any]
    row: dict[str, Any]
    curves: list[dict[str, Any]]
    traceback: str = ""

    def to_json(self) -> str:
        return json.dumps(json_safe(self.__dict__), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CellRecord:
        """Parse a cell file's text; ``ValueError`` saying what is wrong when it is not a record."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got a JSON {type(data).__name__}")
        missing = [k for k in _RECORD_KEYS if k not in data]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        if not isinstance(data["row"], dict) or "cell_id" not in data["row"]:
            raise ValueError("its row has no cell_id")
        if not isinstance(data["curves"], list) or not all(isinstance(c, dict) for c in data["curves"]):
            raise ValueError("its curves are not a list of objects")
        return cls(data["spec"], data["row"], data["curves"], str(data.get("traceback") or ""))


def _read_record(path: Path, run_path: Path) -> CellRecord:
    """The record in the cell file ``path``, or a :class:`RunDirectoryError` saying how to recover."""
    try:
        return CellRecord.from_json(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        problem = f"not UTF-8 text: byte 0x{err.object[err.start]:02x} at offset {err.start}"
    except ValueError as err:  # json.JSONDecodeError included: a truncated file
        problem = str(err)
    except OSError as err:
        problem = err.strerror or str(err)
    raise RunDirectoryError(
        f"{path}: damaged cell record ({problem}); delete this file and run again with "
        f"--resume {run_path} to re-run that cell"
    )


# -- the lock ---------------------------------------------------------------------------------
class RunLock:
    """An exclusive ``flock`` on ``<run dir>/.lock``, held by the process writing the directory.

    The kernel releases it when the holder exits, however it exits, so a held lock always means
    a live holder. The file holds the holder's pid, host, start time and command (for messages).
    """

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self.path = path

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _holder(lock_path: Path) -> str:
    """Who holds a lock, as its file says: ``pid 12 on host h since ... (snnarena run ...)``."""
    try:
        info = json.loads(lock_path.read_text(encoding="utf-8"))
        return f"pid {info['pid']} on host {info['host']} since {info['started']} ({info['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not said who it is yet"


# -- the run directory ------------------------------------------------------------------------
class RunDirectory:
    """Reads and writes one run directory (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # cell records by id, and the (mtime_ns, size) of the file each was read from: a file
        # that changes on disk (another process, a resume) is read again
        self._records: dict[str, CellRecord] = {}
        self._stamps: dict[str, tuple[int, int]] = {}

    @property
    def cells_dir(self) -> Path:
        return self.path / "cells"

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    @property
    def results_path(self) -> Path:
        return self.path / "results.parquet"

    @property
    def curves_path(self) -> Path:
        return self.path / "curves.parquet"

    def cell_path(self, cell_id: str) -> Path:
        return self.cells_dir / f"{cell_id}.json"

    def traceback_path(self, cell_id: str) -> Path:
        """The file holding the full traceback of a failed cell (absent for other cells)."""
        return self.cells_dir / f"{cell_id}.traceback.txt"

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    # -- manifest and suite copies
    def write_manifest(self, manifest: dict[str, Any], suite_text: str) -> None:
        """Write ``manifest.json`` and the suite copy ``suite.toml`` (creating the directory)."""
        with _writing(self.cells_dir):
            self.cells_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / "suite.toml", suite_text)
        self.update_manifest(manifest)

    def update_manifest(self, manifest: dict[str, Any]) -> None:
        """Replace ``manifest.json`` (the suite copy stays as it is)."""
        atomic_write_text(self.manifest_path, json.dumps(json_safe(manifest), indent=1, sort_keys=True))

    def keep_suite_copy(self, name: str) -> None:
        """Copy ``suite.toml`` to ``name`` in the run directory (before it is replaced)."""
        current = self.path / "suite.toml"
        if current.is_file():
            atomic_write_text(self.path / name, current.read_text(encoding="utf-8"))

    def manifest(self) -> dict[str, Any]:
        """The parsed ``manifest.json``; :class:`RunDirectoryError` when missing or damaged."""
        if not self.exists():
            raise NotARunDirectoryError(
                f"{self.path} is not a snnarena run directory (no manifest.json); give the folder that "
                "`snnarena run` printed as its run directory"
            )
        try:
            data = json.loads(self.manifest_path.read_bytes().decode("utf-8"))
        except (OSError, ValueError) as err:
            data = err
        if not isinstance(data, dict):
            problem = data if isinstance(data, Exception) else f"a JSON {type(data).__name__}, not an object"
            raise RunDirectoryError(
                f"{self.manifest_path}: damaged manifest ({problem}); the cell files in {self.cells_dir} "
                "are intact: start a new run, or restore manifest.json from a backup"
            )
        return data

    # -- locking
    def lock(self) -> RunLock:
        """Take the directory's lock for a run (creating the directory), or raise
        :class:`RunDirectoryError` naming the process that holds it."""
        lock = self._acquire()
        if lock is None:
            raise RunDirectoryError(
                f"{self.path} is in use by another snnarena run: {_holder(self.lock_path)}; wait for it "
                "to finish, or start a new run (leave out --resume)"
            )
        return lock

    def try_lock(self) -> RunLock | None:
        """The lock if it is free and the directory writable, else ``None`` (for readers that
        would only like to write)."""
        try:
            return self._acquire()
        except OutputLocationError:
            return None

    def _acquire(self) -> RunLock | None:
        with _writing(self.lock_path):
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "python",
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        return RunLock(fd, self.lock_path)

    def remove_stale_temp_files(self) -> int:
        """Delete the ``.*.tmp`` files that killed writers left behind (call with the lock held);
        returns how many were deleted."""
        removed = 0
        for folder in (self.path, self.cells_dir):
            for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
                with _writing(tmp):
                    tmp.unlink(missing_ok=True)
                removed += 1
        return removed

    # -- cells
    def write_cell(self, record: CellRecord) -> None:
        """Write a cell's file (and its traceback file when it failed), replacing an earlier one."""
        cell_id = record.row["cell_id"]
        path = self.cell_path(cell_id)
        if record.traceback:
            atomic_write_text(self.traceback_path(cell_id), record.traceback)
        atomic_write_text(path, record.to_json())
        if not record.traceback:
            with _writing(self.traceback_path(cell_id)):
                self.traceback_path(cell_id).unlink(missing_ok=True)
        stat = path.stat()
        self._records[cell_id] = record
        self._stamps[cell_id] = (stat.st_mtime_ns, stat.st_size)

    def _cell_files(self) -> dict[str, tuple[Path, tuple[int, int]]]:
        """``{cell_id: (path, (mtime_ns, size))}`` of every cell file on disk now."""
        out: dict[str, tuple[Path, tuple[int, int]]] = {}
        for path in self.cells_dir.glob("*.json") if self.cells_dir.is_dir() else ():
            try:
                stat = path.stat()
            except FileNotFoundError:  # replaced or deleted since the listing
                continue
            out[path.stem] = (path, (stat.st_mtime_ns, stat.st_size))
        return out

    def records(self) -> list[CellRecord]:
        """Every cell record on disk, ordered by cell id (files changed since the last call are
        read again); a damaged file raises :class:`RunDirectoryError` with its path."""
        files = self._cell_files()
        for gone in set(self._records) - set(files):
            del self._records[gone], self._stamps[gone]
        for cell_id, (path, stamp) in files.items():
            if self._stamps.get(cell_id) != stamp:
                self._records[cell_id] = _read_record(path, self.path)
                self._stamps[cell_id] = stamp
        return [self._records[k] for k in sorted(self._records)]

    def finished_ids(self) -> set[str]:
        """Cells that need not run again: done or skipped (failed cells are retried)."""
        return {r.row["cell_id"] for r in self.records() if r.row.get("status") in FINISHED}

    # -- aggregate tables
    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(results, curves)`` built from the cell files on disk (and nothing else)."""
        records = self.records()
        return rows_frame(r.row for r in records), curves_frame(records)

    def write_frames(self, results: pd.DataFrame, curves: pd.DataFrame) -> None:
        """Write the tables, recording the digest of the cell files on disk now (call it with the
        directory locked, with frames just built from those files)."""
        digest = self.cells_digest()
        _atomic_frame(results, self.path / "results.parquet", "parquet", digest)
        _atomic_frame(results, self.path / "results.csv", "csv")
        _atomic_frame(curves, self.path / "curves.parquet", "parquet", digest)

    def cells_digest(self) -> str:
        """:func:`cells_digest` of the cell files on disk now."""
        return cells_digest((cell_id, stamp) for cell_id, (_, stamp) in self._cell_files().items())

    def aggregate(self) -> pd.DataFrame:
        """Rebuild ``results.parquet``/``.csv`` and ``curves.parquet`` from the cell files."""
        results, curves = self.frames()
        self.write_frames(results, curves)
        return results

    def stale_tables(self) -> str | None:
        """Why ``results.parquet``/``curves.parquet`` do not reflect the cell files, or ``None``.

        Each table records the digest of the cell files it was built from (names, modification
        times, sizes); a table without it, or with another, was not built from these files.
        """
        digest = self.cells_digest()
        for path in (self.results_path, self.curves_path):
            if not path.is_file():
                return f"{path.name} is missing"
            try:  # pyarrow's errors for a damaged file are ValueError (ArrowInvalid) or OSError
                metadata = pq.read_schema(path).metadata or {}
            except (OSError, ValueError) as err:
                return f"{path.name} cannot be read ({err})"
            if metadata.get(CELLS_DIGEST_KEY, b"").decode() != digest:
                return f"{path.name} was not built from the cell files now in {self.cells_dir}"
        return None


def rows_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """A results table with the contract columns first, metric columns after."""
    frame = pd.DataFrame(list(rows))
    for column in RESULT_COLUMNS:
        if column not in frame.columns:
            frame[column] = pd.Series(dtype="object")
    extra = [c for c in frame.columns if c not in RESULT_COLUMNS]
    frame = frame[list(RESULT_COLUMNS) + sorted(extra)]
    for column in frame.columns:
        if (
            frame[column].dtype == object
            and frame[column].map(lambda v: v is None or isinstance(v, (int, float))).all()
        ):
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def curves_frame(records: Iterable[CellRecord]) -> pd.DataFrame:
    """Every record's curve points, each identified by its cell's row (even when the point is not)."""
    points = [{**point, **{k: r.row.get(k) for k in _CURVE_IDENTITY}} for r in records for point in r.curves]
    frame = pd.DataFrame(points, columns=list(CURVE_COLUMNS))
    for column in CURVE_COLUMNS:  # measured values: a NaN read back from JSON (None) stays a float NaN
        if column not in _CURVE_IDENTITY or column in ("T", "seed"):
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def load_run(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(results, curves)`` of a run directory.

    Read from its parquet files when they reflect the cell files; otherwise (missing, older than a
    cell file, a row short, unreadable) rebuilt from the cell files with a
    :class:`RebuiltTablesWarning`, and written back unless a live run holds the directory.
    """
    run = RunDirectory(path)
    run.manifest()
    if not run.cells_dir.is_dir():
        return _without_cell_files(run)
    problem = run.stale_tables()
    if problem is None:
        try:
            return pd.read_parquet(run.results_path), pd.read_parquet(run.curves_path)
        except (OSError, ValueError) as err:
            problem = f"the tables cannot be read ({err})"
    return _rebuild(run, problem)


def _without_cell_files(run: RunDirectory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A run directory that lost its ``cells/`` folder: its tables are the only copy of its results,
    so they are read as they are (with a warning), never rebuilt into empty ones."""
    try:
        tables = pd.read_parquet(run.results_path), pd.read_parquet(run.curves_path)
    except (OSError, ValueError) as err:
        raise RunDirectoryError(
            f"{run.cells_dir}: missing, and the tables cannot be read either ({err}); "
            "this run directory has lost its results"
        ) from None
    warnings.warn(
        f"{run.path}: the cells/ folder is missing; the tables are read as they are and cannot be "
        "checked against the cell files (they are not rebuilt, which would empty them)",
        RebuiltTablesWarning,
        stacklevel=3,
    )
    return tables


def _rebuild(run: RunDirectory, problem: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    results, curves = run.frames()
    lock = run.try_lock()
    if lock is None:
        outcome = "not written back: a running run holds the directory, or it is not writable"
    else:
        with lock:
            try:
                run.write_frames(results, curves)
                outcome = "written back"
            except OutputLocationError as err:
                outcome = f"not written back: {err}"
    warnings.warn(
        f"{run.path}: {problem}; rebuilt the tables from the {len(results)} cell files ({outcome})",
        RebuiltTablesWarning,
        stacklevel=3,
    )
    return results, curves
