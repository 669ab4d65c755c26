"""One cell end to end: what run_cell records for untrained or non-finite parameters, a plugin's
SystemExit, Ctrl-C, metric contract breaches, and the training settings of every row."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from plugin_fixtures import TINY_SUITE
from torch import nn

import snnarena
from snnarena.cell import CellSkipped, _Interrupted, build_cell, run_cell
from snnarena.columns import Column
from snnarena.host import PluginHost
from snnarena.metric import Metric
from snnarena.results import CURVE_COLUMNS
from snnarena.suite import CellSpec, parse_suite
from snnarena_plugins.bptt import BPTT
from snnarena_plugins.models import SpikingMLP


class MLPWithUnusedWeight(SpikingMLP):
    """The built-in MLP plus a trainable parameter that no forward pass reads."""

    name = "mlp_unused"

    def __init__(self, *args: Any, **params: Any) -> None:
        super().__init__(*args, **params)
        self.unused = nn.Parameter(torch.zeros(3))


class BPTTFreezingUnused(BPTT):
    """BPTT that declares the parameter it leaves alone."""

    name = "bptt_freezing_unused"

    def frozen_parameters(self, prepared: nn.Module, model: Any) -> set[str]:
        return {"unused"}


class BPTTFreezingTypo(BPTT):
    name = "bptt_freezing_typo"

    def frozen_parameters(self, prepared: nn.Module, model: Any) -> set[str]:
        return {"unsued"}


class Exits(BPTT):
    """A plugin that calls sys.exit in the middle of training."""

    name = "exits"

    def accumulate_gradients(self, *args: Any) -> float:
        raise SystemExit(3)


class InterruptedInEpochTwo(BPTT):
    """Ctrl-C during the 6th training step (tiny_blobs has 4 batches of 16 per epoch)."""

    name = "interrupted"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.calls = 0

    def accumulate_gradients(self, *args: Any) -> float:
        self.calls += 1
        if self.calls == 6:
            raise KeyboardInterrupt
        return super().accumulate_gradients(*args)


class Undeclared(Metric):
    name = "undeclared_metric"
    columns = (Column("declared_value", None),)

    def compute(self, ctx: Any) -> dict[str, float]:
        return {"declared_value": 1.0, "surprise": 2.0}


class NotANumber(Metric):
    name = "text_metric"
    columns = (Column("text_value", None),)

    def compute(self, ctx: Any) -> dict[str, Any]:
        return {"text_value": "high"}


class NoColumns(Metric):
    name = "columnless_metric"

    def compute(self, ctx: Any) -> dict[str, float]:
        return {"anything": 1.0}


class ExitingMetric(Metric):
    name = "exiting_metric"
    columns = (Column("exit_value", None),)

    def compute(self, ctx: Any) -> dict[str, float]:
        raise SystemExit("metric quits")


class Good(Metric):
    name = "good_metric"
    columns = (Column("good_value", True),)

    def compute(self, ctx: Any) -> dict[str, float]:
        return {"good_value": 0.5}


class CellTestPlugin:
    @snnarena.hookimpl
    def register_models(self, register: Any) -> None:
        register(MLPWithUnusedWeight)

    @snnarena.hookimpl
    def register_gradient_methods(self, register: Any) -> None:
        for cls in (BPTTFreezingUnused, BPTTFreezingTypo, Exits, InterruptedInEpochTwo):
            register(cls)

    @snnarena.hookimpl
    def register_metrics(self, register: Any) -> None:
        for cls in (Undeclared, NotANumber, NoColumns, ExitingMetric, Good):
            register(cls)


@pytest.fixture
def cell_host(arena_host: PluginHost) -> Iterator[PluginHost]:
    """The arena host (tiny_blobs ...) plus this module's throwaway plugins."""
    arena_host.add_plugin(CellTestPlugin(), "cell-test-plugin")
    try:
        yield arena_host
    finally:
        arena_host.remove_plugin("cell-test-plugin")


