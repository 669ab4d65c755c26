"""Running a suite: select cells, run them in this process or a process pool, record each.

Each finished cell is written to the run directory at once (atomically) and the aggregate tables
are rebuilt, so a crash or Ctrl-C loses at most the cell in flight (which is recorded as
``failed``/interrupted). ``resume`` skips the cells a run directory already holds as done or
skipped.
"""

from __future__ import annotations

import fnmatch
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd
import torch

import snnarena
from snnarena.errors import SnnarenaError
from snnarena.cell import _Interrupted, resolve_device, run_cell
from snnarena.host import HostConfig, PluginHost
from snnarena.results import CellRecord, RunDirectory
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
        "python": sys.version.split()[0], "platform": platform.platform(), "processor": platform.processor(),
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "snnarena": snnarena.__version__,
        "device": str(device), "git_commit": git_commit(),
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
            name: {"distribution": p.distribution, "version": p.version, "source": p.source,
                   "registered": [f"{k}:{n}" for k, n in p.registered]}
            for name, p in sorted(host.plugins.items())
        },
        "failures": [{"plugin": f.plugin, "error": f.error} for f in host.failures],
    }


# -- executors ------------------------------------------------------------------------------
_worker_host: PluginHost | None = None


def _init_worker(config: HostConfig, threads: int) -> None:
    global _worker_host
    torch.set_num_threads(threads)
    _worker_host = PluginHost.load(config)


def _run_in_worker(spec: dict[str, Any], run_id: str, device: str) -> CellRecord:
    assert _worker_host is not None, "worker not initialised"
    try:
        return run_cell(CellSpec.from_dict(spec), _worker_host, run_id, device)
    except _Interrupted as stop:
        return stop.record


def _run_sequential(
    cells: list[CellSpec], host: PluginHost, run_id: str, device: str
) -> Iterator[CellRecord]:
    for spec in cells:
        yield run_cell(spec, host, run_id, device)


def _run_pool(
    cells: list[CellSpec], host: PluginHost, run_id: str, device: str, jobs: int, threads: int
) -> Iterator[CellRecord]:
    pool = ProcessPoolExecutor(
        max_workers=jobs, mp_context=get_context("spawn"), initializer=_init_worker,
        initargs=(host.config, threads),
    )
    pending: set[Future[CellRecord]] = set()
    try:
        pending = {pool.submit(_run_in_worker, spec.to_dict(), run_id, device) for spec in cells}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class RunOutcome:
    """What :func:`run_suite` did: the run directory, the results table, and whether Ctrl-C
    stopped it early."""

    run_dir: Path
    results: pd.DataFrame
    interrupted: bool
    ran: int
    skipped_as_finished: int


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
    on_record: Callable[[CellRecord], None] | None = None,
    on_start: Callable[[RunDirectory, int], None] | None = None,
) -> RunOutcome:
    """Run ``suite``'s cells and write them to a new run directory (or into ``resume``).

    ``jobs`` cells run in parallel processes, each with ``threads`` torch intra-op threads (one by
    default: the small per-step kernels of spiking nets gain little from more, and timings stay
    comparable when cores are shared).
    """
    torch_device = resolve_device(device)
    cells = select_cells(suite.cells, only)
    if resume is not None:
        run = RunDirectory(resume)
        manifest = run.manifest()
        if manifest.get("suite") != suite.name:
            raise ValueError(f"--resume {resume}: that run is of suite {manifest.get('suite')!r}, not {suite.name!r}")
        run_id = manifest["run_id"]
    else:
        run_id = new_run_id()
        run = RunDirectory(Path(results_root) / suite.name / run_id)
        run.write_manifest(
            {"run_id": run_id, "suite": suite.name, "description": suite.description, "source": suite.source,
             "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cells": len(suite.cells), "only": only,
             "environment": environment(torch_device), "torch_threads": threads, "jobs": jobs,
             "plugins": plugins_manifest(host)},
            suite.text,
        )
    finished = run.finished_ids()
    todo = [c for c in cells if c.cell_id not in finished]
    if on_start is not None:
        on_start(run, len(todo))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    records = (_run_pool(todo, host, run_id, device, jobs, threads) if jobs > 1 and len(todo) > 1
               else _run_sequential(todo, host, run_id, device))
    interrupted = False
    ran = 0
    try:
        for record in records:
            run.write_cell(record)
            run.aggregate()
            ran += 1
            if on_record is not None:
                on_record(record)
    except _Interrupted as stop:
        run.write_cell(stop.record)
        interrupted = True
    except KeyboardInterrupt:
        interrupted = True
    finally:
        torch.set_num_threads(previous_threads)
    results = run.aggregate() if run.cells_dir.is_dir() else pd.DataFrame()
    return RunOutcome(run.path, results, interrupted, ran, len(cells) - len(todo))
