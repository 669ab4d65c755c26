"""Running a suite: select cells, run them in this process or in worker processes, record each.

A run holds its run directory's lock from start to end, so no second process writes it. Each
finished cell is written to the run directory at once (atomically) and the aggregate tables are
rebuilt from the cell files. Ctrl-C (SIGINT) and SIGTERM stop a run at once: every finished cell
is kept, the cells in flight are recorded as ``failed`` (interrupted) and the outcome says
``interrupted``. With ``jobs > 1`` each worker process runs one cell at a time, dies with the
parent, and a worker that dies (killed, ``os._exit``, a segfault) fails only the cell it held.

``resume`` continues a run directory: it skips the cells it holds as done or skipped, and refuses
when the suite, the plugins used, the device kind or the torch version differ from the run's
fingerprint (``force`` resumes anyway and records the change in the manifest).
"""

from __future__ import annotations

import ctypes
import fnmatch
import json
import math
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

import pandas as pd
import torch

import snnarena
from snnarena.cell import _Interrupted, base_row, resolve_device, run_cell
from snnarena.columns import CORE_COLUMNS, Column, columns_by_name
from snnarena.errors import RunDirectoryError, SnnarenaError
from snnarena.host import HostConfig, PluginHost
from snnarena.metric import Metric
from snnarena.registry import Kind
from snnarena.results import CellRecord, RunDirectory, check_writable, json_safe
from snnarena.suite import CellSpec, SuiteSpec

SELECTOR_KEYS: tuple[str, ...] = ("method", "model", "dataset", "neuron", "surrogate", "T", "seed", "loss")


class SelectorError(SnnarenaError, ValueError):
    """An ``--only`` selector that names an unknown key or matches no cell."""


def select_cells(cells: list[CellSpec], selector: str | None) -> list[CellSpec]:
    """Cells matching ``selector``: ``key=glob`` pairs joined by ``,`` (all must match), or a glob
    matched against the cell's label, e.g. ``method=tbptt,dataset=digits`` or ``*T=16*``."""
    if not selector:
        return cells
    if "=" not in selector or selector.startswith("*"):
        chosen = [c for c in cells if fnmatch.fnmatch(c.label, selector) or selector in c.label]
    else:
        tests: list[tuple[str, str]] = []
        for part in selector.split(","):
            key, _, pattern = part.partition("=")
            key = key.strip()
            if key not in SELECTOR_KEYS:
                raise SelectorError(f"--only: unknown key {key!r}; allowed: {', '.join(SELECTOR_KEYS)}")
            tests.append((key, pattern.strip()))
        chosen = [c for c in cells if all(fnmatch.fnmatch(c.field_value(k), p) for k, p in tests)]
    if not chosen:
        raise SelectorError(f"--only {selector!r} matches none of the suite's {len(cells)} cells")
    return chosen


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def git_commit() -> str | None:
    """The commit of the working directory's git checkout, if any."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, hardware and device of this process, for the manifest."""
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "snnarena": snnarena.__version__,
        "device": str(device),
        "git_commit": git_commit(),
        # how busy the machine was when the run started (timings of a loaded machine are noisier)
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    for module in ("numpy", "pandas", "pluggy"):
        env[module] = __import__(module).__version__
    return env


def plugins_manifest(host: PluginHost) -> dict[str, Any]:
    return {
        "loaded": {
            name: {
                "distribution": p.distribution,
                "version": p.version,
                "source": p.source,
                "digest": p.digest,
                "registered": [f"{k}:{n}" for k, n in p.registered],
            }
            for name, p in sorted(host.plugins.items())
        },
        "failures": [{"plugin": f.plugin, "error": f.error} for f in host.failures],
        "warnings": [{"plugin": w.plugin, "message": w.message} for w in host.warnings],
    }


# -- the fingerprint of a run -----------------------------------------------------------------
def _components(cells: Iterable[CellSpec]) -> set[tuple[Kind, str]]:
    """Every ``(kind, name)`` plugin class the cells use."""
    return {component for c in cells for component in c.components}


