"""Running a suite: select cells, run them on an executor (:mod:`snnarena.executor`), record each.

A run holds its run directory's lock from start to end, so no second process writes it. Each
finished cell is written to the run directory at once (atomically) and the aggregate tables are
rebuilt from the cell files. Ctrl-C (SIGINT) and SIGTERM stop a run at once: every finished cell
is kept, the cells in flight are recorded as ``failed`` (interrupted) and the outcome says
``interrupted``. The executor (``local``, ``process`` for ``jobs > 1``, ``ray``, ``slurm`` or a
plugin's) runs the cells wherever it runs them and hands each record back: only this process writes
the run directory, and a worker that dies (killed, ``os._exit``, a segfault, a preempted job) fails
only the cell it held.

``resume`` continues a run directory: it skips the cells it holds as done or skipped, and refuses
when the suite, the plugins used, the device kind or the torch version differ from the run's
fingerprint (``force`` resumes anyway and records the change in the manifest).
"""

from __future__ import annotations

import fnmatch
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import pandas as pd
import torch

import snnarena
from snnarena.cell import _Interrupted, resolve_device
from snnarena.columns import CORE_COLUMNS, Column, columns_by_name
from snnarena.data import data_root as resolve_data_root
from snnarena.errors import ConfigurationError, RunDirectoryError, SnnarenaError
from snnarena.executor import (
    DEFAULT_EXECUTOR,
    ExecutionContext,
    Executor,
    ExecutorChoice,
    gpu_info,
    merged_choice,
    resolve_executor,
)
from snnarena.host import PluginHost
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
    env.update(gpu_info(device))  # GPU name, CUDA version and NVIDIA driver on a CUDA device
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


#: Top-level suite keys that change no result, left out of the fingerprint: a run may resume on
#: another executor, or with its data files moved.
RUN_SETTINGS: tuple[str, ...] = ("description", "executor", "data_root")


def _resolved_suite(suite: SuiteSpec, first: CellSpec) -> dict[str, Any]:
    """The suite's TOML as data, with the ``[train]`` table completed by its defaults; the
    description, executor and data root are left out (:data:`RUN_SETTINGS`)."""
    data = tomllib.loads(suite.text)
    for key in RUN_SETTINGS:
        data.pop(key, None)
    raw_train = data.get("train", {})
    data["train"] = {**raw_train, **first.train, "optimizer": first.optimizer}
    return data


def _device_kind(device: torch.device) -> str:
    if device.type == "cuda" and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def run_device(device: str, executor: type[Executor]) -> torch.device:
    """The device a run records: ``device`` resolved here (:func:`~snnarena.cell.resolve_device`);
    for an executor whose workers run elsewhere (``remote``), a CUDA device this machine lacks is
    taken as asked, since each worker resolves the device itself."""
    try:
        return resolve_device(device)
    except ConfigurationError:
        if not executor.remote:
            raise
        return torch.device(device)


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
    settings: RunSettings,
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
        "torch_threads": settings.threads,
        "jobs": settings.jobs,
        **settings.manifest(),
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
    settings: RunSettings,
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
        "jobs": settings.jobs,
        **settings.manifest(),
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


@dataclass(frozen=True)
class RunSettings:
    """How a run executes (none of it changes a result): the executor and its validated options,
    torch threads per cell, ``--jobs`` as given, and the data root its cells read from (``None``:
    each worker's own ``SNNARENA_DATA``)."""

    executor: type[Executor]
    options: Mapping[str, Any]
    threads: int = 1
    jobs: int = 1
    data_root: str | None = None

    def manifest(self) -> dict[str, Any]:
        """The manifest's record of the executor and of the data root this machine resolves."""
        return {
            "executor": {"name": self.executor.name, "options": dict(self.options)},
            "data_root": str(resolve_data_root(self.data_root)),
        }


