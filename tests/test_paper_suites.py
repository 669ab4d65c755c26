"""The paper-scale suites (``suites/paper-*.toml``) run: on fake files in the datasets' real
on-disk formats, every model and method of each suite trains one tiny step (width 1/16, batch 2).

The suites themselves are untouched: the test loads each one under a data root holding the fake
files, then shrinks each selected cell (budget, batch, network width, sample counts) before running
it, so a broken model × method × dataset combination of a shipped suite fails here, not on a GPU.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from test_event_datasets import write_cifar10_dvs, write_dvs_gesture, write_shd
from test_image_datasets import write_cifar10, write_cifar100, write_imagenet

from snnarena.cell import run_cell
from snnarena.executor import data_root_env
from snnarena.host import PluginHost
from snnarena.suite import CellSpec, load_suite, shipped_suites

#: paper suite → the fake files it reads (written under the data root).
WRITERS: dict[str, Any] = {
    "paper-cifar10": write_cifar10,
    "paper-cifar100": write_cifar100,
    "paper-imagenet": write_imagenet,
    "paper-cifar10dvs": write_cifar10_dvs,
    "paper-dvsgesture": write_dvs_gesture,
    "paper-shd": write_shd,
}
#: What every selected cell is shrunk to: one optimizer step on two samples.
TINY_TRAIN = {"steps": 1, "epochs": None, "batch_size": 2, "eval_batch_size": 4, "fidelity": False}


def test_every_paper_suite_has_fake_files() -> None:
    assert {name for name in shipped_suites() if name.startswith("paper-")} == set(WRITERS)


def tiny(spec: CellSpec) -> CellSpec:
    model_params = dict(spec.model_params)
    if "width" in model_params or spec.model != "mlp":
        model_params["width"] = 1 / 16
    dataset_params = (
        {**spec.dataset_params, "stream": False} if "stream" in spec.dataset_params else spec.dataset_params
    )
    if spec.dataset == "imagenet":
        dataset_params = {**dataset_params, "crop_size": 8, "resize_size": 10}
    train = {**spec.train, **TINY_TRAIN, "eval_every_epoch": False, "select": "last"}
    return dataclasses.replace(spec, model_params=model_params, dataset_params=dataset_params, train=train)


def one_cell_per_model_and_method(cells: list[CellSpec]) -> list[CellSpec]:
    seen: dict[tuple[str, str, str], CellSpec] = {}
    for spec in cells:
        seen.setdefault((spec.model, spec.method, spec.preset), spec)
    return list(seen.values())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(WRITERS))
def test_paper_suite_trains_one_tiny_step_per_model_and_method(host: PluginHost, tmp_path: Path, name: str) -> None:
    WRITERS[name](tmp_path)
    suite = load_suite(name, host, data_root=str(tmp_path))  # validation: files, plugins, combinations
    statuses = {}
    for spec in one_cell_per_model_and_method(suite.cells):
        with data_root_env(str(tmp_path)):  # as every executor runs a cell of a run with a data root
            record = run_cell(tiny(spec), host, "paper-suite-test", "cpu")
        statuses[(spec.model, spec.method, spec.preset)] = (record.row["status"], record.row["reason"])
    failed = {key: reason for key, (status, reason) in statuses.items() if status == "failed"}
    assert not failed, failed
    assert any(status == "done" for status, _ in statuses.values())
