# docs/examples/executor_plugin.py
"""An executor (``futures``) that runs cells in a ``concurrent.futures`` process pool.

A lab's own scheduler plugs in the same way: submit each cell's picklable job, have the worker
call :func:`snnarena.executor.execute_job` on it, and yield the records as they come back. The
run directory is written by the ``snnarena run`` process alone, from the records this yields.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from collections.abc import Iterator

import snnarena
from snnarena.executor import Executor, execute_job
from snnarena.params import Param
from snnarena.registry import Register
from snnarena.results import CellRecord
from snnarena.suite import CellSpec

__version__ = "1.0"


class FuturesExecutor(Executor):
    """Runs every cell in a pool of ``workers`` spawned processes."""

    name = "futures"
    PARAMS = (Param("workers", "int", 2, "worker processes", low=1),)

    def records(self, cells: list[CellSpec]) -> Iterator[CellRecord]:
        context = multiprocessing.get_context("spawn")  # torch and fork do not mix
        self.pool = cf.ProcessPoolExecutor(self.params["workers"], mp_context=context)
        self.running = {self.pool.submit(execute_job, self.context.job(spec)): spec for spec in cells}
        for future in cf.as_completed(list(self.running)):
            spec = self.running.pop(future)
            try:
                yield future.result()
            except cf.process.BrokenProcessPool as err:  # the worker died: fail this cell, --resume reruns it
                yield self.context.lost(spec, "worker died", repr(err))

    def abandon(self, signal_name: str) -> list[CellRecord]:
        """Cancel what has not started; every unfinished cell is recorded as interrupted."""
        for future in self.running:
            future.cancel()
        return [self.interrupted(spec, signal_name, "a futures worker") for spec in self.running.values()]

    def close(self) -> None:
        if hasattr(self, "pool"):
            self.pool.shutdown(wait=True, cancel_futures=True)


@snnarena.hookimpl
def register_executors(register: Register) -> None:
    register(FuturesExecutor)
