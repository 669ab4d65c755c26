"""The built-in executors: ``local`` (this process), ``process`` (worker processes), ``ray`` (a Ray
cluster) and ``slurm`` (Slurm array jobs through submitit).

Each runs cells with :func:`snnarena.executor.execute_job` and hands the records back to the
process running the suite, which alone writes the run directory (see :mod:`snnarena.executor`).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import ModuleType
from typing import Any

import snnarena
from snnarena.errors import ConfigurationError, WorkerStopped
from snnarena.executor import CellJob, ExecutionContext, Executor, execute_job
from snnarena.extras import import_extra
from snnarena.params import Param
from snnarena.results import CellRecord
from snnarena.suite import CellSpec


# -- local ------------------------------------------------------------------------------------
class LocalExecutor(Executor):
    """Runs the cells one after the other in this process."""

    name = "local"

    def records(self, cells: list[CellSpec]) -> Iterator[CellRecord]:
        for spec in cells:  # a Ctrl-C reaches the runner as cell._Interrupted, with the cell's record
            yield execute_job(self.context.job(spec), self.context.host)


# -- process ----------------------------------------------------------------------------------
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


def _worker_main(conn: Connection, parent_pid: int) -> None:
    """A worker: receives :class:`CellJob` messages, sends back one record each; ``None`` ends it.
    SIGINT is ignored: the parent decides what an interrupt means for the cells. The plugin host is
    loaded once, from the first job's configuration (:func:`~snnarena.executor.execute_job`)."""
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        conn.send(execute_job(job))


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


class ProcessExecutor(Executor):
    """Worker processes on this machine (``--jobs N``), one cell at a time each.

    Workers are spawned and die with the parent; a worker that dies fails only its cell, and a fresh
    worker takes the next one."""

    name = "process"
    PARAMS = (Param("jobs", "int", 2, "worker processes (cells run in parallel)", low=1),)

    def __init__(self, context: ExecutionContext, params: Mapping[str, Any]) -> None:
        super().__init__(context, params)
        self.workers: list[_Worker] = []

    def records(self, cells: list[CellSpec]) -> Iterator[CellRecord]:
        queue = deque(cells)
        while queue and len(self.workers) < self.params["jobs"]:
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
        process = ctx.Process(target=_worker_main, args=(child_conn, os.getpid()), name="snnarena-worker")
        process.start()
        child_conn.close()
        worker = _Worker(process, parent_conn)
        self.workers.append(worker)
        return worker

    def _give(self, worker: _Worker, spec: CellSpec) -> None:
        worker.cell = spec
        try:
            worker.conn.send(self.context.job(spec))
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
        return self.context.lost(
            spec,
            f"worker process died ({how}) while running this cell",
            f"worker pid {worker.process.pid} ended with {how}; its own output (stderr) may say why. "
            "The run went on with a fresh worker; --resume runs this cell again.",
        )

    def abandon(self, signal_name: str) -> list[CellRecord]:
        """Keep records already sent, record the cells in flight as interrupted, and kill their
        workers (waiting for nothing)."""
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
            out.append(self.interrupted(spec, signal_name, "a worker process"))
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


# -- ray --------------------------------------------------------------------------------------
def _ray() -> ModuleType:
    return import_extra("ray", extra="ray", needed_for="the ray executor")


