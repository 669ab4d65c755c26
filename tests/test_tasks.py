"""Tasks: per-step classification and regression targets, their losses and scores, the methods
that train them (equal to BPTT where they are exact), suite validation and a cell end to end.

The per-step datasets here are test fixtures (time-major targets ``[T, B]`` / ``[T, B, D]``);
the shipped ones (copy, adding, store_recall) use the same encoding.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from conftest import make_mlp
from torch import Tensor

import snnarena
from snnarena import cell, testing
from snnarena.cell import BuiltCell, Evaluation, run_cell
from snnarena.data import DataBundle, Dataset
from snnarena.factory import build_method
from snnarena.host import PluginHost
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.model import SpikingModel
from snnarena.params import Param
from snnarena.reference import collect_gradients
from snnarena.report import build_report
from snnarena.runner import run_suite
from snnarena.suite import SuiteError, load_suite, parse_suite
from snnarena.summary import summary_table
from snnarena.task import IGNORE_INDEX, ScoreSums, task_of
from snnarena_plugins.tbptt import TBPTT

T, B, N_IN, C, D = 8, 4, 6, 3, 2
EXACT = 1e-10
PER_STEP_TASKS = ("per_step_classification", "per_step_regression")


def per_step_targets(task: str, seed: int = 2, T: int = T, B: int = B) -> Tensor:
    """Targets of ``task``: every other step scored from step 2 on, and one scored entry dropped."""
    g = torch.Generator().manual_seed(seed)
    if task == "per_step_classification":
        y = torch.randint(0, C, (T, B), generator=g)
        y[:2] = IGNORE_INDEX
        y[3::2] = IGNORE_INDEX
        y[2, 0] = IGNORE_INDEX
        return y
    y = torch.randn(T, B, D, generator=g, dtype=torch.float64)
    y[:2] = math.nan
    y[3::2] = math.nan
    y[2, 0, 1] = math.nan
    return y


def task_model(host: PluginHost, task: str, hidden: tuple[int, ...] = (7, 5), **neuron: Any) -> SpikingModel:
    """A float64 MLP with ``C`` outputs (classification) or ``D`` outputs (regression), active layers."""
    n_out = C if task == "per_step_classification" else D
    params = {"detach_reset": True, **neuron}
    model = make_mlp(host, hidden=hidden, n_classes=n_out, neuron_params=params)
    with torch.no_grad():
        for stage in model.stages:
            stage.synapse.weight.mul_(3.0)
            stage.synapse.bias.add_(0.5)
    return model


def inputs(seed: int = 1) -> Tensor:
    return torch.rand(T, B, N_IN, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2.0


def method_grads(
    host: PluginHost, model: SpikingModel, method: str, params: dict[str, Any], x: Tensor, y: Tensor, task: str
) -> tuple[float, dict[str, Tensor]]:
    """Loss and gradient of ``method`` on a copy of ``model`` with the task's per-step loss."""
    clone = copy.deepcopy(model)
    m = build_method(host, method, params)
    loss = SequenceLoss("per_step", task)
    assert m.skip(clone, clone.info, loss) is None
    prepared = m.prepare(clone)
    value = m.accumulate_gradients(prepared, x, y, loss, PhaseClock(enabled=False))
    return value, collect_gradients(clone)


