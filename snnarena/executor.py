"""Executors: what runs a suite's cells (in this process, in worker processes, on Ray, on Slurm).

An executor is a plugin (hook ``register_executors``): a subclass of :class:`Executor` with a
``name``, declared ``PARAMS`` (validated like every plugin parameter, from a suite's
``[executor]`` table or ``--executor-option KEY=VALUE``) and three duties:

* :meth:`Executor.records` runs the cells it is given and yields one :class:`CellRecord` per cell,
  in the order they finish, wherever they ran;
* :meth:`Executor.abandon` stops at once on SIGINT/SIGTERM: it returns the records already
  finished and an ``interrupted`` record for every cell still running, whose work it cancels;
* :meth:`Executor.close` releases what it started (processes, a local Ray cluster).

Workers never touch the run directory: every record travels back to the process that runs the
suite, which holds the run directory's lock and writes each cell file atomically. So whatever the
executor, the run directory holds the same files, a run started on one executor resumes on any
other, a cell whose worker died (killed, preempted) is recorded ``failed`` (and ``--resume`` runs it
again) but never half-written, and no two processes write the same cell.

A worker runs a cell through :func:`execute_job`: it sets ``SNNARENA_DATA`` to the run's data
root for the cell (restoring it afterwards), uses the run's torch thread count, and adds the
``worker`` (host name) and ``gpu`` (name and driver) columns to the row.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import socket
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from snnarena.cell import base_row, resolve_device, run_cell
from snnarena.data import DATA_ROOT_ENV
from snnarena.errors import ConfigurationError
from snnarena.host import HostConfig, PluginHost
from snnarena.params import Param, ParamError, params_of
from snnarena.results import CellRecord
from snnarena.suite import CellSpec

#: The executor a run uses when none is named: ``process`` when ``jobs > 1``, else this one.
DEFAULT_EXECUTOR = "local"


# -- what a worker receives and runs ----------------------------------------------------------
@dataclass(frozen=True)
class CellJob:
    """Everything a worker needs to run one cell; picklable, so it can travel to any process."""

    spec: dict[str, Any]
    run_id: str
    device: str
    threads: int
    data_root: str | None
    host_config: HostConfig


@contextmanager
def data_root_env(root: str | None) -> Iterator[None]:
    """``SNNARENA_DATA`` set to ``root`` inside the block (unchanged when ``root`` is ``None``),
    restored to its earlier value (or unset) afterwards."""
    if root is None:
        yield
        return
    previous = os.environ.get(DATA_ROOT_ENV)
    os.environ[DATA_ROOT_ENV] = root
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(DATA_ROOT_ENV, None)
        else:
            os.environ[DATA_ROOT_ENV] = previous


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@functools.lru_cache(maxsize=4)
def _worker_host(config: HostConfig) -> PluginHost:
    """The plugin host of a worker process, loaded once per configuration (workers run many cells)."""
    return PluginHost.load(config)


def execute_job(job: CellJob, host: PluginHost | None = None) -> CellRecord:
    """Run one cell where this function is called (any executor's worker, or this process with
    ``host``): the data root and thread count of the run, and the worker's host and GPU recorded."""
    with data_root_env(job.data_root), torch_threads(job.threads):
        record = run_cell(CellSpec.from_dict(job.spec), host or _worker_host(job.host_config), job.run_id, job.device)
    record.row.update(worker_columns(torch.device(str(record.row["device"]))))  # the device the cell ran on
    return record


# -- provenance of the worker and its GPU -----------------------------------------------------
@functools.lru_cache(maxsize=1)
def gpu_driver() -> str | None:
    """The NVIDIA driver version ``nvidia-smi`` reports, or ``None`` (no GPU, no nvidia-smi)."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0].strip() if out.returncode == 0 and lines else None


def gpu_info(device: torch.device) -> dict[str, str | None]:
    """``{"gpu": name, "cuda": CUDA version torch was built with, "driver": NVIDIA driver}`` of a
    CUDA device; empty for other devices."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return {}
    return {"gpu": torch.cuda.get_device_name(device), "cuda": torch.version.cuda, "driver": gpu_driver()}


def gpu_text(device: torch.device) -> str:
    """The ``gpu`` column: ``NVIDIA H100 (driver 550.54, CUDA 12.4)``, or ``""`` off a GPU."""
    info = gpu_info(device)
    if not info:
        return ""
    details = ", ".join(f"{k} {v}" for k, v in (("driver", info["driver"]), ("CUDA", info["cuda"])) if v)
    return f"{info['gpu']} ({details})" if details else str(info["gpu"])


def worker_columns(device: torch.device) -> dict[str, str]:
    """The row's ``worker`` (host name of the process that ran the cell) and ``gpu`` columns."""
    return {"worker": socket.gethostname(), "gpu": gpu_text(device)}