class RayExecutor(Executor):
    """Each cell a Ray task with its CPU and GPU request, on a Ray cluster.

    The cluster is an existing one (``address``) or a local one started for the run (and stopped
    after it)."""

    name = "ray"
    extra = "ray"
    remote = True
    PARAMS = (
        Param(
            "address",
            "str",
            "",
            "the cluster to join: 'auto' (the one started on this machine with `ray start`), 'HOST:PORT', "
            "or 'ray://HOST:10001'; empty: the cluster this process is connected to, else RAY_ADDRESS, "
            "else a local cluster started for the run",
        ),
        Param("cpus_per_cell", "float", 1.0, "CPUs Ray reserves for each cell", low=0.0),
        Param("gpus_per_cell", "float", 0.0, "GPUs Ray reserves for each cell (a fraction shares a GPU)", low=0.0),
        Param("num_cpus", "int", None, "CPUs of a local cluster started here (default: all)", low=1, nullable=True),
        Param("num_gpus", "int", None, "GPUs of a local cluster started here (default: all)", low=0, nullable=True),
        Param(
            "retries",
            "int",
            0,
            "times Ray reruns a cell whose worker died (0: the cell fails and --resume runs it again)",
            low=0,
        ),
    )

    def __init__(self, context: ExecutionContext, params: Mapping[str, Any]) -> None:
        super().__init__(context, params)
        self.pending: dict[Any, CellSpec] = {}
        self._started_cluster = False

    @classmethod
    def check_environment(cls, params: Mapping[str, Any]) -> None:
        _ray()
        if params.get("address") and (params.get("num_cpus") is not None or params.get("num_gpus") is not None):
            raise ConfigurationError(
                "executor ray: num_cpus and num_gpus size a local cluster started for the run; an existing "
                "cluster (address) has its own resources. Remove them or the address."
            )

    def _connect(self) -> ModuleType:
        ray = _ray()
        if not ray.is_initialized():
            local = {"num_cpus": self.params["num_cpus"], "num_gpus": self.params["num_gpus"]}
            ray.init(
                address=self.params["address"] or None,
                include_dashboard=False,
                **({} if self.params["address"] else {k: v for k, v in local.items() if v is not None}),
            )
            self._started_cluster = True
        return ray

    def records(self, cells: list[CellSpec]) -> Iterator[CellRecord]:
        ray = self._connect()
        task = ray.remote(execute_job).options(
            num_cpus=self.params["cpus_per_cell"],
            num_gpus=self.params["gpus_per_cell"],
            max_retries=self.params["retries"],
            name="snnarena-cell",
        )
        self.pending = {task.remote(self.context.job(spec)): spec for spec in cells}
        while self.pending:
            # a timeout, so that SIGINT/SIGTERM reach the runner while the cells run
            done, _ = ray.wait(list(self.pending), num_returns=1, timeout=1.0)
            for ref in done:
                yield self._collect(ray, ref)

    def _collect(self, ray: ModuleType, ref: Any) -> CellRecord:
        """The record a finished task returned, or (its worker or node died) a failed record."""
        spec = self.pending.pop(ref)
        try:
            record: CellRecord = ray.get(ref)
            return record
        except ray.exceptions.RayError as err:
            return self.context.lost(
                spec,
                f"Ray task failed ({type(err).__name__}) while running this cell",
                f"{err}\nThe run went on; --resume runs this cell again.",
            )

    def abandon(self, signal_name: str) -> list[CellRecord]:
        """Records of tasks already finished; the others are cancelled (their workers killed)."""
        ray = _ray()
        out: list[CellRecord] = []
        if self.pending:
            done, _ = ray.wait(list(self.pending), num_returns=len(self.pending), timeout=0)
            out.extend(self._collect(ray, ref) for ref in done)
        for ref, spec in list(self.pending.items()):
            ray.cancel(ref, force=True)
            out.append(self.interrupted(spec, signal_name, "a Ray task"))
        self.pending.clear()
        return out

    def close(self) -> None:
        if self._started_cluster:
            _ray().shutdown()
            self._started_cluster = False


# -- slurm ------------------------------------------------------------------------------------
def _submitit() -> ModuleType:
    return import_extra("submitit", extra="slurm", needed_for="the slurm executor")


class SlurmCellTask:
    """What each Slurm job runs: one cell (:func:`~snnarena.executor.execute_job`), requeued when
    the job is preempted.

    submitit answers the scheduler's preemption signal by requeuing the job and exiting. Arriving in
    the middle of a cell, that exit would be recorded as the cell's failure, so while the cell runs
    the signal raises :class:`~snnarena.errors.WorkerStopped` instead, which passes through the
    cell's error handling; submitit's own handler then requeues the job, and the cell runs again
    from its start (cells keep no partial state). A job that ran out of its time limit is not
    requeued (it would run out again): its cell is recorded failed, naming the job's logs."""

    def __call__(self, job: CellJob) -> CellRecord:
        preemption = _submitit().JobEnvironment._usr_sig()
        requeue = signal.getsignal(preemption)
        caught: list[tuple[int, Any]] = []

        def stop(signum: int, frame: Any) -> None:
            caught.append((signum, frame))
            raise WorkerStopped(f"signal {signal.Signals(signum).name}: the job is preempted")

        signal.signal(preemption, stop)
        try:
            return execute_job(job)
        except WorkerStopped:
            if not callable(requeue):
                raise
            requeue(*caught[0])  # submitit requeues a preempted job (not one that ran out of time) and exits
            raise
        finally:
            signal.signal(preemption, requeue)


