"""The validation split: how it is carved, that test data stays out of training and selection,
per-epoch validation curves, and ``train.select = "best_val"`` restoring the best epoch's weights."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from plugin_fixtures import TINY_SUITE

import snnarena
from snnarena.cell import CurvePoint, build_cell, evaluate, run_cell, select_weights, train
from snnarena.data import DEFAULT_VAL_FRACTION, DataBundle, validation_split
from snnarena.host import PluginHost
from snnarena.params import Param
from snnarena.results import CURVE_COLUMNS
from snnarena.suite import CellSpec, SuiteError, parse_suite
from snnarena_plugins.bptt import BPTT

CPU = torch.device("cpu")


# -- carving the split ------------------------------------------------------------------------


def test_validation_split_is_a_seeded_stratified_partition() -> None:
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    train, val = validation_split(y, 0.1, seed=3)
    assert len(val) == 10 and len(train) == 90
    assert sorted(torch.cat([train, val]).tolist()) == list(range(100))  # a partition: no overlap, nothing lost
    assert torch.bincount(y[val], minlength=3).tolist() == [5, 3, 2]  # each class its share
    again = validation_split(y, 0.1, seed=3)
    assert torch.equal(again[0], train) and torch.equal(again[1], val)
    other = validation_split(y, 0.1, seed=4)[1]
    assert not torch.equal(other, val) and torch.bincount(y[other], minlength=3).tolist() == [5, 3, 2]


def test_validation_split_rounds_by_largest_remainder_and_keeps_a_training_sample() -> None:
    y = torch.arange(9) % 3  # three classes of 3: a 0.5 share is 1.5 each, 4 or 5 in all
    _, val = validation_split(y, 0.5, seed=0)
    counts = sorted(torch.bincount(y[val], minlength=3).tolist())
    assert len(val) == round(9 * 0.5) and counts in ([1, 1, 2], [1, 2, 2])
    assert len(validation_split(torch.tensor([0, 1]), 0.9, seed=0)[0]) == 1  # never the whole training set
    assert len(validation_split(torch.arange(5), 0.01, seed=0)[1]) == 1  # never empty


def test_targets_that_are_not_class_indices_are_split_uniformly() -> None:
    y = torch.randn(40, 3)  # regression targets: nothing to stratify
    train, val = validation_split(y, 0.25, seed=1)
    assert len(val) == 10 and sorted(torch.cat([train, val]).tolist()) == list(range(40))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_a_fraction_outside_zero_one_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match="val_fraction must be between 0 and 1"):
        validation_split(torch.arange(10), fraction, seed=0)


def test_one_training_sample_cannot_give_a_validation_split() -> None:
    with pytest.raises(ValueError, match="pass val=\\(x, y\\)"):
        validation_split(torch.tensor([0]), 0.1, seed=0)


def numbered(n: int, first: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples whose single feature is their number (so a split's members can be told apart)."""
    x = torch.arange(first, first + n, dtype=torch.float32)[:, None]
    return x, torch.arange(n) % 4


def test_the_bundle_carves_validation_from_training_and_leaves_test_alone() -> None:
    x_train, y_train = numbered(80)
    x_test, y_test = numbered(20, first=1000)
    bundle = DataBundle(x_train, y_train, x_test, y_test, T=3, n_classes=4, encoding="direct", seed=5)
    info = bundle.info
    assert (info.n_train, info.n_val, info.n_test) == (72, 8, 20) and DEFAULT_VAL_FRACTION == 0.1
    train_ids, val_ids = set(bundle.x_train[:, 0].tolist()), set(bundle.x_val[:, 0].tolist())
    assert not train_ids & val_ids and train_ids | val_ids == set(range(80))
    assert torch.equal(bundle.x_test, x_test) and torch.equal(bundle.y_test, y_test)
    assert torch.equal(bundle.y_val, bundle.x_val[:, 0].long() % 4)  # labels follow their samples
    seen = {int(v) for xb, _ in bundle.train_batches(8, torch.Generator().manual_seed(0)) for v in xb[0, :, 0]}
    assert seen <= train_ids  # training never sees a validation or test sample
    wide = DataBundle(x_train, y_train, x_test, y_test, T=3, n_classes=4, encoding="direct", seed=5, val_fraction=0.25)
    assert (wide.info.n_train, wide.info.n_val) == (60, 20)


