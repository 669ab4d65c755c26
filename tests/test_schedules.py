"""Learning-rate schedules (``train.optimizer.schedule``): the learning rate each training step used
is exactly torch's scheduler sequence, per epoch under ``train.epochs`` and per step under
``train.steps``; bad schedule settings are refused naming the key; a suite that sets no schedule
keeps its cell ids."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import pytest
import torch
from plugin_fixtures import TestPlugin

import snnarena
from snnarena.cell import build_cell, train, training_settings
from snnarena.host import HostConfig, PluginHost
from snnarena.method import Preset
from snnarena.registry import Register
from snnarena.suite import SuiteError, load_suite, parse_suite
from snnarena_plugins.bptt import BPTT

SUITE = """
name = "schedules"

[train]
{budget}
batch_size = 16
optimizer = {{ name = "sgd", lr = 0.1{optimizer} }}
fidelity = false
eval_every_epoch = false

[grid]
seeds = [0]
T = [2]

[[methods]]
name = "{method}"

[[models]]
name = "mlp"
params = {{ hidden = [8] }}

[[datasets]]
name = "tiny_blobs"
"""


#: Training batches per epoch: ``tiny_blobs`` keeps 64 of its 72 training samples (the rest is validation).
PER_EPOCH = 4


@pytest.fixture
def blobs_host() -> Iterator[PluginHost]:
    """Built-ins plus the test plugin's ``tiny_blobs`` dataset."""
    host = PluginHost.load(HostConfig())
    host.add_plugin(TestPlugin(), "test-plugin")
    yield host


def suite(budget: str = "epochs = 4", optimizer: str = "", method: str = "bptt") -> str:
    return SUITE.format(budget=budget, optimizer=optimizer, method=method)


def step_lrs(host: PluginHost, text: str) -> list[float]:
    """The learning rate of every optimizer step of the suite's one cell, trained for real."""
    (spec,) = parse_suite(text, host, "schedules.toml").cells
    built = build_cell(spec, host, torch.device("cpu"))
    lrs: list[float] = []
    built.optimizer.register_step_pre_hook(lambda opt, args, kwargs: lrs.append(opt.param_groups[0]["lr"]))
    train(built, spec, torch.device("cpu"), lambda point: None)
    return lrs