class SlurmExecutor(Executor):
    """The cells as one Slurm array job, one array task per cell, submitted through submitit.

    Each cell's job has its own folder with its log files (``<folder>/<job id>_<task>/``)."""

    name = "slurm"
    extra = "slurm"
    remote = True
    PARAMS = (
        Param("partition", "str", "", "Slurm partition (empty: the cluster's default)"),
        Param("time_limit_min", "int", 60, "time limit of each cell's job, in minutes", low=1),
        Param("gpus_per_cell", "int", 0, "GPUs of each cell's job", low=0),
        Param("cpus_per_cell", "int", 1, "CPUs of each cell's job", low=1),
        Param(
            "mem_gb",
            "float",
            None,
            "memory of each cell's job in GB (default: the partition's)",
            low=0.0,
            nullable=True,
        ),
        Param("array_parallelism", "int", 256, "array tasks (cells) running at once", low=1),
        Param("account", "str", "", "account to charge (empty: your default)"),
        Param("qos", "str", "", "quality of service (empty: the default)"),
        Param("constraint", "str", "", "node features required, e.g. 'a100' (empty: any)"),
        Param("folder", "str", "", "job scripts, results and logs of the jobs (default: <run dir>/slurm)"),
        Param("poll_s", "float", 10.0, "seconds between checks of the jobs' states", low=0.1),
        Param(
            "cluster",
            "str",
            "slurm",
            "slurm, or local: each cell's job a local process through submitit's local executor "
            "(the same code path without the scheduler, for tests and workstations)",
            choices=("slurm", "local"),
        ),
    )

    def __init__(self, context: ExecutionContext, params: Mapping[str, Any]) -> None:
        super().__init__(context, params)
        self.pending: list[tuple[Any, CellSpec]] = []

    @classmethod
    def check_environment(cls, params: Mapping[str, Any]) -> None:
        _submitit()

    @property
    def folder(self) -> Path:
        return Path(self.params["folder"] or self.context.run_dir / "slurm").resolve()

    def parameters(self) -> dict[str, Any]:
        """submitit's ``AutoExecutor.update_parameters`` arguments for the options (empty options
        are left to the cluster's defaults)."""
        p = self.params
        out: dict[str, Any] = {
            "name": f"snnarena-{self.context.run_id}",
            "timeout_min": p["time_limit_min"],
            "gpus_per_node": p["gpus_per_cell"],
            "cpus_per_task": p["cpus_per_cell"],
            "tasks_per_node": 1,
            "nodes": 1,
            "slurm_array_parallelism": p["array_parallelism"],
        }
        if p["mem_gb"] is not None:
            out["mem_gb"] = p["mem_gb"]
        for option, key in (("partition", "slurm_partition"), ("account", "slurm_account"), ("qos", "slurm_qos")):
            if p[option]:
                out[key] = p[option]
        if p["constraint"]:
            out["slurm_constraint"] = p["constraint"]
        return out

    def submitit_executor(self) -> Any:
        executor = _submitit().AutoExecutor(folder=self.folder / "%j", cluster=self.params["cluster"])
        executor.update_parameters(**self.parameters())
        return executor

    def submit(self, cells: list[CellSpec]) -> list[tuple[Any, CellSpec]]:
        """Submit ``cells`` as one array job (a single cell: one job); the jobs with their cells."""
        jobs = self.submitit_executor().map_array(SlurmCellTask(), [self.context.job(spec) for spec in cells])
        self.pending = list(zip(jobs, cells, strict=True))
        return self.pending

    def records(self, cells: list[CellSpec]) -> Iterator[CellRecord]:
        self.submit(cells)
        while self.pending:
            finished = [(job, spec) for job, spec in self.pending if job.done()]
            if not finished:
                time.sleep(self.params["poll_s"])
                continue
            for item in finished:
                self.pending.remove(item)
                yield self._collect(*item)

    def _collect(self, job: Any, spec: CellSpec) -> CellRecord:
        """The record a finished job returned, or (it was killed, preempted, timed out) a failed record."""
        try:
            record: CellRecord = job.result()
            return record
        except Exception as err:  # submitit's UncompletedJobError / FailedJobError
            return self.context.lost(
                spec,
                f"Slurm job {job.job_id} ended without a result ({job.state})",
                f"{type(err).__name__}: {err}\nits logs: {job.paths.stdout} and {job.paths.stderr}\n"
                "--resume runs this cell again.",
            )

    def abandon(self, signal_name: str) -> list[CellRecord]:
        """Records of jobs already finished; the others are cancelled (scancel)."""
        out: list[CellRecord] = []
        for job, spec in self.pending:
            if job.done():
                out.append(self._collect(job, spec))
            else:
                job.cancel(check=False)
                out.append(self.interrupted(spec, signal_name, f"Slurm job {job.job_id}"))
        self.pending = []
        return out


@snnarena.hookimpl
def register_executors(register: Any) -> None:
    register(LocalExecutor)
    register(ProcessExecutor)
    register(RayExecutor)
    register(SlurmExecutor)


__all__ = ["CellJob", "LocalExecutor", "ProcessExecutor", "RayExecutor", "SlurmExecutor", "register_executors"]