def max_diff(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    return max(float((a[n] - b[n]).abs().max()) for n in b)


# -- the loss ----------------------------------------------------------------------------------


def test_per_step_losses_average_over_the_scored_entries_of_the_sequence() -> None:
    logits = torch.randn(T, B, C, dtype=torch.float64)
    y = per_step_targets("per_step_classification")
    scored = [(t, b) for t in range(T) for b in range(B) if y[t, b] != IGNORE_INDEX]
    expected = sum(F.cross_entropy(logits[t, b], y[t, b]) for t, b in scored) / len(scored)
    assert float(SequenceLoss("per_step", "per_step_classification").full(logits, y)) == pytest.approx(expected)

    out = torch.randn(T, B, D, dtype=torch.float64)
    z = per_step_targets("per_step_regression")
    mask = ~torch.isnan(z)
    expected = float(((out - z)[mask] ** 2).mean())
    assert float(SequenceLoss("per_step", "per_step_regression").full(out, z)) == pytest.approx(expected)


@pytest.mark.parametrize("task", PER_STEP_TASKS)
def test_segment_and_step_shares_sum_to_the_full_loss(task: str) -> None:
    loss = SequenceLoss("per_step", task)
    logits = torch.randn(T, B, C if task == "per_step_classification" else D, dtype=torch.float64)
    y = per_step_targets(task)
    full = float(loss.full(logits, y))
    for K in (1, 3, 5):
        shares = [float(loss.segment(logits[s : s + K], y, T, s)) for s in range(0, T, K)]
        assert sum(shares) == pytest.approx(full, abs=1e-12)
    assert sum(float(loss.step(logits[t], y, T, t)) for t in range(T)) == pytest.approx(full, abs=1e-12)
    # the segment's targets come from its start: steps 0..2 are not 2..4
    assert float(loss.segment(logits[2:5], y, T, 2)) != pytest.approx(float(loss.segment(logits[2:5], y, T, 0)))


def test_sequence_classification_ignores_start_and_keeps_its_forms() -> None:
    logits, y = torch.randn(T, B, C), torch.randint(0, C, (B,))
    for form in ("per_step", "rate"):
        loss = SequenceLoss(form)
        assert float(loss.segment(logits[2:5], y, T, 2)) == float(loss.segment(logits[2:5], y, T))
    assert float(SequenceLoss().step(logits[3], y, T, 3)) == pytest.approx(float(F.cross_entropy(logits[3], y)) / T)


@pytest.mark.parametrize("task", PER_STEP_TASKS)
def test_per_step_tasks_refuse_the_rate_loss(task: str) -> None:
    with pytest.raises(ValueError, match=rf"{task} task supports train.loss in \['per_step'\], not 'rate'"):
        SequenceLoss("rate", task)
    with pytest.raises(ValueError, match="unknown task 'ranking'"):
        SequenceLoss("per_step", "ranking")


def test_scores_and_directions() -> None:
    logits = torch.zeros(T, B, C)
    logits[..., 1] = 1.0  # predicts class 1 everywhere
    y = per_step_targets("per_step_classification")
    sums = task_of("per_step_classification").score_sums(logits, y)
    scored = y != IGNORE_INDEX
    assert sums == {"accuracy": ScoreSums(float((y[scored] == 1).sum()), int(scored.sum()))}
    z = per_step_targets("per_step_regression")
    mse = task_of("per_step_regression").score_sums(torch.zeros(T, B, D, dtype=torch.float64), z)["mse"]
    assert mse.value == pytest.approx(float((z[~torch.isnan(z)] ** 2).mean()))
    assert task_of("per_step_regression").better(0.1, 0.2) and not task_of("per_step_regression").better(0.2, 0.1)
    assert task_of("classification").better(0.9, 0.8)
    assert math.isnan(ScoreSums().value)


# -- methods against BPTT ----------------------------------------------------------------------


@pytest.mark.parametrize("task", PER_STEP_TASKS)
def test_truncated_and_checkpointed_bptt_equal_bptt(host: PluginHost, task: str) -> None:
    model, x, y = task_model(host, task), inputs(), per_step_targets(task)
    ref_loss, ref = method_grads(host, model, "bptt", {}, x, y, task)
    assert all(float(g.norm()) > 0 for g in ref.values())
    _, single = method_grads(host, model, "bptt", {"step_mode": "single"}, x, y, task)
    assert max_diff(single, ref) <= EXACT
    _, whole = method_grads(host, model, "tbptt", {"K": T + 2}, x, y, task)
    assert max_diff(whole, ref) <= EXACT
    # truncated segments see their own targets: the summed shares are the sequence's loss
    value, _ = method_grads(host, model, "tbptt", {"K": 3}, x, y, task)
    assert value == pytest.approx(ref_loss, abs=1e-12)
    _, local = method_grads(host, model, "tbptt_local", {"K": T, "block_size": 2}, x, y, task)
    assert max_diff(local, ref) <= EXACT
    for m in (2, 4):
        value, grads = method_grads(host, model, "checkpointed_bptt", {"budget_slots": m}, x, y, task)
        assert value == pytest.approx(ref_loss, abs=1e-12)
        assert max_diff(grads, ref) <= EXACT, m


@pytest.mark.parametrize("task", PER_STEP_TASKS)
def test_online_methods_equal_bptt_where_exact(host: PluginHost, task: str) -> None:
    """OTTT with one hidden layer and the default traces, and SLTT with λ = 0, are exact BPTT."""
    x, y = inputs(), per_step_targets(task)
    one_layer = task_model(host, task, hidden=(7,), tau=2.0)
    _, ref = method_grads(host, one_layer, "bptt", {}, x, y, task)
    value, grads = method_grads(host, one_layer, "ottt", {}, x, y, task)
    assert max_diff(grads, ref) <= EXACT
    no_leak = task_model(host, task, tau=1.0, decay_input=False)
    ref_loss, ref = method_grads(host, no_leak, "bptt", {}, x, y, task)
    value, grads = method_grads(host, no_leak, "sltt", {}, x, y, task)
    assert value == pytest.approx(ref_loss, abs=1e-12)
    assert max_diff(grads, ref) <= EXACT


@pytest.mark.parametrize("task", PER_STEP_TASKS)
def test_methods_without_the_task_skip_it_naming_method_and_task(host: PluginHost, task: str) -> None:
    model = task_model(host, task)
    reason = build_method(host, "ratebp").skip(model, model.info, SequenceLoss("per_step", task))
    assert reason == f"ratebp trains classification tasks; the dataset's task is {task}"


# -- a cell end to end, and suite validation ---------------------------------------------------


def per_step_bundle(x: Tensor, y: Tensor, task: str, n_out: int, seed: int) -> DataBundle:
    """Half the sequences for training, a quarter each for validation and test; targets ``[N, T, ...]``
    are batched time-major by :class:`DataBundle` itself."""
    n = len(x)
    train, val = n // 2, 3 * n // 4
    return DataBundle(
        x[:train], y[:train], x[val:], y[val:], T=x.shape[1], n_classes=n_out, encoding="none", seed=seed,
        val=(x[train:val], y[train:val]), task=task,
    )  # fmt: skip


class TinyCue(Dataset):
    """Per-step classification: from step 2 on, name the largest of the first 3 input channels."""

    name = "tiny_cue"
    task: ClassVar[str] = "per_step_classification"
    PARAMS = (Param("n", "int", 64, "sequences", low=8),)

    def build(self, T: int, seed: int) -> DataBundle:
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(self.params["n"], T, 4, generator=g)
        y = x[..., :3].argmax(-1)
        y[:, :2] = IGNORE_INDEX
        return per_step_bundle(x, y, self.task, 3, seed)


class TinyEcho(Dataset):
    """Per-step regression: at odd steps, echo the first two input channels."""

    name = "tiny_echo"
    task: ClassVar[str] = "per_step_regression"

    def build(self, T: int, seed: int) -> DataBundle:
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(64, T, 4, generator=g)
        y = x[..., :2].clone()
        y[:, ::2] = math.nan
        return per_step_bundle(x, y, self.task, 2, seed)


class TinyMisfit(Dataset):
    """Declares per-step regression but yields one class index per sequence (``y [B]``)."""

    name = "tiny_misfit"
    task: ClassVar[str] = "per_step_regression"

    def build(self, T: int, seed: int) -> DataBundle:
        x, y = torch.rand(32, 4), torch.arange(32) % 2
        bundle = DataBundle(x[:24], y[:24], x[24:], y[24:], T=T, n_classes=2, encoding="direct", seed=seed)
        bundle.info = dataclasses.replace(bundle.info, task=self.task)
        return bundle


class TinyUndeclared(TinyEcho):
    """Declares per-step regression but builds data marked as sequence classification."""

    name = "tiny_undeclared"

    def build(self, T: int, seed: int) -> DataBundle:
        bundle = super().build(T, seed)
        bundle.info = dataclasses.replace(bundle.info, task="classification")
        return bundle


class TasksPlugin:
    @snnarena.hookimpl
    def register_datasets(self, register: Any) -> None:
        for cls in (TinyCue, TinyEcho, TinyMisfit, TinyUndeclared):
            register(cls)


@pytest.fixture
def task_host(arena_host: PluginHost) -> Iterator[PluginHost]:
    arena_host.add_plugin(TasksPlugin(), "tasks-test-plugin")
    try:
        yield arena_host
    finally:
        arena_host.remove_plugin("tasks-test-plugin")


def suite_text(dataset: str, loss: str = "per_step", method_loss: str = "", select: str = "best_val") -> str:
    override = f'\nloss = "{method_loss}"' if method_loss else ""
    return f"""
name = "tasks"
[train]
epochs = 3
batch_size = 16
loss = "{loss}"
select = "{select}"
optimizer = {{ name = "adam", lr = 0.03 }}
[grid]
seeds = [0]
T = [6]
[[methods]]
name = "tbptt"
params = {{ K = 4 }}{override}
[[models]]
name = "mlp"
params = {{ hidden = [16] }}
neuron = {{ name = "lif", params = {{ tau = 2.0 }} }}
[[datasets]]
name = "{dataset}"
"""


def test_regression_cell_records_mse_and_selects_the_lowest(
    task_host: PluginHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted = iter([0.5, 0.2, 0.3])  # validation MSE after epochs 1, 2, 3: epoch 2 is the best

    def validate(built: BuiltCell, batch_size: int, device: torch.device) -> Evaluation:
        return Evaluation(built.loss.task_spec, {"mse": next(scripted)}, math.nan)

    monkeypatch.setattr(cell, "validate", validate)
    spec = parse_suite(suite_text("tiny_echo"), task_host).cells[0]
    row = run_cell(spec, task_host, "r", "cpu").row
    assert row["status"] == "done", row["reason"]
    assert math.isfinite(row["test_mse"]) and math.isnan(row["test_accuracy"]) and math.isnan(row["val_accuracy"])
    assert (row["selected_epoch"], row["val_mse"]) == (2, 0.2)


def test_per_step_classification_cell_records_accuracy(task_host: PluginHost) -> None:
    spec = parse_suite(suite_text("tiny_cue", select="last"), task_host).cells[0]
    row = run_cell(spec, task_host, "r", "cpu").row
    assert row["status"] == "done", row["reason"]
    assert 0.0 <= row["test_accuracy"] <= 1.0 and math.isnan(row["test_mse"])


def test_a_dataset_whose_targets_do_not_fit_its_task_fails_the_cell(task_host: PluginHost) -> None:
    spec = parse_suite(suite_text("tiny_misfit"), task_host).cells[0]
    row = run_cell(spec, task_host, "r", "cpu").row
    assert row["status"] == "failed"
    assert "dataset 'tiny_misfit' (task per_step_regression) gave targets that do not fit" in row["reason"]
    assert "expected float targets of shape [T=6, B, D]" in row["reason"]


def test_data_of_another_task_than_the_dataset_declares_fails_the_cell(task_host: PluginHost) -> None:
    row = run_cell(parse_suite(suite_text("tiny_undeclared"), task_host).cells[0], task_host, "r", "cpu").row
    assert row["status"] == "failed"
    assert "dataset 'tiny_undeclared' declares task 'per_step_regression' (Dataset.task_for)" in row["reason"]
    assert "built data of task 'classification' (DataInfo.task)" in row["reason"]


@pytest.mark.parametrize(
    "loss, method_loss, where",
    [("rate", "", "train.loss"), ("per_step", "rate", "methods[0].loss")],
)
def test_suite_refuses_a_loss_the_task_does_not_support(
    task_host: PluginHost, loss: str, method_loss: str, where: str
) -> None:
    with pytest.raises(SuiteError) as err:
        parse_suite(suite_text("tiny_cue", loss, method_loss), task_host)
    message = str(err.value)
    assert where in message and "'rate' does not fit dataset 'tiny_cue'" in message
    assert "per_step_classification task" in message


def test_summary_and_report_show_each_task_its_own_score(task_host: PluginHost, tmp_path: Path) -> None:
    """A run mixing a per-step classification and a regression dataset: the terminal summary and
    the report's results table carry the MSE (lower is better) next to the accuracy."""
    text = suite_text("tiny_cue", select="last") + '[[datasets]]\nname = "tiny_echo"\n'
    outcome = run_suite(parse_suite(text, task_host), task_host, results_root=tmp_path / "results", device="cpu")
    rows = outcome.results.set_index("dataset")
    assert list(rows["status"]) == ["done", "done"]
    assert math.isnan(rows.loc["tiny_echo", "test_accuracy"]) and math.isnan(rows.loc["tiny_cue", "test_mse"])
    summary = summary_table(outcome.results)
    assert "test_mse↓" in summary and "test_acc" in summary
    page = build_report([outcome.run_dir], tmp_path / "report").read_text(encoding="utf-8")
    assert "test MSE" in page and "accuracy (%)" in page


def test_a_regression_only_report_has_no_accuracy_column(task_host: PluginHost, tmp_path: Path) -> None:
    outcome = run_suite(
        parse_suite(suite_text("tiny_echo", select="last"), task_host),
        task_host,
        results_root=tmp_path / "results",
        device="cpu",
    )
    page = build_report([outcome.run_dir], tmp_path / "report").read_text(encoding="utf-8")
    assert "test MSE" in page and "accuracy (%)" not in page
    assert "test_acc" not in summary_table(outcome.results).splitlines()[1]


class ForgetsStart(TBPTT):
    """Truncated BPTT that scores every segment against the first steps' targets (a bug)."""

    name = "forgets_start"

    def unroll(self, model: Any, x: Tensor, y: Tensor, loss: SequenceLoss, clock: PhaseClock, update: Any) -> float:
        class Shifted(SequenceLoss):
            def segment(self, logits: Tensor, y: Tensor, T: int, start: int = 0) -> Tensor:
                return super().segment(logits, y, T, 0)

        return super().unroll(model, x, y, Shifted(loss.form, loss.task), clock, update)


def test_conformance_catches_a_method_that_scores_the_wrong_steps(host: PluginHost) -> None:
    def model() -> SpikingModel:
        return task_model(host, "per_step_regression")

    testing.check_per_step_tasks(lambda: TBPTT(K=3), model, inputs())
    with pytest.raises(AssertionError, match="forgets_start: on per_step_classification targets .* pass start/t"):
        testing.check_per_step_tasks(lambda: ForgetsStart(K=3), model, inputs())


@pytest.mark.slow
def test_the_shipped_tasks_suite_runs_every_model_on_every_task(host: PluginHost, tmp_path: Path) -> None:
    """Feedforward and recurrent models, sequence and per-step targets, in one run and one report."""
    full = load_suite("tasks", host)
    assert full.n_cells == 3 * 3 * 4 * 2
    text = (
        full.text.replace("steps = 150", "steps = 2\nfidelity = false\neval_every_epoch = false")
        .replace("T = [16, 32]", "T = [16]")
        .replace("n_train = 2048, n_test = 512", "n_train = 40, n_test = 16")
    )
    suite = parse_suite(text, host, "tasks (trimmed)")
    outcome = run_suite(suite, host, results_root=tmp_path, only="method=tbptt")
    rows = outcome.results.set_index(["dataset", "model"])
    assert len(rows) == 12 and set(rows["status"]) == {"done"}, rows[["status", "reason"]]
    assert rows.loc[("adding", "rsnn"), "test_mse"] >= 0 and math.isnan(rows.loc[("adding", "rsnn"), "test_accuracy"])
    for dataset in ("copy", "store_recall", "seq_digits"):
        assert 0 <= rows.loc[(dataset, "lstm"), "test_accuracy"] <= 1
    page = build_report([outcome.run_dir], tmp_path / "report").read_text(encoding="utf-8")
    assert "test MSE" in page and "adding · lstm" in page
