"""Datasets with per-step targets: ``copy``, ``adding``, ``store_recall``.

Shapes and dtypes, targets consistent with the inputs, scored-step positions, refused lengths,
split sizes, determinism per seed, and the batches the per-step tasks need from ``DataBundle``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from snnarena.data import DataBundle, Dataset
from snnarena.host import PluginHost
from snnarena.params import params_of
from snnarena.task import IGNORE_INDEX
from snnarena_plugins.datasets.adding import BASELINE_MSE, Adding, make_adding
from snnarena_plugins.datasets.copy_task import Copy, make_copy
from snnarena_plugins.datasets.seq_digits import SequenceLengthError
from snnarena_plugins.datasets.store_recall import (
    BIT0,
    BIT1,
    RECALL,
    STORE,
    StoreRecall,
    draw_cues,
    encode,
    make_store_recall,
)

SMALL = {"n_train": 50, "n_test": 20}
# (class, params, T, task, n_classes, per-step input shape, per-sample target shape)
TASKS = [
    pytest.param(Copy, {"length": 3}, 10, "per_step_classification", 9, (10,), (10,), id="copy"),
    pytest.param(Adding, {}, 12, "per_step_regression", 1, (2,), (12, 1), id="adding"),
    pytest.param(StoreRecall, {"char_steps": 3}, 12, "per_step_classification", 2, (4,), (12,), id="store_recall"),
    pytest.param(
        StoreRecall,
        {"char_steps": 2, "coding": "spikes", "population": 5},
        8,
        "per_step_classification",
        2,
        (20,),
        (8,),
        id="store_recall-spikes",
    ),
]


def build(cls: type[Dataset], T: int, seed: int = 0, **given: Any) -> DataBundle:
    return cls(**params_of(cls).resolve({**SMALL, **given})).build(T=T, seed=seed)


def generator(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(torch.isclose(a, b, rtol=0, atol=0, equal_nan=True).all())


# -- registration and bundles ------------------------------------------------------------------


def test_the_task_datasets_are_registered(host: PluginHost) -> None:
    assert {"copy", "adding", "store_recall"} <= set(host.names("dataset"))


@pytest.mark.parametrize(("cls", "given", "T", "task", "n_classes", "shape", "target"), TASKS)
def test_bundle_declares_task_shapes_and_split_sizes(
    cls: type[Dataset], given: dict[str, Any], T: int, task: str, n_classes: int, shape: tuple[int, ...], target: Any
) -> None:
    bundle = build(cls, T, **given)
    info = bundle.info
    assert cls.task == task and info.task == task
    assert (info.input_shape, info.n_classes, info.T) == (shape, n_classes, T)
    assert cls.input_size(params_of(cls).resolve(given)) == int(np.prod(shape))
    assert (info.n_train, info.n_val, info.n_test) == (45, 5, 20)
    assert bundle.x_train.shape == (45, T, *shape) and bundle.x_test.shape == (20, T, *shape)
    assert bundle.x_train.dtype == (torch.float32 if cls is Adding else torch.uint8)


@pytest.mark.parametrize(("cls", "given", "T"), [(p.values[0], p.values[1], p.values[2]) for p in TASKS])
def test_same_seed_same_data_other_seed_other_data(cls: type[Dataset], given: dict[str, Any], T: int) -> None:
    a, b, c = build(cls, T, 1, **given), build(cls, T, 1, **given), build(cls, T, 2, **given)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert identical(getattr(a, name), getattr(b, name)), name
    assert not identical(a.x_train, c.x_train)


@pytest.mark.parametrize(("cls", "given", "T"), [(p.values[0], p.values[1], p.values[2]) for p in TASKS])
def test_test_set_does_not_change_the_training_set(cls: type[Dataset], given: dict[str, Any], T: int) -> None:
    a, b = build(cls, T, **given), build(cls, T, **{**given, "n_test": 7})
    assert identical(a.x_train, b.x_train) and identical(a.x_val, b.x_val)
    assert len(b.x_test) == 7


@pytest.mark.parametrize(("cls", "given", "T", "task", "n_classes", "shape", "target"), TASKS)
def test_batches_carry_per_step_targets_time_first(
    cls: type[Dataset], given: dict[str, Any], T: int, task: str, n_classes: int, shape: Any, target: tuple[int, ...]
) -> None:
    bundle = build(cls, T, **given)
    x, y = next(bundle.train_batches(4, torch.Generator().manual_seed(0)))
    xv, yv = next(bundle.val_batches(4))
    xt, yt = next(bundle.test_batches(4))
    dtype = torch.float32 if task == "per_step_regression" else torch.int64
    for inputs, targets in ((x, y), (xv, yv), (xt, yt)):
        assert inputs.shape == (T, 4, *shape)
        assert targets.shape == (T, 4, *target[1:]) and targets.dtype == dtype
    assert identical(yt, bundle.y_test[:4].transpose(0, 1))


# -- copy ----------------------------------------------------------------------------------------


def test_copy_recalls_the_symbols_shown_first_after_the_marker() -> None:
    length, T, n_symbols = 4, 15, 8
    x, y = make_copy(64, length, n_symbols, T, generator())
    assert x.shape == (64, T, 10) and x.dtype == np.uint8 and y.shape == (64, T) and y.dtype == np.int64
    assert (x.sum(axis=2) == 1).all()  # one code per step
    codes = x.argmax(axis=2)
    symbols = codes[:, :length]
    assert ((symbols >= 1) & (symbols <= n_symbols)).all()
    assert (y[:, T - length :] == symbols).all()  # the recall targets are the symbols shown first
    assert (y[:, : T - length] == IGNORE_INDEX).all()  # only the recall window is scored
    assert (codes[:, T - length - 1] == n_symbols + 1).all()  # the marker, one step before the recall
    blanks = np.r_[length : T - length - 1, T - length : T]
    assert (codes[:, blanks] == 0).all()
    assert len(np.unique(symbols)) == n_symbols  # every symbol is drawn


@pytest.mark.parametrize(("length", "T", "ok"), [(10, 20, False), (10, 21, True), (1, 2, False), (1, 3, True)])
def test_copy_refuses_a_T_without_room_for_delay_and_recall(length: int, T: int, ok: bool) -> None:
    reason = Copy.check_T(params_of(Copy).resolve({"length": length}), T)
    assert (reason is None) == ok
    if not ok:
        assert reason is not None and f"T={T}" in reason and str(2 * length + 1) in reason
        with pytest.raises(SequenceLengthError, match=f"T={T}"):
            build(Copy, T, length=length)


# -- adding --------------------------------------------------------------------------------------


def test_adding_target_is_the_sum_of_the_two_marked_values_at_the_last_step() -> None:
    T = 9
    x, y = make_adding(200, T, generator())
    assert x.shape == (200, T, 2) and x.dtype == np.float32 and y.shape == (200, T, 1) and y.dtype == np.float32
    values, marks = x[:, :, 0], x[:, :, 1]
    assert ((values >= 0) & (values < 1)).all()
    assert set(np.unique(marks)) == {0.0, 1.0}
    assert (marks[:, : T // 2].sum(axis=1) == 1).all() and (marks[:, T // 2 :].sum(axis=1) == 1).all()
    assert np.isnan(y[:, : T - 1]).all() and not np.isnan(y[:, T - 1]).any()
    np.testing.assert_allclose(y[:, T - 1, 0], (values * marks).sum(axis=1), rtol=1e-6)


def test_adding_constant_prediction_baseline_is_one_sixth() -> None:
    _, y = make_adding(20_000, 4, generator(3))
    assert abs(float(((y[:, -1, 0] - 1.0) ** 2).mean()) - BASELINE_MSE) < 0.01


def test_adding_refuses_a_single_step() -> None:
    assert Adding.check_T({}, 1) is not None and Adding.check_T({}, 2) is None
    with pytest.raises(SequenceLengthError, match="T=1"):
        build(Adding, 1)


# -- store_recall --------------------------------------------------------------------------------


def test_store_recall_target_is_the_bit_shown_with_the_store_cue() -> None:
    n, n_chars, char_steps = 300, 6, 3
    gen = generator()
    cues = draw_cues(n, n_chars, 2, 4, gen)
    active, y = make_store_recall(n, n_chars, char_steps, cues, gen)
    T = n_chars * char_steps
    assert active.shape == (n, T, 4) and active.dtype == np.uint8 and y.shape == (n, T) and y.dtype == np.int64
    assert (active[:, :, BIT0] + active[:, :, BIT1] == 1).all()  # one bit on every character
    store_steps, recall_steps = active[:, :, STORE].sum(axis=1), active[:, :, RECALL].sum(axis=1)
    assert (store_steps == char_steps).all() and (recall_steps == char_steps).all()  # one character each
    stored = active[:, :, STORE].argmax(axis=1)  # first step of the store character
    recalled = active[:, :, RECALL].argmax(axis=1)
    delay = (recalled - stored) // char_steps
    assert delay.min() == 2 and delay.max() == 4  # min_delay .. max_delay, all drawn
    bit = active[np.arange(n), stored, BIT1]
    scored = y != IGNORE_INDEX
    assert (scored == (active[:, :, RECALL] == 1)).all()  # scored exactly on the recall character
    assert (y[scored].reshape(n, char_steps) == bit[:, None]).all()
    assert 0.35 < bit.mean() < 0.65  # chance is 50 %


def test_store_recall_spikes_fire_only_on_active_channels() -> None:
    active = np.zeros((50, 40, 4), dtype=np.uint8)
    active[:, :20, BIT0] = 1
    x = encode(active, 3, 0.25, generator())
    assert x.shape == (50, 40, 12) and x.dtype == np.uint8
    assert x[:, 20:].sum() == 0 and x[:, :, 3:].sum() == 0
    assert abs(float(x[:, :20, :3].mean()) - 0.25) < 0.03
    assert (encode(active, 2, None, generator()) == np.repeat(active, 2, axis=2)).all()


@pytest.mark.parametrize(
    ("given", "T", "ok"),
    [
        ({"char_steps": 5}, 10, True),
        ({"char_steps": 5}, 12, False),  # not a multiple
        ({"char_steps": 5}, 5, False),  # one character: nothing to recall
        ({"char_steps": 5, "min_delay": 3}, 15, False),
        ({"char_steps": 5, "min_delay": 3}, 20, True),
        ({"char_steps": 5, "min_delay": 3, "max_delay": 2}, 50, False),
    ],
)
def test_store_recall_refuses_impossible_lengths(given: dict[str, Any], T: int, ok: bool) -> None:
    reason = StoreRecall.check_T(params_of(StoreRecall).resolve(given), T)
    assert (reason is None) == ok, reason
    if not ok:
        with pytest.raises(SequenceLengthError, match="store_recall"):
            build(StoreRecall, T, **given)