def one_cell(
    host: PluginHost, method: str = "bptt", model: str = "mlp", params: str = "{}", **changes: Any
) -> CellSpec:
    """The first cell of the tiny suite with ``method``/``model``, fields changed by ``changes``."""
    text = TINY_SUITE.format(behaviours='["ok"]').replace('name = "bptt"', f'name = "{method}"\nparams = {params}')
    spec = next(c for c in parse_suite(text, host).cells if c.method == method)
    return dataclasses.replace(spec, model=model, **changes)


def test_a_parameter_no_method_touches_fails_the_cell(cell_host: PluginHost) -> None:
    for method in ("bptt", "ottt"):
        record = run_cell(one_cell(cell_host, method, "mlp_unused"), cell_host, "r", "cpu")
        assert record.row["status"] == "failed", method
        assert "UntrainedParametersError" in record.row["reason"] and "unused" in record.row["reason"]
        assert "stages" not in record.row["reason"]  # only the parameter without gradient is named


def test_a_declared_frozen_parameter_is_accepted(cell_host: PluginHost) -> None:
    record = run_cell(one_cell(cell_host, "bptt_freezing_unused", "mlp_unused"), cell_host, "r", "cpu")
    assert record.row["status"] == "done", record.row["reason"]
    typo = run_cell(one_cell(cell_host, "bptt_freezing_typo", "mlp_unused"), cell_host, "r", "cpu")
    assert typo.row["status"] == "failed" and "frozen_parameters names" in typo.row["reason"]
    assert "unsued" in typo.row["reason"]


@pytest.mark.parametrize("method, params", [("tbptt", "{ K = 2, update = 'segment' }"), ("ottt", "{ mode = 'O' }")])
def test_methods_that_update_within_a_batch_pass_the_gradient_check(
    cell_host: PluginHost, method: str, params: str
) -> None:
    record = run_cell(one_cell(cell_host, method, params=params), cell_host, "r", "cpu")
    assert record.row["status"] == "done", record.row["reason"]


def test_non_finite_weights_fail_the_cell(cell_host: PluginHost) -> None:
    spec = one_cell(cell_host)
    spec = dataclasses.replace(
        spec, optimizer={**spec.optimizer, "lr": math.inf}, train={**spec.train, "epochs": None, "steps": 1}
    )
    record = run_cell(spec, cell_host, "r", "cpu")
    assert record.row["status"] == "failed"
    assert "parameters became non-finite" in record.row["reason"] and "readout.weight" in record.row["reason"]
    assert math.isnan(record.row.get("test_accuracy", math.nan))


def test_system_exit_from_a_plugin_fails_only_its_cell(cell_host: PluginHost) -> None:
    record = run_cell(one_cell(cell_host, "exits"), cell_host, "r", "cpu")
    assert record.row["status"] == "failed" and record.row["reason"] == "SystemExit: 3"
    assert "Traceback" in record.traceback and "SystemExit" in record.traceback


def test_an_interrupted_cell_keeps_identified_curves(cell_host: PluginHost) -> None:
    spec = one_cell(cell_host, "interrupted")
    with pytest.raises(_Interrupted) as caught:
        run_cell(spec, cell_host, "run-1", "cpu")
    record = caught.value.record
    assert record.row["status"] == "failed" and "KeyboardInterrupt" in record.row["reason"]
    assert len(record.curves) == 1  # the first epoch finished
    (point,) = record.curves
    assert set(point) == set(CURVE_COLUMNS)
    assert (point["run_id"], point["cell_id"], point["method"], point["T"], point["seed"]) == (
        "run-1",
        spec.cell_id,
        "interrupted",
        spec.T,
        spec.seed,
    )
    assert point["model"] == "mlp" and point["dataset"] == "tiny_blobs"


def test_rows_carry_the_training_settings(cell_host: PluginHost) -> None:
    row = run_cell(one_cell(cell_host), cell_host, "r", "cpu").row
    assert row["status"] == "done"
    assert (row["optimizer"], row["lr"], row["weight_decay"], row["momentum"]) == ("adam", 0.03, 0.0, 0.0)
    assert (row["budget_epochs"], row["budget_steps"], row["epochs"], row["train_steps"]) == (2, None, 2, 8)
    assert (row["batch_size"], row["loss"], row["T"], row["seed"]) == (16, "per_step", 4, 0)