def _plugin_versions(host: PluginHost, components: set[tuple[Kind, str]]) -> dict[str, str | None]:
    """``{distribution (or local plugin name): version}`` of the plugins providing ``components``."""
    out: dict[str, str | None] = {}
    for kind, name in sorted(components):
        entry = host.get(kind, name)
        key = entry.distribution if entry.distribution not in (None, "local") else entry.plugin
        version = entry.version
        if entry.digest and (version is None or entry.digest not in version):
            version = f"{version} ({entry.digest})"
        out[str(key)] = version
    return out


def _resolved_suite(suite: SuiteSpec, first: CellSpec) -> dict[str, Any]:
    """The suite's TOML as data, with the ``[train]`` table completed by its defaults; the
    description is left out (it changes no result)."""
    data = tomllib.loads(suite.text)
    data.pop("description", None)
    raw_train = data.get("train", {})
    data["train"] = {**raw_train, **first.train, "optimizer": first.optimizer}
    return data


def _device_kind(device: torch.device) -> str:
    return f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else device.type


def run_fingerprint(suite: SuiteSpec, host: PluginHost, device: torch.device) -> dict[str, Any]:
    """What must not change within one run directory: the suite as resolved, the versions of the
    plugins it uses, the device kind and the torch version."""
    cells = suite.cells
    fingerprint = {
        "suite": _resolved_suite(suite, cells[0]),
        "plugins": _plugin_versions(host, _components(cells)),
        "device": _device_kind(device),
        "torch": torch.__version__,
    }
    # as the manifest will hold it, so that a fingerprint read back compares equal
    normalised: dict[str, Any] = json.loads(json.dumps(json_safe(fingerprint), default=str))
    return normalised


def _flatten(value: Any, path: str, out: dict[str, Any]) -> dict[str, Any]:
    """``{"train.optimizer.lr": 0.01, "methods[1].params.K": 4, ...}``; lists of scalars stay whole."""
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{path}.{key}" if path else str(key), out)
    elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
        for i, item in enumerate(value):
            _flatten(item, f"{path}[{i}]", out)
    else:
        out[path] = value
    return out