def test_a_validation_split_of_the_source_is_kept_as_given() -> None:
    x_train, y_train = numbered(30)
    x_val, y_val = numbered(6, first=500)
    x_test, y_test = numbered(10, first=1000)
    bundle = DataBundle(
        x_train, y_train, x_test, y_test, T=2, n_classes=4, encoding="direct", seed=0, val=(x_val, y_val)
    )
    assert torch.equal(bundle.x_train, x_train) and torch.equal(bundle.x_val, x_val)
    assert (bundle.info.n_train, bundle.info.n_val, bundle.info.n_test) == (30, 6, 10)


def test_val_batches_are_fixed_and_differ_from_test_batches() -> None:
    x, y = torch.full((40, 5), 0.5), torch.arange(40) % 2
    bundle = DataBundle(x, y, x[:10], y[:10], T=6, n_classes=2, encoding="rate", seed=2, val_fraction=0.25)
    first = list(bundle.val_batches(4))
    second = list(bundle.val_batches(4))
    assert [len(b[1]) for b in first] == [4, 4, 2]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second, strict=True))
    assert first[0][0].shape == (6, 4, 5) and set(torch.unique(first[0][0]).tolist()) <= {0.0, 1.0}
    assert not torch.equal(first[0][0], next(bundle.test_batches(4))[0])  # its own generator


def test_temporal_validation_data_must_have_T_steps() -> None:
    x = torch.zeros(10, 4, 3)
    with pytest.raises(ValueError, match="temporal validation data has 5 steps, expected T=4"):
        DataBundle(
            x, torch.zeros(10), x, torch.zeros(10), T=4, n_classes=2, encoding="none", seed=0,
            val=(torch.zeros(2, 5, 3), torch.zeros(2)),
        )  # fmt: skip


# -- selection --------------------------------------------------------------------------------


class ReadoutWiper(BPTT):
    """BPTT whose readout is zeroed after every step past ``after``: every later epoch ends worse
    (all logits 0, so every sample is called class 0)."""

    name = "readout_wiper"
    PARAMS = (*BPTT.PARAMS, Param("after", "int", 8, "wipe the readout after this many steps", low=0))

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.steps = 0

    def train_step(self, model: Any, *args: Any) -> float:
        value = super().train_step(model, *args)
        self.steps += 1
        if self.steps > self.params["after"]:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name.startswith("readout"):
                        p.zero_()
        return value


class WiperPlugin:
    @snnarena.hookimpl
    def register_gradient_methods(self, register: Any) -> None:
        register(ReadoutWiper)


@pytest.fixture
def wiper_host(arena_host: PluginHost) -> Iterator[PluginHost]:
    arena_host.add_plugin(WiperPlugin(), "wiper-plugin")
    try:
        yield arena_host
    finally:
        arena_host.remove_plugin("wiper-plugin")


def wiper_cell(host: PluginHost, select: str, epochs: int = 4) -> CellSpec:
    """tiny_blobs (65 training samples after validation: 4 batches of 16 per epoch), the readout
    wiped from epoch 3 on."""
    text = TINY_SUITE.format(behaviours='["ok"]').replace('name = "bptt"', 'name = "readout_wiper"')
    text = text.replace("epochs = 2", f'epochs = {epochs}\nselect = "{select}"')
    return next(c for c in parse_suite(text, host).cells if c.method == "readout_wiper" and c.seed == 0)


def train_with_snapshots(
    spec: CellSpec, host: PluginHost
) -> tuple[Any, Any, list[CurvePoint], dict[int, dict[str, torch.Tensor]]]:
    """Build and train ``spec``, keeping a copy of the model's weights at the end of each epoch."""
    built = build_cell(spec, host, CPU)
    points: list[CurvePoint] = []
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def on_epoch(point: CurvePoint) -> None:
        points.append(point)
        snapshots[point.epoch] = {k: v.clone() for k, v in built.model.state_dict().items()}

    log = train(built, spec, CPU, on_epoch)
    return built, log, points, snapshots


def test_best_val_restores_the_weights_of_the_best_validation_epoch(wiper_host: PluginHost) -> None:
    spec = wiper_cell(wiper_host, "best_val")
    built, log, points, snapshots = train_with_snapshots(spec, wiper_host)
    assert [p.step for p in points] == [4, 8, 12, 16]  # the wiping starts in epoch 3
    val = [p.val_accuracy for p in points]
    assert max(val[:2]) > max(val[2:])  # the later epochs are worse
    best = val.index(max(val)) + 1
    assert log.best is not None and log.best.epoch == best <= 2
    selection = select_weights(built, spec, log, CPU)
    assert (selection.rule, selection.epoch, selection.val_accuracy) == ("best_val", best, max(val))
    restored = built.model.state_dict()
    assert all(torch.equal(restored[k], v) for k, v in snapshots[best].items())  # not the final weights
    assert not all(torch.equal(restored[k], v) for k, v in snapshots[4].items())