def test_metrics_must_return_numbers_for_their_declared_columns(cell_host: PluginHost) -> None:
    metrics = ("undeclared_metric", "text_metric", "columnless_metric", "exiting_metric", "good_metric")
    row = run_cell(one_cell(cell_host, metrics=metrics), cell_host, "r", "cpu").row
    assert row["status"] == "done"
    errors = json.loads(row["metric_errors"])
    assert set(errors) == set(metrics) - {"good_metric"}
    assert "surprise" in errors["undeclared_metric"]
    assert "text_value='high'" in errors["text_metric"]
    assert "declares no columns" in errors["columnless_metric"]
    assert errors["exiting_metric"] == "SystemExit: metric quits"
    assert row["good_value"] == 0.5
    for column in ("declared_value", "text_value", "exit_value"):
        assert math.isnan(row[column]), column
    assert "surprise" not in row


def test_build_cell_raises_cell_skipped_with_the_reason(cell_host: PluginHost) -> None:
    spec = one_cell(cell_host, "flaky", params="{ behaviour = 'skip' }")
    with pytest.raises(CellSkipped) as caught:
        build_cell(spec, cell_host, torch.device("cpu"))
    assert caught.value.reason == "flaky was told to skip"
    record = run_cell(spec, cell_host, "r", "cpu")
    assert (record.row["status"], record.row["reason"], record.curves) == ("skipped", "flaky was told to skip", [])


def test_a_skip_reason_that_is_not_a_string_fails_the_cell(cell_host: PluginHost, monkeypatch) -> None:
    monkeypatch.setattr(BPTT, "skip", lambda self, model, info, loss: 42)
    record = run_cell(one_cell(cell_host), cell_host, "r", "cpu")
    assert record.row["status"] == "failed" and "bptt.skip returned 42" in record.row["reason"]


@pytest.mark.parametrize("device", ["gpu0", "cuda:99"])
def test_an_unusable_device_is_a_configuration_error(device):
    from snnarena.cell import resolve_device
    from snnarena.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="--device"):
        resolve_device(device)


def test_rows_record_each_components_digest(tmp_path):
    from snnarena.host import HostConfig, PluginHost

    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "mysurrogate.py").write_text(
        "import torch\nimport snnarena\nfrom snnarena.neuron import Surrogate\n__version__ = '2.5'\n\n"
        "class Box(Surrogate):\n    name = 'box'\n\n    def derivative(self, x):\n"
        "        return (x.abs() < 0.5).to(x.dtype)\n\n    def primitive(self, x):\n"
        "        return (x + 0.5).clamp(0, 1)\n\n"
        "@snnarena.hookimpl\ndef register_surrogates(register):\n    register(Box)\n"
    )
    host = PluginHost.load(HostConfig(plugins_dirs=(str(folder),)))
    entry = host.get("surrogate", "box")
    assert entry.version == "2.5" and entry.digest
    from snnarena.cell import _plugin_info

    spec = dataclasses.replace(next(iter(parse_suite(BPTT_ON_DIGITS, host).cells)), surrogate="box")
    info = _plugin_info(host, spec)
    assert info["surrogate:box"] == {
        "plugin": "local:mysurrogate",
        "distribution": "local",
        "version": "2.5",
        "digest": entry.digest,
    }


BPTT_ON_DIGITS = """
name = "d"
[train]
steps = 1
[grid]
T = [2]
[[methods]]
name = "bptt"
[[models]]
name = "mlp"
params = { hidden = [4] }
[[datasets]]
name = "digits"
"""


def test_a_batch_larger_than_memory_fails_the_cell_before_training(cell_host: PluginHost, monkeypatch) -> None:

    monkeypatch.setattr("snnarena.suite.machine_memory_bytes", lambda: 1000)  # tiny_blobs declares no input_size
    record = run_cell(one_cell(cell_host), cell_host, "r", "cpu")
    assert record.row["status"] == "failed"
    assert "needs about" in record.row["reason"] and "more than this machine's memory" in record.row["reason"]
    assert record.curves == []  # nothing trained