def torch_sequence(make: Any, units: int) -> list[float]:
    """The learning rate of each of ``units`` units under the scheduler ``make(optimizer)``."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = make(optimizer)
    out = []
    for _ in range(units):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def per_epoch(lrs: list[float], steps_per_epoch: int) -> list[float]:
    """One value per epoch, checking every step of an epoch used it."""
    epochs = [lrs[i : i + steps_per_epoch] for i in range(0, len(lrs), steps_per_epoch)]
    assert all(len(set(e)) == 1 for e in epochs), epochs
    return [e[0] for e in epochs]


def test_cosine_follows_torch_per_epoch(blobs_host: PluginHost) -> None:
    lrs = step_lrs(blobs_host, suite(optimizer=', schedule = "cosine"'))
    assert len(lrs) == 4 * PER_EPOCH
    expected = torch_sequence(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=4), 4)
    assert per_epoch(lrs, PER_EPOCH) == expected
    assert expected[0] == 0.1 and math.isclose(expected[2], 0.05)  # (1 + cos(π·2/4))/2 = 1/2


def test_step_follows_torch_per_epoch(blobs_host: PluginHost) -> None:
    lrs = step_lrs(blobs_host, suite("epochs = 5", ', schedule = "step", step_size = 2, gamma = 0.5'))
    expected = torch_sequence(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5), 5)
    assert per_epoch(lrs, PER_EPOCH) == expected
    assert [round(v, 12) for v in expected] == [0.1, 0.1, 0.05, 0.05, 0.025]


def test_cosine_under_a_step_budget_anneals_per_step(blobs_host: PluginHost) -> None:
    lrs = step_lrs(blobs_host, suite("steps = 7", ', schedule = "cosine"'))
    assert lrs == torch_sequence(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=7), 7)


def test_constant_is_the_default(blobs_host: PluginHost) -> None:
    assert step_lrs(blobs_host, suite("epochs = 2")) == [0.1] * 2 * PER_EPOCH


def test_online_updates_step_the_schedule_once_per_unit(blobs_host: PluginHost) -> None:
    """OTTT_O steps the optimizer T times per batch; the schedule still moves once per epoch."""
    text = suite("epochs = 2", ', schedule = "step", step_size = 1, gamma = 0.5', method="ottt")
    text = text.replace('name = "ottt"', 'name = "ottt"\nparams = { mode = "O" }')
    assert per_epoch(step_lrs(blobs_host, text), PER_EPOCH * 2) == [0.1, 0.05]


@pytest.mark.parametrize(
    ("optimizer", "key", "fragment"),
    [
        (', schedule = "foo"', "train.optimizer.schedule", "'constant'"),
        (', schedule = "step"', "train.optimizer.step_size", "needs step_size"),
        (', schedule = "cosine", step_size = 3', "train.optimizer.step_size", "only the step schedule"),
        (", gamma = 0.5", "train.optimizer.gamma", "only the step schedule"),
        (', schedule = "step", step_size = 0', "train.optimizer.step_size", ">= 1"),
        (', schedule = "step", step_size = 2, gamma = -1.0', "train.optimizer.gamma", ">= 0.0"),
    ],
)
def test_bad_schedules_are_refused_naming_the_key(
    blobs_host: PluginHost, optimizer: str, key: str, fragment: str
) -> None:
    with pytest.raises(SuiteError) as refused:
        parse_suite(suite(optimizer=optimizer), blobs_host, "schedules.toml")
    assert any(p.startswith(f"{key}:") and fragment in p for p in refused.value.problems), refused.value.problems


def test_schedule_keys_stay_out_of_constant_cells(blobs_host: PluginHost) -> None:
    (plain,) = parse_suite(suite(), blobs_host, "s.toml").cells
    (explicit,) = parse_suite(suite(optimizer=', schedule = "constant"'), blobs_host, "s.toml").cells
    (cosine,) = parse_suite(suite(optimizer=', schedule = "cosine"'), blobs_host, "s.toml").cells
    assert plain.optimizer == {"name": "sgd", "lr": 0.1, "weight_decay": 0.0, "momentum": 0.0}
    assert explicit.cell_id == plain.cell_id
    assert cosine.optimizer["schedule"] == "cosine" and cosine.cell_id != plain.cell_id


def test_shipped_suite_ids_do_not_change(host: PluginHost) -> None:
    """The ids of the ``quick`` suite's cells, pinned before schedules existed (the event dataset
    added later left out)."""
    cells = [cell for cell in load_suite("quick", host).cells if cell.dataset != "event_shapes"]
    ids = ",".join(sorted(cell.cell_id for cell in cells))
    assert hashlib.sha1(ids.encode()).hexdigest()[:16] == "1813c0283b64fb84"


class _ScheduledPreset(BPTT):
    name = "bptt_scheduled"
    PRESETS = MappingProxyType(
        {
            "paper": Preset(doc="cosine", optimizer={"name": "sgd", "lr": 0.1, "schedule": "cosine"}),
            "broken": Preset(doc="step without step_size", optimizer={"name": "sgd", "schedule": "step"}),
        }
    )


class _PresetPlugin:
    @snnarena.hookimpl
    def register_gradient_methods(self, register: Register) -> None:
        register(_ScheduledPreset)


def test_a_preset_can_carry_a_schedule(blobs_host: PluginHost) -> None:
    blobs_host.add_plugin(_PresetPlugin(), "scheduled-preset")
    entry = 'name = "bptt_scheduled"'
    text = suite(method="bptt_scheduled").replace(entry, f'{entry}\npreset = "paper"')
    assert per_epoch(step_lrs(blobs_host, text), PER_EPOCH) == torch_sequence(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=4), 4
    )
    broken = text.replace('preset = "paper"', 'preset = "broken"')
    with pytest.raises(SuiteError, match=r"methods\[0\]\.preset .*optimizer\.step_size: the step schedule needs"):
        parse_suite(broken, blobs_host, "s.toml")


@pytest.mark.parametrize(
    ("optimizer", "recorded"),
    [
        ("", "constant"),
        (', schedule = "cosine"', "cosine"),
        (', schedule = "step", step_size = 2', "step(step_size=2, gamma=0.1)"),
    ],
)
def test_rows_record_the_schedule(blobs_host: PluginHost, optimizer: str, recorded: str) -> None:
    (spec,) = parse_suite(suite(optimizer=optimizer), blobs_host, "schedules.toml").cells
    assert training_settings(spec)["lr_schedule"] == recorded


def test_weight_decay_on_weights_spares_biases_and_keeps_ids_by_default(blobs_host: PluginHost) -> None:
    from snnarena.cell import make_optimizer

    layer = torch.nn.Linear(3, 2)
    weight, bias = layer.weight.detach().clone(), layer.bias.detach().clone()
    config = {"name": "sgd", "lr": 0.5, "momentum": 0.0, "weight_decay": 0.1, "weight_decay_on": "weights"}
    optimizer = make_optimizer(layer.parameters(), config)
    layer.weight.grad, layer.bias.grad = torch.zeros_like(weight), torch.zeros_like(bias)
    optimizer.step()  # no gradient: only the decay moves parameters
    assert torch.allclose(layer.weight.detach(), weight * (1 - 0.5 * 0.1)) and torch.equal(layer.bias.detach(), bias)
    (spec,) = parse_suite(
        suite(optimizer=', weight_decay = 0.1, weight_decay_on = "weights"'), blobs_host, "s.toml"
    ).cells
    assert spec.optimizer["weight_decay_on"] == "weights"
    assert training_settings(spec)["weight_decay_on"] == "weights"
    (plain,) = parse_suite(suite(optimizer=", weight_decay = 0.1"), blobs_host, "s.toml").cells
    (explicit,) = parse_suite(
        suite(optimizer=', weight_decay = 0.1, weight_decay_on = "all"'), blobs_host, "s.toml"
    ).cells
    assert "weight_decay_on" not in plain.optimizer and plain.cell_id == explicit.cell_id
    with pytest.raises(SuiteError, match="weight_decay_on"):
        parse_suite(suite(optimizer=', weight_decay_on = "biases"'), blobs_host, "s.toml")
