"""profile_cell: a tiny cell profiled on CPU writes a trace, an operator table and a summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from snnarena.profiling import CellSkipped, profile_cell
from snnarena.suite import parse_suite

SUITE = """
name = "profile-test"
[train]
steps = 3
batch_size = 16
[grid]
T = [4]
[[methods]]
name = "bptt"
[[models]]
name = "{model}"
params = {params}
[[datasets]]
name = "digits"
"""


def test_profile_tiny_cell_on_cpu(host, tmp_path: Path) -> None:
    (spec,) = parse_suite(SUITE.format(model="mlp", params="{ hidden = [8] }"), host).cells
    files = profile_cell(spec, host, tmp_path / "prof", steps=2, device="cpu")
    assert set(files) == {"trace", "tensorboard", "operators_csv", "operators_table", "summary"}
    assert all(p.exists() for p in files.values())
    assert files["trace"].parent == tmp_path / "prof" / "tb"
    assert files["trace"].name.endswith(".pt.trace.json")
    trace = json.loads(files["trace"].read_text())
    names = {e.get("name") for e in trace["traceEvents"]}
    assert {"train_step", "phase:forward", "phase:backward", "phase:optimizer"} <= names
    with files["operators_csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    keys = {r["key"] for r in rows}
    assert any(k in keys for k in ("aten::addmm", "aten::mm"))
    train_step = next(r for r in rows if r["key"] == "train_step")
    assert int(train_step["count"]) == 2  # the warm-up step is not recorded
    summary = json.loads(files["summary"].read_text())
    assert summary["cell_id"] == spec.cell_id and summary["profiled_steps"] == 2
    assert summary["median_ms"]["step_time_ms"] > 0


def test_profile_refuses_a_skipped_cell(host, tmp_path: Path) -> None:
    (spec,) = parse_suite(SUITE.format(model="convnet", params="{ channels = [2] }"), host).cells
    with pytest.raises(CellSkipped, match="convnet needs image inputs"):
        profile_cell(spec, host, tmp_path, steps=1, device="cpu")
