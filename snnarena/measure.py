"""Measurements taken while a cell trains: phase times and bytes saved for backward.

* :class:`PhaseClock` times the ``forward``/``backward``/``optimizer`` phases of a training step
  (``torch.cuda.synchronize`` around each phase on CUDA so the time is the device's).
* :class:`SavedTensorMeter` counts the bytes autograd keeps for the backward pass, through
  ``torch.autograd.graph.saved_tensors_hooks``: each saved tensor is counted once per storage
  while any graph holds it, parameters excluded. The peak is deterministic and device-independent:
  BPTT's grows linearly in ``T``, an online method's stays flat. Tensors a method keeps for its
  backward outside autograd (checkpoints, traces) are added with :func:`report_held_bytes`.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

PHASES: tuple[str, ...] = ("forward", "backward", "optimizer")


class PhaseClock:
    """Accumulates wall time per phase for one training step at a time."""

    def __init__(self, device: torch.device | str = "cpu", enabled: bool = True) -> None:
        self.cuda = torch.device(device).type == "cuda"
        self.enabled = enabled
        self.current: dict[str, float] = defaultdict(float)
        self.steps: list[dict[str, float]] = []

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the enclosed code as part of phase ``name`` of the current step."""
        if not self.enabled:
            yield
            return
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.cuda:
                torch.cuda.synchronize()
            self.current[name] += time.perf_counter() - start

    def end_step(self) -> dict[str, float]:
        """Close the current step; returns its times in seconds per phase."""
        times = {p: self.current.get(p, 0.0) for p in PHASES}
        self.steps.append(times)
        self.current = defaultdict(float)
        return times

    def summary_ms(self, warmup: int) -> dict[str, float]:
        """Median and interquartile range (ms) of each phase and of the whole step, over the steps
        after ``warmup``: ``step_time_ms``, ``step_time_iqr_ms``, ``<phase>_ms``, ``<phase>_iqr_ms``.

        With fewer measured steps than ``warmup + 1`` every step is used; with none, all are NaN.
        """
        steps = self.steps[warmup:] if len(self.steps) > warmup else self.steps
        series = {"step_time": [sum(s.values()) for s in steps], **{p: [s[p] for s in steps] for p in PHASES}}
        out: dict[str, float] = {}
        for name, seconds in series.items():
            median, iqr = _median_and_iqr(seconds)
            out[f"{name}_ms"] = 1e3 * median
            out[f"{name}_iqr_ms"] = 1e3 * iqr
        return out


def _median_and_iqr(values: list[float]) -> tuple[float, float]:
    """``(median, Q3 − Q1)`` of ``values``; NaN for an empty list, an IQR of 0 for one value."""
    if not values:
        return float("nan"), float("nan")
    if len(values) == 1:
        return values[0], 0.0
    q1, _, q3 = statistics.quantiles(values, n=4)
    return statistics.median(values), q3 - q1


#: Meters currently entered (innermost last); see :func:`report_held_bytes`.
_ACTIVE_METERS: list[SavedTensorMeter] = []


def report_held_bytes(nbytes: int) -> None:
    """Tell the active :class:`SavedTensorMeter` (if any) that a method now keeps ``nbytes`` more
    (or, negative, fewer) bytes *outside* autograd for its backward pass: checkpointed states,
    presynaptic traces. Autograd's own saved tensors are counted automatically; tensors a method
    stores itself are only counted through this call, so memory-light methods are compared fairly.
    """
    for meter in _ACTIVE_METERS:
        meter.add_held(nbytes)


class _Held:
    """Placeholder autograd keeps instead of a saved tensor; releases its storage's bytes from
    ``meter`` when freed (``__del__``: far cheaper per saved tensor than a ``weakref.finalize``)."""

    __slots__ = ("tensor", "meter", "key")

    def __init__(self, tensor: Tensor, meter: SavedTensorMeter, key: int) -> None:
        self.tensor = tensor
        self.meter = meter
        self.key = key

    def __del__(self) -> None:
        self.meter._release(self.key)


class SavedTensorMeter:
    """Context manager tracking live and peak bytes saved for backward.

    ``exclude`` are tensors (usually the parameters) whose storage is not counted; they must stay
    alive while the meter is entered (a storage is known by its address).
    """

    def __init__(self, exclude: Iterable[Tensor] = ()) -> None:
        self._excluded = {t.untyped_storage().data_ptr() for t in exclude}
        #: Live storages by address: ``[saved tensors holding it, its bytes]``. A storage cannot
        #: move or be freed while a saved tensor holds it, so its address names it while listed.
        self._refs: dict[int, list[int]] = {}
        self.live_bytes = 0
        self.peak_bytes = 0
        self._hooks: Any = None

    def _pack(self, t: Tensor) -> Any:
        if t.layout is not torch.strided or t.is_meta:
            return t
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in self._excluded:
            return t
        entry = self._refs.get(key)
        if entry is None:
            nbytes = storage.nbytes()
            self._refs[key] = [1, nbytes]
            self.live_bytes += nbytes
            if self.live_bytes > self.peak_bytes:
                self.peak_bytes = self.live_bytes
        else:
            entry[0] += 1
        return _Held(t, self, key)

    @staticmethod
    def _unpack(held: Any) -> Tensor:
        return held.tensor if type(held) is _Held else held

    def _release(self, key: int) -> None:
        entry = self._refs[key]
        entry[0] -= 1
        if entry[0] == 0:
            del self._refs[key]
            self.live_bytes -= entry[1]

    def add_held(self, nbytes: int) -> None:
        """Count bytes a method holds outside autograd (see :func:`report_held_bytes`)."""
        self.live_bytes += nbytes
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)

    def reset_peak(self) -> None:
        self.peak_bytes = self.live_bytes

    def __enter__(self) -> SavedTensorMeter:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        _ACTIVE_METERS.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _ACTIVE_METERS.remove(self)
        self._hooks.__exit__(*exc)
        self._hooks = None


class DeviceMemory:
    """Peak device memory on CUDA (``max_memory_allocated`` after a reset); NaN on CPU."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_bytes(self) -> float:
        if self.device.type == "cuda":
            return float(torch.cuda.max_memory_allocated(self.device))
        return float("nan")
