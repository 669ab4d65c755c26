"""Profiling a few training steps of one cell with ``torch.profiler``.

:func:`profile_cell` builds the cell exactly as :mod:`snnarena.cell` does (same builders, seeds,
optimizer), runs one warm-up step and ``steps`` profiled steps of the method's ``train_step``, and
writes into ``out_dir``::

    tb/<worker>.<timestamp>.pt.trace.json  Chrome trace in the TensorBoard profiler layout: opens in
                                           Perfetto (ui.perfetto.dev), chrome://tracing, or TensorBoard
                                           with the optional torch-tb-profiler (``pip install
                                           snnarena[profile]``; never imported here)
    operators.csv                          ``key_averages()``: one row per operator, times in µs
    operators.txt                          the same as a text table
    memory_snapshot.pickle                 CUDA only: allocator history for pytorch.org/memory_viz
    profile.json                           what was profiled, device, median phase times

Every phase of the step (``forward``/``backward``/``optimizer``, as the method's clock names them)
is a ``phase:<name>`` range in the trace, inside one ``train_step`` range per step.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.autograd.profiler_util import FunctionEventAvg
from torch.profiler import ProfilerActivity, record_function, schedule, tensorboard_trace_handler

import snnarena
from snnarena.cell import CellSkipped, build_cell, resolve_device
from snnarena.host import PluginHost
from snnarena.measure import PhaseClock
from snnarena.suite import CellSpec

WARMUP_STEPS = 1
OPERATOR_COLUMNS: tuple[str, ...] = (
    "key",
    "count",
    "self_cpu_time_total_us",
    "cpu_time_total_us",
    "cpu_time_avg_us",
    "self_device_time_total_us",
    "device_time_total_us",
    "self_cpu_memory_bytes",
    "cpu_memory_bytes",
    "self_device_memory_bytes",
    "device_memory_bytes",
    "flops",
)


class _ProfiledClock(PhaseClock):
    """A :class:`PhaseClock` that also marks each phase as a ``phase:<name>`` profiler range."""

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        with record_function(f"phase:{name}"), super().phase(name):
            yield


def _worker_name(spec: CellSpec) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", f"{spec.method}-{spec.cell_id}")


def _write_operators(events: list[FunctionEventAvg], path: Path) -> None:
    rows = [
        (
            e.key,
            e.count,
            e.self_cpu_time_total,
            e.cpu_time_total,
            e.cpu_time,
            e.self_device_time_total,
            e.device_time_total,
            e.self_cpu_memory_usage,
            e.cpu_memory_usage,
            e.self_device_memory_usage,
            e.device_memory_usage,
            e.flops,
        )
        for e in events
    ]
    rows.sort(key=lambda r: (-(r[5] or 0), -(r[2] or 0)))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(OPERATOR_COLUMNS)
        writer.writerows(rows)


def profile_cell(
    spec: CellSpec, host: PluginHost, out_dir: Path, steps: int = 5, device: str = "auto"
) -> dict[str, Path]:
    """Profile ``steps`` training steps of ``spec`` (after one warm-up step); returns the files
    written, by kind: ``trace``, ``tensorboard`` (the folder), ``operators_csv``,
    ``operators_table``, ``summary`` and, on CUDA, ``memory_snapshot``.

    Raises :class:`~snnarena.cell.CellSkipped` (naming the cell) when its model or method would
    skip it: there is nothing to profile.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    out_dir = Path(out_dir)
    tb_dir = out_dir / "tb"
    tb_dir.mkdir(parents=True, exist_ok=True)
    torch_device = resolve_device(device)
    cuda = torch_device.type == "cuda"

    try:
        built = build_cell(spec, host, torch_device)
    except CellSkipped as skip:
        raise CellSkipped(f"{spec.label}: skipped: {skip.reason}") from None
    data, method, prepared, loss, optimizer = built.data, built.method, built.prepared, built.loss, built.optimizer

    generator = torch.Generator().manual_seed(spec.seed)
    batches: list[tuple[torch.Tensor, torch.Tensor]] = []
    while len(batches) < WARMUP_STEPS + steps:
        before = len(batches)
        for x, y in data.train_batches(spec.train["batch_size"], generator):
            batches.append((x.to(torch_device), y.to(torch_device)))
            if len(batches) == WARMUP_STEPS + steps:
                break
        if len(batches) == before:
            raise ValueError(f"{spec.dataset} has no training batch to profile")

    worker = _worker_name(spec)
    for old in tb_dir.glob(f"{worker}.*.pt.trace.json*"):
        old.unlink()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    clock = _ProfiledClock(torch_device)
    snapshot = out_dir / "memory_snapshot.pickle"
    if cuda:
        torch.cuda.memory._record_memory_history(max_entries=200_000)
    prepared.train()
    try:
        with torch.profiler.profile(
            activities=activities,
            schedule=schedule(wait=0, warmup=WARMUP_STEPS, active=steps, repeat=1),
            on_trace_ready=tensorboard_trace_handler(str(tb_dir), worker_name=worker),
            record_shapes=True,
            profile_memory=True,
        ) as prof:
            for x, y in batches:
                with record_function("train_step"):
                    method.train_step(prepared, x, y, loss, optimizer, clock)
                clock.end_step()
                prof.step()
        if cuda:
            torch.cuda.synchronize(torch_device)
            torch.cuda.memory._dump_snapshot(str(snapshot))
    finally:
        if cuda:
            torch.cuda.memory._record_memory_history(enabled=None)

    traces = sorted(tb_dir.glob(f"{worker}.*.pt.trace.json*"))
    if not traces:
        raise RuntimeError(f"torch.profiler wrote no trace into {tb_dir}")
    files: dict[str, Path] = {"trace": traces[-1], "tensorboard": tb_dir}
    averages = prof.key_averages()
    files["operators_csv"] = out_dir / "operators.csv"
    _write_operators(list(averages), files["operators_csv"])
    files["operators_table"] = out_dir / "operators.txt"
    sort_by = "self_device_time_total" if cuda else "self_cpu_time_total"
    files["operators_table"].write_text(averages.table(sort_by=sort_by, row_limit=60), encoding="utf-8")
    if cuda:
        files["memory_snapshot"] = snapshot
    files["summary"] = out_dir / "profile.json"
    summary = {
        "cell_id": spec.cell_id,
        "label": spec.label,
        "spec": spec.to_dict(),
        "device": str(torch_device),
        "gpu": torch.cuda.get_device_name(torch_device) if cuda else None,
        "torch": torch.__version__,
        "snnarena": snnarena.__version__,
        "warmup_steps": WARMUP_STEPS,
        "profiled_steps": steps,
        "median_ms": clock.summary_ms(WARMUP_STEPS),
        "files": {k: str(v.relative_to(out_dir)) for k, v in files.items() if k != "summary"},
    }
    files["summary"].write_text(json.dumps(summary, indent=1, sort_keys=True, default=str), encoding="utf-8")
    return files