def test_the_test_score_of_best_val_is_that_of_the_restored_weights(wiper_host: PluginHost) -> None:
    spec = wiper_cell(wiper_host, "best_val")
    row = run_cell(spec, wiper_host, "r", "cpu").row
    assert row["status"] == "done", row["reason"]
    built, _, points, snapshots = train_with_snapshots(spec, wiper_host)  # the same seeded training again
    best = max(points, key=lambda p: (p.val_accuracy, -p.epoch))
    assert (row["select"], row["selected_epoch"], row["val_accuracy"]) == ("best_val", best.epoch, best.val_accuracy)
    built.model.load_state_dict(snapshots[best.epoch])
    expected = evaluate(built.model, built.data.test_batches(spec.train["eval_batch_size"]), CPU)
    assert row["test_accuracy"] == expected.accuracy and row["spike_rate"] == expected.spike_rate
    # the rule matters here: the last epoch's (wiped) weights score worse on test
    last = run_cell(wiper_cell(wiper_host, "last"), wiper_host, "r", "cpu").row
    assert (last["select"], last["selected_epoch"]) == ("last", 4)
    assert last["val_accuracy"] == points[-1].val_accuracy and last["test_accuracy"] < row["test_accuracy"]


def test_curve_points_carry_validation_accuracy_and_no_test_score(wiper_host: PluginHost) -> None:
    record = run_cell(wiper_cell(wiper_host, "last", epochs=2), wiper_host, "r", "cpu")
    assert "val_accuracy" in CURVE_COLUMNS and "test_accuracy" not in CURVE_COLUMNS
    assert len(record.curves) == 2 and all(set(point) == set(CURVE_COLUMNS) for point in record.curves)
    assert all(0.0 <= point["val_accuracy"] <= 1.0 for point in record.curves)
    assert record.curves[-1]["val_accuracy"] == record.row["val_accuracy"]


def test_without_per_epoch_validation_last_validates_once_at_the_end(wiper_host: PluginHost) -> None:
    spec = wiper_cell(wiper_host, "last", epochs=2)
    spec = dataclasses.replace(spec, train={**spec.train, "eval_every_epoch": False})
    record = run_cell(spec, wiper_host, "r", "cpu")
    assert record.row["status"] == "done", record.row["reason"]
    assert all(math.isnan(point["val_accuracy"]) for point in record.curves)
    assert 0.0 <= record.row["val_accuracy"] <= 1.0 and record.row["selected_epoch"] == 2


def test_best_val_without_per_epoch_validation_is_refused_by_the_suite(wiper_host: PluginHost) -> None:
    text = TINY_SUITE.format(behaviours='["ok"]').replace(
        "epochs = 2", 'epochs = 2\nselect = "best_val"\neval_every_epoch = false'
    )
    with pytest.raises(SuiteError) as caught:
        parse_suite(text, wiper_host, "sel.toml")
    (problem,) = caught.value.problems
    assert problem.startswith("train.select: 'best_val' picks the epoch with the best validation score")
    assert "set eval_every_epoch = true or select = 'last'" in problem
    with pytest.raises(SuiteError, match="train.select: expected one of 'last', 'best_val'"):
        parse_suite(
            TINY_SUITE.format(behaviours='["ok"]').replace("epochs = 2", 'epochs = 2\nselect = "best"'), wiper_host
        )


def test_the_run_summary_says_which_weights_the_test_scores_are_of() -> None:
    from snnarena.results import rows_frame
    from snnarena.summary import summary_table

    row = {"label": "bptt | mlp/lif | d | T=4 | seed=0", "status": "done", "dataset": "d", "model": "mlp", "T": 4}
    row |= {"seed": 0, "test_accuracy": 0.8, "val_accuracy": 0.85, "select": "best_val", "step_time_ms": 1.0}
    text = summary_table(rows_frame([row]))
    assert "val_acc" in text and "0.85" in text
    assert "follow train.select = 'best_val': the weights of the epoch with the best validation score" in text