def choose_executor(
    host: PluginHost,
    suite: SuiteSpec,
    name: str | None = None,
    options: Mapping[str, Any] | None = None,
    jobs: int = 1,
) -> tuple[type[Executor], dict[str, Any]]:
    """The executor class and validated options of a run: ``name``/``options`` (the command line)
    win over the suite's ``[executor]`` table; with neither, ``jobs > 1`` means the ``process``
    executor with ``jobs`` workers, else ``local``. ``jobs > 1`` with another executor is refused.
    The executor's :meth:`~snnarena.executor.Executor.check_environment` runs here."""
    choice = merged_choice(suite.executor, name, dict(options or {}))
    if choice is None:
        choice = (
            ExecutorChoice("process", {"jobs": jobs}, "--jobs ") if jobs > 1 else ExecutorChoice(DEFAULT_EXECUTOR, {})
        )
    elif jobs > 1:
        if choice.name != "process":
            raise ConfigurationError(
                f"--jobs {jobs} sets the worker processes of the process executor, but this run uses the "
                f"{choice.name!r} executor; leave out --jobs (its options set how many cells run at once)"
            )
        choice = ExecutorChoice("process", {**choice.options, "jobs": jobs}, choice.where)
    cls, resolved = resolve_executor(host, choice)
    cls.check_environment(resolved)
    return cls, resolved


def _absolute(path: str | Path | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().absolute())


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
    executor: str | None = None,
    executor_options: Mapping[str, Any] | None = None,
    data_root: str | Path | None = None,
    on_record: Callable[[CellRecord], None] | None = None,
    on_start: Callable[[RunDirectory, int], None] | None = None,
) -> RunOutcome:
    """Run ``suite``'s cells and write them to a new run directory (or into ``resume``).

    The cells run on ``executor`` (a registered executor's name) with ``executor_options``, which
    win over the suite's ``[executor]`` table; without either, ``jobs > 1`` runs them in that many
    worker processes, else in this process (see :func:`choose_executor`). Each cell uses
    ``threads`` torch intra-op threads (one by default: the small per-step kernels of spiking nets
    gain little from more, and timings stay comparable when cores are shared) and reads its data
    under ``data_root`` (else the suite's ``data_root``, else the workers' ``SNNARENA_DATA``).
    ``resume`` refuses a run directory whose fingerprint differs (:class:`RunDirectoryError`
    listing the differences) unless ``force``; it also refuses one that another process is
    running; the executor may differ from the one that started the run. An unwritable location
    raises :class:`~snnarena.errors.OutputLocationError` before any cell runs.
    """
    executor_cls, options = choose_executor(host, suite, executor, executor_options, jobs)
    torch_device = run_device(device, executor_cls)
    cells = select_cells(suite.cells, only)
    fingerprint = run_fingerprint(suite, host, torch_device)
    settings = RunSettings(executor_cls, options, threads, jobs, _absolute(data_root or suite.data_root))
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
            run_id = _resume(run, suite, host, fingerprint, force, only, settings)
        else:
            run_id = run.path.name
            run.write_manifest(
                _new_manifest(suite, host, torch_device, run_id, fingerprint, only, settings), suite.text
            )
        check_writable(run.cells_dir)
        finished = run.finished_ids()
        todo = [c for c in cells if c.cell_id not in finished]
        if on_start is not None:
            on_start(run, len(todo))
        context = ExecutionContext(host, run_id, run.path, device, threads, settings.data_root)
        chosen = _executor(
            host,
            settings,
            context,
            implied_by_jobs=executor is None and not executor_options and suite.executor is None,
            todo=len(todo),
        )
        ran, stopped_by = _execute(run, todo, chosen, on_record)
        results = run.aggregate()
    selected = {c.cell_id for c in cells}
    failed = int(((results["status"] == "failed") & results["cell_id"].isin(selected)).sum()) if len(results) else 0
    return RunOutcome(run.path, results, stopped_by is not None, ran, len(cells) - len(todo), failed, stopped_by or "")


def _executor(
    host: PluginHost, settings: RunSettings, context: ExecutionContext, *, implied_by_jobs: bool, todo: int
) -> Executor:
    """The run's executor; ``--jobs N`` alone with at most one cell to run runs it in this process
    (starting a worker would only cost time)."""
    cls, options = settings.executor, settings.options
    if implied_by_jobs and todo <= 1 and cls.name == "process":
        cls, options = resolve_executor(host, ExecutorChoice(DEFAULT_EXECUTOR, {}))
    return cls(context, options)


def _execute(
    run: RunDirectory,
    todo: list[CellSpec],
    executor: Executor,
    on_record: Callable[[CellRecord], None] | None,
) -> tuple[int, str | None]:
    """Run ``todo`` on ``executor`` and save each record as it comes (this process alone writes the
    run directory); ``(cells saved, the signal that stopped the run or None)``."""
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
    return ran, None
