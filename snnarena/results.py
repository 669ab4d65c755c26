"""The run directory: the single source of truth of a suite run.

Layout of ``results/<suite>/<run_id>/``::

    manifest.json        suite name, source, environment (versions, device, git commit, plugins)
    suite.toml           a copy of the suite file as it was run
    cells/<cell_id>.json one file per finished cell: {"spec", "row", "curves", "traceback"}
    results.parquet      one row per cell (+ results.csv), rebuilt after every cell
    curves.parquet       per-epoch learning curves of every cell

Every file is written to a temporary name and renamed, so an interrupted run never leaves a
half-written file, and the aggregate tables are always rebuilt from the per-cell files.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

#: Columns every results table has, in this order (the public contract users script against).
RESULT_COLUMNS: tuple[str, ...] = (
    "run_id", "suite", "cell_id", "label", "method", "method_params", "model", "model_params",
    "dataset", "dataset_params", "neuron", "neuron_params", "surrogate", "loss", "T", "seed",
    "status", "reason", "test_accuracy", "train_loss", "step_time_ms", "step_time_iqr_ms",
    "forward_ms", "backward_ms", "optimizer_ms", "peak_activation_bytes", "peak_device_bytes",
    "grad_cosine_bptt", "grad_norm_ratio_bptt", "grad_sign_agreement_bptt", "grad_cosine_layers",
    "spike_rate", "n_parameters", "extra_parameters", "memory_class", "train_steps", "epochs", "batch_size",
    "device", "torch_threads", "torch_version", "snnarena_version", "plugin", "plugin_version", "plugin_versions",
    "metric_errors", "duration_s",
)
CURVE_COLUMNS: tuple[str, ...] = (
    "run_id", "cell_id", "method", "model", "dataset", "T", "seed", "epoch", "step", "train_loss",
    "test_accuracy", "elapsed_s",
)
FINISHED = ("done", "skipped")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_frame(frame: pd.DataFrame, path: Path, kind: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if kind == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


@dataclass
class CellRecord:
    """What one cell produced: its spec, its results row, its curves, and a traceback if failed."""

    spec: dict[str, Any]
    row: dict[str, Any]
    curves: list[dict[str, Any]]
    traceback: str = ""

    def to_json(self) -> str:
        return json.dumps(_json_safe(self.__dict__), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CellRecord:
        data = json.loads(text)
        return cls(data["spec"], data["row"], data["curves"], data.get("traceback", ""))


class RunDirectory:
    """Reads and writes one run directory (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # cell records by id, read from disk once and then kept in step with write_cell
        self._records: dict[str, CellRecord] | None = None

    @property
    def cells_dir(self) -> Path:
        return self.path / "cells"

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def write_manifest(self, manifest: dict[str, Any], suite_text: str) -> None:
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / "suite.toml", suite_text)
        atomic_write_text(self.manifest_path, json.dumps(_json_safe(manifest), indent=1, sort_keys=True))

    def manifest(self) -> dict[str, Any]:
        if not self.exists():
            raise FileNotFoundError(f"{self.path} is not a snnarena run directory (no manifest.json)")
        data: dict[str, Any] = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        return data

    def write_cell(self, record: CellRecord) -> None:
        cell_id = record.row["cell_id"]
        atomic_write_text(self.cells_dir / f"{cell_id}.json", record.to_json())
        if self._records is not None:
            self._records[cell_id] = record

    def records(self) -> list[CellRecord]:
        """Every cell record, ordered by cell id; unreadable files raise with their path."""
        if self._records is None:
            self._records = {}
            for path in self.cells_dir.glob("*.json"):
                try:
                    self._records[path.stem] = CellRecord.from_json(path.read_text(encoding="utf-8"))
                except (json.JSONDecodeError, KeyError) as err:
                    raise ValueError(f"{path}: not a valid cell record ({err})") from err
        return [self._records[k] for k in sorted(self._records)]

    def finished_ids(self) -> set[str]:
        """Cells that need not run again: done or skipped (failed cells are retried)."""
        return {r.row["cell_id"] for r in self.records() if r.row.get("status") in FINISHED}

    def aggregate(self) -> pd.DataFrame:
        """Rebuild ``results.parquet``/``.csv`` and ``curves.parquet`` from the cell files."""
        records = self.records()
        results = rows_frame(r.row for r in records)
        curves = pd.DataFrame([c for r in records for c in r.curves], columns=list(CURVE_COLUMNS))
        _atomic_frame(results, self.path / "results.parquet", "parquet")
        _atomic_frame(results, self.path / "results.csv", "csv")
        _atomic_frame(curves, self.path / "curves.parquet", "parquet")
        return results


def rows_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """A results table with the contract columns first, metric columns after."""
    frame = pd.DataFrame(list(rows))
    for column in RESULT_COLUMNS:
        if column not in frame.columns:
            frame[column] = pd.Series(dtype="object")
    extra = [c for c in frame.columns if c not in RESULT_COLUMNS]
    frame = frame[list(RESULT_COLUMNS) + sorted(extra)]
    for column in frame.columns:
        if frame[column].dtype == object and frame[column].map(lambda v: v is None or isinstance(v, (int, float))).all():
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def load_run(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(results, curves)`` of a run directory, read from its parquet files."""
    run = RunDirectory(path)
    run.manifest()
    results_path = run.path / "results.parquet"
    if not results_path.is_file():
        run.aggregate()
    return pd.read_parquet(results_path), pd.read_parquet(run.path / "curves.parquet")