# -- the context every executor gets ----------------------------------------------------------
@dataclass(frozen=True)
class ExecutionContext:
    """What a run gives its executor: the host, the run's id and directory, the device, torch
    threads per cell and the data root (``None``: the workers' own ``SNNARENA_DATA``)."""

    host: PluginHost
    run_id: str
    run_dir: Path
    device: str = "auto"
    threads: int = 1
    data_root: str | None = None

    def job(self, spec: CellSpec) -> CellJob:
        """The picklable job of ``spec`` (plugin folders made absolute, for workers elsewhere)."""
        config = self.host.config
        dirs = tuple(str(Path(d).resolve()) for d in config.plugins_dirs)
        return CellJob(
            spec.to_dict(),
            self.run_id,
            self.device,
            self.threads,
            self.data_root,
            HostConfig(plugins_dirs=dirs, load_only=config.load_only, disabled=config.disabled),
        )

    def lost(self, spec: CellSpec, reason: str, detail: str) -> CellRecord:
        """A ``failed`` record for a cell whose worker returned none (it died, or was stopped)."""
        row = base_row(spec, self.host, self.run_id, resolve_device(self.device))
        row.update(status="failed", reason=reason, duration_s=math.nan, worker="", gpu="")
        return CellRecord(spec.to_dict(), row, [], f"{reason}\n{detail}\n")


# -- the base class ---------------------------------------------------------------------------
class Executor(ABC):
    """Runs cells somewhere and hands back their records (see the module docstring).

    Subclasses set ``name`` and ``PARAMS`` and implement :meth:`records`; ``extra`` names the
    snnarena extra whose packages :meth:`check_environment` needs. The constructor receives the
    run's :class:`ExecutionContext` and the executor's validated parameters (``self.params``).
    """

    name: ClassVar[str] = ""
    PARAMS: ClassVar[tuple[Param, ...]] = ()
    #: The optional snnarena extra that provides this executor's packages (``None``: none needed).
    extra: ClassVar[str | None] = None
    #: Whether cells may run on other machines than the one running the suite (a cluster): the
    #: device is then resolved by each worker, so ``--device cuda`` is accepted on a machine
    #: without a GPU (a login node) instead of being refused there.
    remote: ClassVar[bool] = False

    def __init__(self, context: ExecutionContext, params: Mapping[str, Any]) -> None:
        self.context = context
        self.params = dict(params)

    @classmethod
    def check_environment(cls, params: Mapping[str, Any]) -> None:
        """Raise a :class:`~snnarena.errors.ConfigurationError` (``ExtraMissing`` for a missing
        package) when this executor cannot run with ``params`` here; called before any cell runs."""
        return None

    @abstractmethod
    def records(self, cells: list[CellSpec]) -> Iterator[CellRecord]:
        """Run ``cells``; yield one record per cell as each finishes (a worker that died yields a
        ``failed`` record for its cell, made with :meth:`ExecutionContext.lost`)."""

    def abandon(self, signal_name: str) -> list[CellRecord]:
        """Stop now (``signal_name`` stopped the run): the records finished but not yet yielded,
        plus an ``interrupted ({signal_name})`` record for each cell still running, whose work is
        cancelled. Waits for no running cell."""
        return []

    def close(self) -> None:
        """Release what the executor started; called once, after :meth:`records` or :meth:`abandon`."""
        return None

    def interrupted(self, spec: CellSpec, signal_name: str, where: str) -> CellRecord:
        """The record of a cell the run's stop took from ``where`` (a worker process, a Ray task ...)."""
        return self.context.lost(
            spec,
            f"interrupted ({signal_name})",
            f"the run was stopped by {signal_name} while {where} ran this cell; --resume runs it again.",
        )


# -- choosing an executor ---------------------------------------------------------------------
@dataclass(frozen=True)
class ExecutorChoice:
    """An executor by name with its options as given, and where they were given (for messages)."""

    name: str
    options: Mapping[str, Any]
    #: Prefix of an option's name in messages: ``"executor."`` (a suite) or ``"--executor-option "``.
    where: str = "executor."


class ExecutorOptionError(ConfigurationError):
    """Executor options that the executor's ``PARAMS`` do not accept."""


def executor_class(host: PluginHost, name: str) -> type[Executor]:
    cls = host.get("executor", name).obj
    assert issubclass(cls, Executor)
    return cls


def resolve_executor(host: PluginHost, choice: ExecutorChoice) -> tuple[type[Executor], dict[str, Any]]:
    """The executor class and its validated options (defaults filled in); an unknown name or a
    bad option raises an error naming ``choice.where`` and what is accepted."""
    cls = executor_class(host, choice.name)
    try:
        return cls, params_of(cls).resolve(choice.options)
    except ParamError as err:
        where = choice.where
        lines = [
            f"{where}{key}: {message}" if key else f"{where.rstrip('. ')}: {message}" for key, message in err.problems
        ]
        raise ExecutorOptionError("\n".join(lines)) from None


def merged_choice(suite: ExecutorChoice | None, name: str | None, options: Mapping[str, Any]) -> ExecutorChoice | None:
    """The executor a run uses: the command line's ``name`` and ``options`` win over the suite's
    ``[executor]`` table; the suite's options are kept only when the name is the same."""
    if name is None and not options:
        return suite
    chosen = name or (suite.name if suite is not None else DEFAULT_EXECUTOR)
    base = dict(suite.options) if suite is not None and suite.name == chosen else {}
    where = "--executor-option " if options else (suite.where if suite is not None and base else "--executor ")
    return ExecutorChoice(chosen, {**base, **options}, where)