def fingerprint_differences(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """One line per difference, e.g. ``train.optimizer.lr: 0.01 -> 0.5`` or
    ``plugin snnarena: 0.1.0 -> 0.2.0``; empty when the fingerprints agree."""
    if not old:
        return ["fingerprint: (none: the run was made by an older snnarena) -> recorded now"]
    lines: list[str] = []
    for part, prefix in (("suite", ""), ("plugins", "plugin "), ("device", "device"), ("torch", "torch")):
        before = _flatten(old.get(part), "", {})
        after = _flatten(new.get(part), "", {})
        for key in sorted(set(before) | set(after), key=str):
            if before.get(key, _ABSENT) != after.get(key, _ABSENT):
                name = f"{prefix}{key}" if key else prefix
                lines.append(f"{name}: {_shown(before.get(key, _ABSENT))} -> {_shown(after.get(key, _ABSENT))}")
    return lines


_ABSENT = object()


def _shown(value: Any) -> str:
    return "(absent)" if value is _ABSENT else json.dumps(value, default=str)


def _metric_columns(host: PluginHost, name: str) -> tuple[Column, ...]:
    cls = host.get("metric", name).obj
    return cls.columns if issubclass(cls, Metric) else ()


def measured_columns(host: PluginHost, metrics: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``{name: Column.to_dict()}`` of the host's core columns and the given metrics' columns."""
    declared = [*CORE_COLUMNS, *(c for m in metrics for c in _metric_columns(host, m))]
    return {name: column.to_dict() for name, column in columns_by_name(declared).items()}


# -- stopping on SIGINT / SIGTERM -------------------------------------------------------------
class RunStopped(KeyboardInterrupt):
    """Raised in the main thread by SIGINT or SIGTERM while a suite runs."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


class _StopSignals:
    """While entered (in the main thread), SIGINT and SIGTERM raise :class:`RunStopped`, except
    inside :meth:`deferred` blocks (saving a finished cell), which raise it when they end.

    A signal this process was told to ignore (``SIG_IGN``, e.g. SIGINT of a background job) stays
    ignored.
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self._deferring = 0
        self._pending = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum).name
        if self._deferring:
            self._pending = True
            return
        raise RunStopped(self.received)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
            if self._pending and not self._deferring:
                self._pending = False
                raise RunStopped(self.received or "SIGINT")


# -- executors --------------------------------------------------------------------------------
def _lost_cell(spec: CellSpec, host: PluginHost, run_id: str, device: str, reason: str, detail: str) -> CellRecord:
    """A ``failed`` record for a cell whose process did not return one (it died, or was stopped)."""
    row = base_row(spec, host, run_id, resolve_device(device))
    row.update(status="failed", reason=reason, duration_s=math.nan)
    return CellRecord(spec.to_dict(), row, [], f"{reason}\n{detail}\n")


class _Sequential:
    """Runs the cells one after the other in this process."""

    def __init__(self, host: PluginHost, run_id: str, device: str) -> None:
        self.host, self.run_id, self.device = host, run_id, device

    def records(self, cells: list[CellSpec]) -> Iterator[CellRecord]:
        for spec in cells:
            yield run_cell(spec, self.host, self.run_id, self.device)

    def abandon(self, signal_name: str) -> list[CellRecord]:
        return []  # the cell in flight, if any, reported itself through cell._Interrupted

    def close(self) -> None:
        pass


def _die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux); exit now if it has."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:
        os._exit(1)


def _worker_main(conn: Connection, config: HostConfig, threads: int, parent_pid: int) -> None:
    """A worker: receives ``(spec, run_id, device)`` messages, sends back one record each; ``None``
    ends it. SIGINT is ignored: the parent decides what an interrupt means for the cells."""
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    host = PluginHost.load(config)
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        spec, run_id, device = message
        conn.send(run_cell(CellSpec.from_dict(spec), host, run_id, device))


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    conn: Connection
    cell: CellSpec | None = None


def _death(process: BaseProcess) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


@dataclass
class _Pool:
    """Worker processes (spawned), one cell at a time each; the parent knows which cell each holds,
    so a worker that dies fails only that cell, and a fresh worker takes the next one."""

    host: PluginHost
    run_id: str
    device: str
    jobs: int
    threads: int
    workers: list[_Worker] = field(default_factory=list)

    def records(self, cells: list[CellSpec]) -> Iterator[CellRecord]:
        queue = deque(cells)
        while queue and len(self.workers) < self.jobs:
            self._give(self._start(), queue.popleft())
        while any(w.cell is not None for w in self.workers):
            for worker in self._ready():
                record = self._collect(worker)
                if queue:
                    self._give(worker if worker in self.workers else self._start(), queue.popleft())
                yield record

    def _start(self) -> _Worker:
        ctx = get_context("spawn")
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        process = ctx.Process(
            target=_worker_main, args=(child_conn, self.host.config, self.threads, os.getpid()), name="snnarena-worker"
        )
        process.start()
        child_conn.close()
        worker = _Worker(process, parent_conn)
        self.workers.append(worker)
        return worker

    def _give(self, worker: _Worker, spec: CellSpec) -> None:
        worker.cell = spec
        try:
            worker.conn.send((spec.to_dict(), self.run_id, self.device))
        except OSError:  # it died between cells: the cell stays with it and is reported by _collect
            pass

    def _ready(self) -> list[_Worker]:
        """Busy workers that sent a record or died, once some do."""
        by_handle: dict[Any, _Worker] = {}
        for worker in self.workers:
            if worker.cell is not None:
                by_handle[worker.conn] = worker
                by_handle[worker.process.sentinel] = worker
        ready: list[_Worker] = []
        for handle in wait(list(by_handle)):
            if by_handle[handle] not in ready:
                ready.append(by_handle[handle])
        return ready

    def _collect(self, worker: _Worker) -> CellRecord:
        """The record a ready worker sent, or (it died) a failed record for its cell."""
        spec = worker.cell
        assert spec is not None
        worker.cell = None
        if worker.conn.poll():
            try:
                record: CellRecord = worker.conn.recv()
                return record
            except (EOFError, OSError):
                pass
        worker.process.join(timeout=10)
        self.workers.remove(worker)
        worker.conn.close()
        how = _death(worker.process)
        return _lost_cell(
            spec,
            self.host,
            self.run_id,
            self.device,
            f"worker process died ({how}) while running this cell",
            f"worker pid {worker.process.pid} ended with {how}; its own output (stderr) may say why. "
            "The run went on with a fresh worker; --resume runs this cell again.",
        )

    def abandon(self, signal_name: str) -> list[CellRecord]:
        """Stop now: keep records already sent, record the cells in flight as interrupted, and
        kill their workers (waiting for nothing)."""
        out: list[CellRecord] = []
        for worker in self.workers:
            spec = worker.cell
            if spec is None:
                continue
            worker.cell = None
            if worker.process.is_alive() and worker.conn.poll():
                try:
                    out.append(worker.conn.recv())
                    continue
                except (EOFError, OSError):
                    pass
            worker.process.kill()
            out.append(
                _lost_cell(
                    spec,
                    self.host,
                    self.run_id,
                    self.device,
                    f"interrupted ({signal_name})",
                    f"the run was stopped by {signal_name} while a worker process ran this cell; "
                    "--resume runs it again.",
                )
            )
        return out

    def close(self) -> None:
        """End every worker: idle ones are asked to exit, the others terminated, then killed."""
        for worker in self.workers:
            if worker.cell is None:
                try:
                    worker.conn.send(None)
                except OSError:
                    pass
            else:
                worker.process.terminate()
        deadline = time.monotonic() + 5
        for worker in self.workers:
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=5)
            worker.conn.close()
        self.workers.clear()


# -- running a suite --------------------------------------------------------------------------
@dataclass
class RunOutcome:
    """What :func:`run_suite` did: the run directory, the results table (every cell of the
    directory), whether SIGINT/SIGTERM stopped it early (``stopped_by`` names the signal), how
    many cells ran now, were already finished, and how many of the selected cells failed."""

    run_dir: Path
    results: pd.DataFrame
    interrupted: bool
    ran: int
    skipped_as_finished: int
    failed: int = 0
    stopped_by: str = ""


def _new_manifest(
    suite: SuiteSpec,
    host: PluginHost,
    device: torch.device,
    run_id: str,
    fingerprint: dict[str, Any],
    only: str | None,
    jobs: int,
    threads: int,
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "suite": suite.name,
        "description": suite.description,
        "source": suite.source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cells": suite.n_cells,
        "only": only,
        "environment": environment(device),
        "torch_threads": threads,
        "jobs": jobs,
        "plugins": plugins_manifest(host),
        "fingerprint": fingerprint,
        "columns": measured_columns(host, suite.cells[0].metrics),
        "resumes": [],
    }


def _resume(
    run: RunDirectory,
    suite: SuiteSpec,
    host: PluginHost,
    fingerprint: dict[str, Any],
    force: bool,
    only: str | None,
    jobs: int,
) -> str:
    """Check that ``run`` may continue with ``suite`` and record the resume; returns its run id."""
    manifest = run.manifest()
    if manifest.get("suite") != suite.name:
        raise RunDirectoryError(
            f"--resume {run.path}: that run is of suite {manifest.get('suite')!r}, not {suite.name!r}; "
            "start a new run (leave out --resume)"
        )
    differences = fingerprint_differences(manifest.get("fingerprint"), fingerprint)
    if differences and not force:
        raise RunDirectoryError(
            f"--resume {run.path}: this run was made with different settings, and its results would mix "
            "with the new ones:\n  " + "\n  ".join(differences) + "\nStart a new run (leave out --resume), "
            "or pass --force to resume anyway (the manifest records the change)."
        )
    resumes: list[dict[str, Any]] = list(manifest.get("resumes") or [])
    entry: dict[str, Any] = {
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "only": only,
        "jobs": jobs,
        "forced": bool(differences),
    }
    if differences:
        kept = f"suite.previous-{sum(1 for r in resumes if r.get('forced')) + 1}.toml"
        run.keep_suite_copy(kept)
        entry.update(differences=differences, previous_fingerprint=manifest.get("fingerprint"), previous_suite=kept)
        manifest.update(fingerprint=fingerprint, columns=measured_columns(host, suite.cells[0].metrics))
        run.write_manifest({**manifest, "resumes": [*resumes, entry]}, suite.text)
    else:
        run.update_manifest({**manifest, "resumes": [*resumes, entry]})
    return str(manifest["run_id"])


def _relabel(record: CellRecord, signal_name: str | None) -> CellRecord:
    """The interrupted record of a cell run in this process, naming the signal that stopped it."""
    if signal_name:
        record.row["reason"] = f"interrupted ({signal_name})"
    return record


def run_suite(
    suite: SuiteSpec,
    host: PluginHost,
    *,
    results_root: str | Path = "results",
    resume: str | Path | None = None,
    only: str | None = None,
    jobs: int = 1,
    threads: int = 1,
    device: str = "auto",
    force: bool = False,
    on_record: Callable[[CellRecord], None] | None = None,
    on_start: Callable[[RunDirectory, int], None] | None = None,
) -> RunOutcome:
    """Run ``suite``'s cells and write them to a new run directory (or into ``resume``).

    ``jobs`` cells run in parallel processes, each with ``threads`` torch intra-op threads (one by
    default: the small per-step kernels of spiking nets gain little from more, and timings stay
    comparable when cores are shared). ``resume`` refuses a run directory whose fingerprint
    differs (:class:`RunDirectoryError` listing the differences) unless ``force``; it also refuses
    one that another process is running. An unwritable location raises
    :class:`~snnarena.errors.OutputLocationError` before any cell runs.
    """
    torch_device = resolve_device(device)
    cells = select_cells(suite.cells, only)
    fingerprint = run_fingerprint(suite, host, torch_device)
    if resume is not None:
        run = RunDirectory(resume)
        run.manifest()
        check_writable(run.path)
    else:
        check_writable(Path(results_root) / suite.name)
        run = RunDirectory(Path(results_root) / suite.name / new_run_id())
    with run.lock():
        run.remove_stale_temp_files()
        if resume is not None:
            run_id = _resume(run, suite, host, fingerprint, force, only, jobs)
        else:
            run_id = run.path.name
            run.write_manifest(
                _new_manifest(suite, host, torch_device, run_id, fingerprint, only, jobs, threads), suite.text
            )
        check_writable(run.cells_dir)
        finished = run.finished_ids()
        todo = [c for c in cells if c.cell_id not in finished]
        if on_start is not None:
            on_start(run, len(todo))
        ran, stopped_by = _execute(run, todo, host, run_id, device, jobs, threads, on_record)
        results = run.aggregate()
    selected = {c.cell_id for c in cells}
    failed = int(((results["status"] == "failed") & results["cell_id"].isin(selected)).sum()) if len(results) else 0
    return RunOutcome(run.path, results, stopped_by is not None, ran, len(cells) - len(todo), failed, stopped_by or "")


def _execute(
    run: RunDirectory,
    todo: list[CellSpec],
    host: PluginHost,
    run_id: str,
    device: str,
    jobs: int,
    threads: int,
    on_record: Callable[[CellRecord], None] | None,
) -> tuple[int, str | None]:
    """Run ``todo`` and save each record as it comes; ``(cells saved, the signal that stopped the
    run or None)``."""
    executor: _Sequential | _Pool = (
        _Pool(host, run_id, device, jobs, threads) if jobs > 1 and len(todo) > 1 else _Sequential(host, run_id, device)
    )
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    ran = 0
    stops = _StopSignals()

    def save(record: CellRecord) -> None:
        nonlocal ran
        with stops.deferred():
            run.write_cell(record)
            run.aggregate()
            ran += 1
        if on_record is not None:
            on_record(record)

    try:
        with stops:
            try:
                for record in executor.records(todo):
                    save(record)
            except _Interrupted as stop:  # a cell run in this process, with what it had done
                with stops.deferred():
                    run.write_cell(_relabel(stop.record, stops.received))
                    ran += 1
                return ran, stops.received or "KeyboardInterrupt"
            except KeyboardInterrupt:
                with stops.deferred():
                    for record in executor.abandon(stops.received or "KeyboardInterrupt"):
                        run.write_cell(record)
                        ran += 1
                return ran, stops.received or "KeyboardInterrupt"
    finally:
        executor.close()
        torch.set_num_threads(previous_threads)
    return ran, None
