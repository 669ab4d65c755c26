"""Running one cell: build data, model and method, train under measurement, evaluate, record.

The flow is one way, each stage returning what the next one needs:

* :func:`build_cell` seeds and builds a :class:`BuiltCell`, or raises :class:`CellSkipped` with the
  model's or method's reason;
* :func:`train` runs the training loop and returns a :class:`TrainingLog` (each finished epoch's
  :class:`CurvePoint`, with its validation score, also goes to an ``on_epoch`` callback, so a
  cell that fails or is interrupted keeps its learning curve); after the first step it checks that
  every trainable parameter got a gradient, and after every epoch that the parameters are finite;
  under ``train.select = "best_val"`` it keeps a CPU copy of the best validation epoch's weights;
* :func:`select_weights` puts the weights the rule picks in place (:class:`Selection`);
* :func:`measure` evaluates the selected weights and returns the measured columns (the task's test score,
  read once per cell, spike rate, gradient fidelity, metric plugins);
* :func:`run_cell` builds the row once from the cell's identity and these pieces.

:func:`run_cell` returns a :class:`~snnarena.results.CellRecord` whatever happens: ``done`` with
its measurements, ``skipped`` with the method's or model's reason, or ``failed`` with the error
(an exception, ``SystemExit`` from a plugin, a NaN/inf loss or weight, an untrained parameter) —
never a silent zero. Only Ctrl-C propagates, as :class:`_Interrupted` carrying the cell's record.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import random
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import nn

import snnarena
from snnarena.data import Bundle, DataInfo, Dataset
from snnarena.errors import ConfigurationError, WorkerStopped
from snnarena.factory import build_dataset, build_method, build_metric, build_model, neuron_factory, no_neuron
from snnarena.host import PluginHost
from snnarena.loss import LossForm, SequenceLoss
from snnarena.measure import DeviceMemory, PhaseClock, SavedTensorMeter
from snnarena.method import GradientMethod
from snnarena.metric import CellContext, Metric
from snnarena.model import SpikingModel
from snnarena.params import params_of
from snnarena.reference import bptt_accumulate, collect_gradients, compare_by_role, compare_gradients, parameter_roles
from snnarena.results import FIDELITY_CURVE_COLUMNS, CellRecord
from snnarena.suite import OPTIMIZER_PARAMS, CellSpec, input_batch_problem
from snnarena.task import SCORE_NAMES, ScoreSums, Task, task_of

#: How many parameter names a failure reason lists before "... (N in all)".
NAMES_SHOWN = 5


class CellSkipped(Exception):
    """The cell's model or method does not apply; :attr:`reason` says why (a ``skipped`` row)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class NonFiniteParametersError(RuntimeError):
    """Parameters or buffers became NaN or infinite during training."""


class UntrainedParametersError(RuntimeError):
    """The method left trainable parameters without a gradient that it did not declare frozen."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so a CPU rerun reproduces a cell."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU, or a name torch does not know,
    is a :class:`~snnarena.errors.ConfigurationError`."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as err:
        raise ConfigurationError(
            f"--device {device!r}: not a device torch knows ({err}); use cpu, cuda, cuda:N or auto"
        ) from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(
            f"--device {device!r} was asked for but torch sees no CUDA device; use --device cpu or auto"
        )
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise ConfigurationError(f"--device {device!r}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    return chosen


def parameter_groups(parameters: Iterable[nn.Parameter], config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: one with ``weight_decay`` for every parameter, or with
    ``weight_decay_on = "weights"`` the tensors of two or more dimensions (linear and conv weights)
    with it and the rest (biases, norm scales, neuron parameters) without."""
    params = list(parameters)
    if config.get("weight_decay_on", "all") == "all":
        return [{"params": params, "weight_decay": config["weight_decay"]}]
    weights = [p for p in params if p.dim() >= 2]
    others = [p for p in params if p.dim() < 2]
    return [{"params": weights, "weight_decay": config["weight_decay"]}, {"params": others, "weight_decay": 0.0}]


def make_optimizer(parameters: Iterable[nn.Parameter], config: Mapping[str, Any]) -> torch.optim.Optimizer:
    name, lr = config["name"], config["lr"]
    groups = parameter_groups(parameters, config)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config["momentum"])
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "adamax": torch.optim.Adamax}[name]
    return cls(groups, lr=lr)


class LRSchedule:
    """The learning-rate schedule of ``train.optimizer.schedule`` over a cell's budget.

    Its unit is an epoch under ``train.epochs`` and a training step (one batch, however often the
    method steps the optimizer within it) under ``train.steps``; the torch scheduler is stepped
    once per unit, after it, so unit ``u`` (0-based) trains with

    * ``constant``: ``lr``;
    * ``cosine``: ``lr (1 + cos(π u / U)) / 2`` with ``U`` the budget in units (``CosineAnnealingLR``,
      ``T_max = U``, ``eta_min = 0``);
    * ``step``: ``lr · gamma^⌊u / step_size⌋`` (``StepLR``).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, config: Mapping[str, Any], train: Mapping[str, Any]) -> None:
        settings = {**{p.name: p.default for p in OPTIMIZER_PARAMS.declared}, **config}  # validated by the suite
        self.per_step = train["epochs"] is None
        units = train["steps"] if self.per_step else train["epochs"]
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        if settings["schedule"] == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=units)
        elif settings["schedule"] == "step":
            self.scheduler = torch.optim.lr_scheduler.StepLR(optimizer, settings["step_size"], settings["gamma"])

    def after_step(self) -> None:
        """Called after every training step: advances a per-step schedule."""
        if self.scheduler is not None and self.per_step:
            self.scheduler.step()

    def after_epoch(self) -> None:
        """Called after every epoch: advances a per-epoch schedule."""
        if self.scheduler is not None and not self.per_step:
            self.scheduler.step()


def _names(names: list[str]) -> str:
    """``a, b, c`` or ``a, b, ... (12 in all)`` for a failure reason."""
    shown = ", ".join(names[:NAMES_SHOWN])
    return shown if len(names) <= NAMES_SHOWN else f"{shown}, ... ({len(names)} in all)"


# -- identity --------------------------------------------------------------------------------


def _plugin_info(host: PluginHost, spec: CellSpec) -> dict[str, dict[str, str | None]]:
    out = {}
    for kind, name in spec.components:
        entry = host.get(kind, name)
        out[f"{kind}:{name}"] = {
            "plugin": entry.plugin,
            "distribution": entry.distribution,
            "version": entry.version,
            "digest": entry.digest,
        }
    return out


def schedule_text(optimizer: Mapping[str, Any]) -> str:
    """The learning-rate schedule of a resolved optimizer: ``constant``, ``cosine`` or
    ``step(step_size=10, gamma=0.1)``."""
    schedule = optimizer.get("schedule", "constant")
    if schedule == "step":
        return f"step(step_size={optimizer['step_size']}, gamma={optimizer['gamma']})"
    return str(schedule)


def training_settings(spec: CellSpec) -> dict[str, Any]:
    """The settings that change a result besides the grid coordinates: optimizer and budget.

    ``budget_epochs``/``budget_steps`` are the suite's ``train.epochs``/``train.steps`` (one is
    ``None``); the ``epochs``/``train_steps`` columns count what actually ran.
    """
    optimizer = spec.optimizer
    return {
        "optimizer": optimizer["name"],
        "lr": optimizer["lr"],
        "weight_decay": optimizer["weight_decay"],
        "weight_decay_on": optimizer.get("weight_decay_on", "all"),
        "momentum": optimizer["momentum"],
        "lr_schedule": schedule_text(optimizer),
        "budget_epochs": spec.train["epochs"],
        "budget_steps": spec.train["steps"],
        "batch_size": spec.train["batch_size"],
    }


def base_row(spec: CellSpec, host: PluginHost, run_id: str, device: torch.device) -> dict[str, Any]:
    """The identifying, training-setting and provenance columns of a cell's row."""
    method_entry = host.get("method", spec.method)
    method_cls = cast(type[GradientMethod[Any]], method_entry.obj)
    return {
        "run_id": run_id,
        "suite": spec.suite,
        "cell_id": spec.cell_id,
        "label": spec.label,
        "method": spec.method,
        "method_params": json.dumps(params_of(method_cls).resolve(spec.method_params), sort_keys=True),
        "protocol": spec.protocol,
        "preset": spec.preset,
        "tuned": json.dumps(spec.tuned, sort_keys=True) if spec.tuned else "",
        "model": spec.model,
        "model_params": json.dumps(spec.model_params, sort_keys=True),
        "dataset": spec.dataset,
        "dataset_params": json.dumps(spec.dataset_params, sort_keys=True),
        "neuron": spec.neuron,
        "neuron_params": json.dumps(spec.neuron_params, sort_keys=True),
        "surrogate": spec.surrogate,
        "loss": spec.loss,
        "T": spec.T,
        "seed": spec.seed,
        "memory_class": method_cls.memory_class,
        **training_settings(spec),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "snnarena_version": snnarena.__version__,
        "plugin": method_entry.distribution or method_entry.plugin,
        "plugin_version": method_entry.version,
        "plugin_versions": json.dumps(_plugin_info(host, spec), sort_keys=True),
    }


# -- running a cell --------------------------------------------------------------------------


@dataclass(frozen=True)
class CurvePoint:
    """One finished epoch: the step count so far, wall time (fidelity measurements excluded), mean
    training loss, and the validation scores of the task (accuracy; MSE for regression tasks;
    ROC-AUC and average precision for link prediction); the scores the task does not have are NaN,
    and all are NaN unless ``train.eval_every_epoch``. The gradient-fidelity values
    (:data:`~snnarena.results.FIDELITY_CURVE_COLUMNS`) are measured at the epochs
    :func:`fidelity_epochs` picks and NaN at the others."""

    epoch: int
    step: int
    elapsed_s: float
    train_loss: float
    val_accuracy: float
    val_mse: float = math.nan
    val_roc_auc: float = math.nan
    val_average_precision: float = math.nan
    grad_cosine_bptt: float = math.nan
    grad_cosine_readout: float = math.nan
    grad_cosine_hidden_min: float = math.nan
    grad_cosine_first_layer: float = math.nan
    grad_norm_ratio_bptt: float = math.nan


EpochCallback = Callable[[CurvePoint], None]
#: The identity columns every curve row repeats.
CURVE_IDENTITY: tuple[str, ...] = ("run_id", "cell_id", "method", "model", "dataset", "T", "seed")


def run_cell(spec: CellSpec, host: PluginHost, run_id: str, device: str = "auto") -> CellRecord:
    """Train and measure one cell; any failure becomes a ``failed`` record with its error.

    ``KeyboardInterrupt`` raises :class:`_Interrupted` with the record of the interrupted cell;
    every other exception, ``SystemExit`` from a plugin included, is recorded and returned.
    """
    started = time.perf_counter()
    try:
        torch_device = resolve_device(device)
    except ConfigurationError as err:  # a worker of a cluster without the device the run asked for
        identity = {**base_row(spec, host, run_id, torch.device("cpu")), "device": device}
        unusable = {"status": "failed", "reason": f"{type(err).__name__} on this worker: {err}"}
        return _record(spec, identity, unusable, [], traceback.format_exc(), started)
    identity = base_row(spec, host, run_id, torch_device)
    curve: list[CurvePoint] = []
    try:
        columns, error = _build_train_measure(spec, host, torch_device, curve.append), ""
    except WorkerStopped:
        raise  # the scheduler takes the worker: the executor requeues the cell
    except KeyboardInterrupt:
        failed = {"status": "failed", "reason": "interrupted (KeyboardInterrupt)"}
        raise _Interrupted(_record(spec, identity, failed, curve, traceback.format_exc(), started)) from None
    except BaseException as err:  # a plugin's SystemExit fails its cell, not the run
        columns, error = {"status": "failed", "reason": f"{type(err).__name__}: {err}"}, traceback.format_exc()
    return _record(spec, identity, columns, curve, error, started)


class _Interrupted(BaseException):
    """Carries the record of the cell that a Ctrl-C interrupted up to the runner."""

    def __init__(self, record: CellRecord) -> None:
        super().__init__("interrupted")
        self.record = record


def _build_train_measure(
    spec: CellSpec, host: PluginHost, device: torch.device, on_epoch: EpochCallback
) -> dict[str, Any]:
    """The status and measured columns of a cell that finished or was skipped."""
    try:
        built = build_cell(spec, host, device)
    except CellSkipped as skip:
        return {"status": "skipped", "reason": skip.reason}
    log = train(built, spec, device, on_epoch)
    selection = select_weights(built, spec, log, device)
    return {
        "status": "done",
        "reason": "",
        **built.size_columns(),
        **log.columns(),
        **selection.columns(),
        **measure(spec, host, built, device),
    }


def _record(
    spec: CellSpec,
    identity: dict[str, Any],
    columns: dict[str, Any],
    curve: list[CurvePoint],
    error: str,
    started: float,
) -> CellRecord:
    """The cell's record: one row from its identity and columns, and its curve rows."""
    row = {**identity, **columns, "duration_s": time.perf_counter() - started}
    keys = {k: identity[k] for k in CURVE_IDENTITY}
    curves = [{**keys, **dataclasses.asdict(point)} for point in curve]
    return CellRecord(spec.to_dict(), row, curves, error)


# -- build -----------------------------------------------------------------------------------


@dataclass
class BuiltCell:
    """A cell ready to train: data, the model, the method and the module it trains."""

    data: Bundle
    model: SpikingModel
    method: GradientMethod[Any]
    prepared: nn.Module
    loss: SequenceLoss
    optimizer: torch.optim.Optimizer

    def size_columns(self) -> dict[str, int]:
        """``n_parameters`` of the model and ``extra_parameters`` the method adds."""
        return {
            "n_parameters": sum(p.numel() for p in self.model.parameters()),
            "extra_parameters": self.method.extra_parameters(self.prepared, self.model),
        }


def _checked_reason(reason: object, who: str) -> str | None:
    """A plugin's skip reason, which must be ``None`` or a string."""
    if not isinstance(reason, (str, type(None))):
        raise TypeError(f"{who}.skip returned {reason!r}; expected a string or None")
    return reason or None


def check_batch_fits(spec: CellSpec, info: DataInfo) -> None:
    """Refuse a cell whose input batch ``[T, B, *input_shape]`` (float32) cannot fit in this machine's
    memory: suite validation checks this for datasets that declare ``input_size``; this catches the
    others once their data is built, before a batch is allocated."""
    nodes = info.graph.n_nodes if info.graph is not None else None
    too_large = input_batch_problem(spec.T, spec.train, math.prod(info.input_shape), spec.dataset, nodes)
    if too_large:
        raise ConfigurationError(too_large)


def cell_loss(spec: CellSpec, info: DataInfo, host: PluginHost) -> SequenceLoss:
    """The cell's loss: the suite's loss form for the task of the built data, which must be the
    task the dataset plugin declares (``Dataset.task_for``, what suite validation checked)."""
    dataset_cls = cast(type[Dataset], host.get("dataset", spec.dataset).obj)
    declared = dataset_cls.task_for(params_of(dataset_cls).resolve(spec.dataset_params))
    if info.task != declared:
        raise ValueError(
            f"dataset {spec.dataset!r} declares task {declared!r} (Dataset.task_for) but built data of task "
            f"{info.task!r} (DataInfo.task); the plugin must give both the same task"
        )
    return SequenceLoss(cast(LossForm, spec.loss), info.task)


def build_cell(spec: CellSpec, host: PluginHost, device: torch.device) -> BuiltCell:
    """Seed, then build everything a cell trains with; raises :class:`CellSkipped` with the
    model's or method's reason when it does not apply."""
    seed_everything(spec.seed)
    data = build_dataset(host, spec.dataset, spec.T, spec.seed, spec.dataset_params)
    check_batch_fits(spec, data.info)
    model_cls = cast(type[SpikingModel], host.get("model", spec.model).obj)
    reason = _checked_reason(model_cls.skip(data.info), spec.model)
    if reason:
        raise CellSkipped(reason)
    make_neuron = (
        neuron_factory(host, spec.neuron, spec.neuron_params, spec.surrogate, spec.surrogate_params)
        if spec.neuron
        else no_neuron(spec.model)
    )
    model = build_model(host, spec.model, data.info, make_neuron, spec.model_params).to(device)
    method = build_method(host, spec.method, spec.method_params)
    loss = cell_loss(spec, data.info, host)
    reason = _checked_reason(method.skip(model, data.info, loss), spec.method)
    if reason:
        raise CellSkipped(reason)
    prepared = method.prepare(model).to(device)
    return BuiltCell(data, model, method, prepared, loss, make_optimizer(prepared.parameters(), spec.optimizer))


# -- train -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """The task's scores (``scores``: ``{name: value}`` for each of ``task.scores``) and the mean
    spike rate."""

    task: Task
    scores: Mapping[str, float]
    spike_rate: float

    @property
    def score(self) -> float:
        """The task's primary score (what train.select compares)."""
        return self.scores[self.task.score]

    def columns(self, split: str) -> dict[str, float]:
        """``{split}_{score}`` for every score a task can have: this task's values, NaN for the others."""
        return {f"{split}_{name}": self.scores.get(name, math.nan) for name in SCORE_NAMES}

    @property
    def accuracy(self) -> float:
        """The accuracy (NaN for a task scored otherwise)."""
        return self.scores.get("accuracy", math.nan)


#: A CPU copy of the state of the modules a cell trains: ``{module key: state_dict}``.
WeightsCopy = dict[str, dict[str, torch.Tensor]]


@dataclass(frozen=True)
class BestEpoch:
    """The epoch with the best validation score so far (its task's direction) and a CPU copy of
    its weights."""

    epoch: int
    validation: Evaluation
    weights: WeightsCopy


@dataclass(frozen=True)
class TrainingLog:
    """What training did: counts, median phase times (ms), peak bytes, the last epoch's losses,
    the validation of the final weights if the last epoch took one, and (``best_val``) the best
    validation epoch."""

    steps: int
    epochs: int
    timing_ms: dict[str, float]
    peak_activation_bytes: int
    peak_device_bytes: float
    last_losses: tuple[float, ...]
    last_validation: Evaluation | None
    best: BestEpoch | None = None

    def columns(self) -> dict[str, Any]:
        return {
            "train_steps": self.steps,
            "epochs": self.epochs,
            **self.timing_ms,
            "peak_activation_bytes": self.peak_activation_bytes,
            "peak_device_bytes": self.peak_device_bytes,
            "train_loss": float(np.mean(self.last_losses)) if self.last_losses else math.nan,
        }


def train(built: BuiltCell, spec: CellSpec, device: torch.device, on_epoch: EpochCallback) -> TrainingLog:
    """Train ``built`` under the budget of ``spec.train``, timing each step's phases and metering
    the bytes saved for backward; ``on_epoch`` receives each finished epoch's point.

    With ``eval_every_epoch`` each epoch ends with a validation pass; with ``select = "best_val"``
    the weights of the epoch with the best validation score of the cell's task (highest accuracy,
    lowest MSE; the earliest on ties) are copied to the CPU (the log's ``best``). With ``fidelity``,
    the epochs :func:`fidelity_epochs` picks from ``fidelity_points`` (and the last epoch that ran,
    if any is picked) measure gradient fidelity on the probe batch into their curve point; the
    measurement leaves training as it was (:class:`FidelityProbe`) and is excluded from
    ``elapsed_s`` and the device-memory peak.
    """
    settings = spec.train
    keep_best = settings["select"] == "best_val"
    generator = torch.Generator().manual_seed(spec.seed)
    clock = PhaseClock(device)
    device_memory = DeviceMemory(device)
    device_memory.reset()
    exclude = list(built.prepared.parameters())
    peak_saved = step = epoch = 0
    t0 = time.perf_counter()
    last_losses: list[float] = []
    last_val: Evaluation | None = None  # validation of the current weights, if taken
    best: BestEpoch | None = None
    budget_steps = settings["steps"]
    epochs = settings["epochs"] if settings["epochs"] is not None else math.inf
    fidelity = CurveFidelity(built, spec, device, device_memory)
    schedule = LRSchedule(built.optimizer, spec.optimizer, settings)
    built.prepared.train()
    while epoch < epochs and (budget_steps is None or step < budget_steps):
        epoch_losses: list[float] = []
        for x, y in built.data.train_batches(settings["batch_size"], generator):
            x, y = x.to(device), y.to(device)
            if step == 0:
                check_targets(built, spec, y)
            with SavedTensorMeter(exclude + [x, y]) as meter, _gradient_receipts(built.prepared, step == 0) as got:
                value = built.method.train_step(built.prepared, x, y, built.loss, built.optimizer, clock)
            clock.end_step()
            if step == 0:
                check_all_trained(built, got)
            peak_saved = max(peak_saved, meter.peak_bytes)
            if not math.isfinite(value):
                raise NonFiniteLossError(f"training loss became {value} at epoch {epoch + 1}, step {step + 1}")
            epoch_losses.append(value)
            step += 1
            schedule.after_step()
            if budget_steps is not None and step >= budget_steps:
                break
        epoch += 1
        schedule.after_epoch()
        last_losses = epoch_losses or last_losses
        check_finite(built.prepared, f"epoch {epoch}, step {step}")
        last_val = validate(built, settings["eval_batch_size"], device) if settings["eval_every_epoch"] else None
        if keep_best and last_val is not None and (best is None or _improves(last_val, best.validation)):
            best = BestEpoch(epoch, last_val, copy_weights(built))
        last = not epoch_losses or epoch >= epochs or (budget_steps is not None and step >= budget_steps)
        measured = fidelity.at(epoch, step, last)
        scores = last_val.columns("val") if last_val else {}
        on_epoch(
            CurvePoint(
                epoch,
                step,
                time.perf_counter() - t0 - fidelity.seconds,
                float(np.mean(epoch_losses)) if epoch_losses else math.nan,
                scores.get("val_accuracy", math.nan),
                scores.get("val_mse", math.nan),
                scores.get("val_roc_auc", math.nan),
                scores.get("val_average_precision", math.nan),
                **measured,
            )
        )
        if not epoch_losses:
            break
    return TrainingLog(
        step,
        epoch,
        clock.summary_ms(settings["timing_warmup"]),
        peak_saved,
        fidelity.peak_device_bytes(),
        tuple(last_losses),
        last_val,
        best,
    )


def fidelity_epochs(points: int, epochs: int) -> frozenset[int]:
    """The epochs (1-based) of a run of ``epochs`` epochs that measure gradient fidelity: ``points``
    of them spread evenly from the first to the last, ``1 + round_half_up(i (epochs - 1) / (points - 1))``
    for ``i = 0 .. points - 1`` (fewer when ``epochs < points``); the last alone for ``points = 1``,
    none for 0."""
    if points <= 0 or epochs <= 0:
        return frozenset()
    if points == 1:
        return frozenset({epochs})
    span = 2 * (points - 1)
    return frozenset(1 + (2 * i * (epochs - 1) + points - 1) // span for i in range(points))


class CurveFidelity:
    """Gradient fidelity at the learning-curve points ``train.fidelity_points`` picks (none without
    ``train.fidelity``): the epochs (:func:`fidelity_epochs`, known after the first epoch), the
    measurement (:class:`FidelityProbe`), and the wall time and device-memory peak it takes, which
    training's own must not include."""

    def __init__(self, built: BuiltCell, spec: CellSpec, device: torch.device, memory: DeviceMemory) -> None:
        settings = spec.train
        self.points: int = settings["fidelity_points"] if settings["fidelity"] else 0
        self.budget: tuple[int | None, int | None] = (settings["epochs"], settings["steps"])
        self.probe = FidelityProbe(built, spec.seed, settings["batch_size"], device)
        self.memory = memory
        self.epochs: frozenset[int] = frozenset()
        self.seconds = 0.0
        self._peak = math.nan  # training's device-memory peak before the last measurement

    def at(self, epoch: int, step: int, last: bool) -> dict[str, float]:
        """The fidelity curve values of finished ``epoch`` (``step`` steps so far; ``last``: training
        ends here), or ``{}`` where this epoch is not measured. The last epoch that ran is measured
        whenever any is."""
        if epoch == 1:
            self.epochs = fidelity_epochs(self.points, planned_epochs(*self.budget, step))
        if epoch not in self.epochs and not (last and self.epochs):
            return {}
        self._peak = self.peak_device_bytes()
        started = time.perf_counter()
        measured = self.probe.columns()
        self.seconds += time.perf_counter() - started
        self.memory.reset()
        return {k: measured[k] for k in FIDELITY_CURVE_COLUMNS}

    def peak_device_bytes(self) -> float:
        """Training's device-memory peak so far, the measurements left out (NaN on the CPU)."""
        return _max_known(self._peak, self.memory.peak_bytes())


def planned_epochs(budget_epochs: int | None, budget_steps: int | None, steps_per_epoch: int) -> int:
    """The epochs a run will take: ``train.epochs``, or under a step budget the epochs of
    ``steps_per_epoch`` steps (the first epoch's count; every epoch has as many) it needs."""
    if budget_epochs is not None:
        return budget_epochs
    assert budget_steps is not None, "suite validation requires epochs or steps"
    return max(1, math.ceil(budget_steps / max(steps_per_epoch, 1)))


def _max_known(a: float, b: float) -> float:
    """The larger of two peaks, ignoring NaN (no device memory on the CPU); NaN if both are."""
    return b if math.isnan(a) else a if math.isnan(b) else max(a, b)


def _improves(candidate: Evaluation, best: Evaluation) -> bool:
    """Whether ``candidate``'s score beats ``best``'s in the task's direction (NaN never does)."""
    return candidate.task.better(candidate.score, best.score) or (
        math.isnan(best.score) and not math.isnan(candidate.score)
    )


def _trained_modules(built: BuiltCell) -> dict[str, nn.Module]:
    """The modules whose state makes the trained weights: the prepared module, and the model when
    the method's prepared module does not contain it."""
    modules: dict[str, nn.Module] = {"prepared": built.prepared}
    if not any(m is built.model for m in built.prepared.modules()):
        modules["model"] = built.model
    return modules


def copy_weights(built: BuiltCell) -> WeightsCopy:
    """A CPU copy of the state (parameters and buffers) of the modules the cell trains."""
    return {
        key: {name: t.detach().to("cpu", copy=True) for name, t in module.state_dict().items()}
        for key, module in _trained_modules(built).items()
    }


def restore_weights(built: BuiltCell, weights: WeightsCopy) -> None:
    """Load a :func:`copy_weights` copy back into the cell's modules (in place, on their device)."""
    for key, module in _trained_modules(built).items():
        module.load_state_dict(weights[key])


@dataclass(frozen=True)
class Selection:
    """The weights a cell is measured on: the rule, the epoch they come from, their validation
    score."""

    rule: str
    epoch: int
    validation: Evaluation

    def columns(self) -> dict[str, Any]:
        return {"select": self.rule, "selected_epoch": self.epoch, **self.validation.columns("val")}

    @property
    def val_accuracy(self) -> float:
        """The validation accuracy of the selected weights (NaN for a task scored otherwise)."""
        return self.validation.accuracy


def select_weights(built: BuiltCell, spec: CellSpec, log: TrainingLog, device: torch.device) -> Selection:
    """Put the weights ``train.select`` picks in place: ``last`` keeps the final weights (validated
    now if the last epoch did not), ``best_val`` restores the best validation epoch's copy."""
    rule = spec.train["select"]
    if rule == "best_val":
        if log.best is None:
            raise ConfigurationError(
                "train.select = 'best_val' needs a validation pass after every epoch; "
                "set train.eval_every_epoch = true or select = 'last'"
            )
        restore_weights(built, log.best.weights)
        return Selection(rule, log.best.epoch, log.best.validation)
    final = log.last_validation or validate(built, spec.train["eval_batch_size"], device)
    return Selection(rule, log.epochs, final)


@contextmanager
def _gradient_receipts(module: nn.Module, watch: bool) -> Iterator[set[str]]:
    """While open (and ``watch``), the names of ``module``'s parameters into whose ``.grad``
    autograd accumulated, even if the method cleared ``.grad`` again (per-segment updates)."""
    received: set[str] = set()
    handles = []
    if watch:
        for name, p in module.named_parameters():
            if p.requires_grad:
                handles.append(p.register_post_accumulate_grad_hook(lambda _p, n=name: received.add(n)))
    try:
        yield received
    finally:
        for handle in handles:
            handle.remove()


def check_targets(built: BuiltCell, spec: CellSpec, y: torch.Tensor) -> None:
    """The first training batch's targets have the shape and type of the cell's task, or a
    ``ValueError`` names the dataset and what its targets should be (see :mod:`snnarena.task`)."""
    reason = built.loss.task_spec.check_targets(y, spec.T)
    if reason:
        raise ValueError(f"dataset {spec.dataset!r} (task {built.loss.task}) gave targets that do not fit: {reason}")


def check_all_trained(built: BuiltCell, received: set[str]) -> None:
    """Every trainable parameter of the prepared module got a gradient in the first training step
    (``received``, or ``p.grad`` set), unless the method declares it frozen; raises
    :class:`UntrainedParametersError` naming the others."""
    frozen = built.method.frozen_parameters(built.prepared, built.model)
    trainable = {n: p for n, p in built.prepared.named_parameters() if p.requires_grad}
    unknown = sorted(frozen - set(trainable))
    if unknown:
        raise UntrainedParametersError(
            f"{built.method.name}.frozen_parameters names parameters the prepared module does not have "
            f"(or that do not require grad): {_names(unknown)}"
        )
    missing = [n for n, p in trainable.items() if n not in received and p.grad is None and n not in frozen]
    if missing:
        raise UntrainedParametersError(
            f"{built.method.name} left trainable parameters without a gradient in the first training step: "
            f"{_names(missing)}. The model ({built.model.name!r}, family {built.model.family!r}) may not suit "
            f"the method; a method that leaves parameters frozen on purpose names them in frozen_parameters()"
        )


def check_finite(module: nn.Module, when: str) -> None:
    """Raise :class:`NonFiniteParametersError` naming the parameters and floating-point buffers of
    ``module`` that hold NaN or inf."""
    tensors = [*module.named_parameters(), *module.named_buffers()]
    bad = [n for n, t in tensors if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise NonFiniteParametersError(f"parameters became non-finite ({when}): {_names(bad)}")


def validate(built: BuiltCell, batch_size: int, device: torch.device) -> Evaluation:
    """The task's score and the spike rate of the cell's model on the validation split."""
    return evaluate(built.model, built.data.val_batches(batch_size), device, built.loss.task_spec)


@torch.no_grad()
def evaluate(
    model: SpikingModel,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    task: Task | None = None,
) -> Evaluation:
    """The task's score (default: sequence classification, accuracy) and the mean spike rate of
    the plain forward pass (the same for every method) over ``batches`` (``data.val_batches(...)``
    or ``data.test_batches(...)``)."""
    task = task or task_of("classification")
    was_training = model.training
    model.eval()
    sums = {name: ScoreSums() for name in task.scores}
    spikes = neurons = 0.0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        out = model.forward_seq(x)
        for name, part in task.score_sums(out.logits, y).items():
            sums[name] = sums[name] + part
        for stage, s in zip(model.stages, out.spikes, strict=True):
            if stage.neuron.spiking:
                spikes += float(s.sum())
                neurons += s.numel()
    model.train(was_training)
    return Evaluation(
        task, {name: total.value for name, total in sums.items()}, spikes / neurons if neurons else math.nan
    )


# -- measure ---------------------------------------------------------------------------------


def measure(spec: CellSpec, host: PluginHost, built: BuiltCell, device: torch.device) -> dict[str, Any]:
    """The measured columns of a trained cell's selected weights: the task's test score and the
    spike rate (the one pass over the test split), gradient fidelity vs BPTT on a fixed probe batch
    (if ``train.fidelity``), and the metric plugins'."""
    settings = spec.train
    test_batches = built.data.test_batches(settings["eval_batch_size"])
    final = evaluate(built.model, test_batches, device, built.loss.task_spec)
    columns: dict[str, Any] = {**final.columns("test"), "spike_rate": final.spike_rate}
    probe = FidelityProbe(built, spec.seed, settings["batch_size"], device)
    if settings["fidelity"]:
        columns.update(probe.columns())
    ctx = CellContext(built.model, built.prepared, built.method, built.data, built.loss, device, probe.batch())
    columns.update(_metrics(spec, host, ctx))
    return columns


class FidelityProbe:
    """A cell's gradient-fidelity measurement on its fixed probe batch: the first training batch of
    size ``min(batch_size, n_train)`` drawn with seed ``seed + 1``, the same batch at every point
    of training and at the end."""

    def __init__(self, built: BuiltCell, seed: int, batch_size: int, device: torch.device) -> None:
        self.built = built
        self.seed = seed
        self.size = min(batch_size, built.data.info.n_train)
        self.device = device
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The probe batch ``(x [T, B, ...], y)`` on the device (drawn once and kept on the CPU, so
        that it takes no device memory while training runs between measurements)."""
        if self._batch is None:
            self._batch = next(self.built.data.train_batches(self.size, torch.Generator().manual_seed(self.seed + 1)))
        x, y = self._batch
        return x.to(self.device), y.to(self.device)

    def columns(self) -> dict[str, Any]:
        """The fidelity columns of the current weights; the cell is left exactly as it was
        (:func:`_untouched`)."""
        with _untouched(self.built, self.device):
            return _fidelity(self.built, *self.batch(), self.device)


@contextmanager
def _untouched(built: BuiltCell, device: torch.device) -> Iterator[None]:
    """Put back on exit what a measurement may change: the trained modules' parameters and buffers
    (batch-norm statistics, say), every parameter's ``.grad``, and the random number generators
    (torch on the CPU and ``device``, Python's, NumPy's). State a method plugin keeps in its own
    attributes is its own."""
    weights = copy_weights(built)
    params = {id(p): p for m in _trained_modules(built).values() for p in m.parameters()}
    grads = {key: (p.grad.detach().clone() if p.grad is not None else None) for key, p in params.items()}
    cpu_rng, py_rng, np_rng = torch.get_rng_state(), random.getstate(), np.random.get_state()
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        yield
    finally:
        restore_weights(built, weights)
        for key, p in params.items():
            p.grad = grads[key]
        torch.set_rng_state(cpu_rng)
        random.setstate(py_rng)
        np.random.set_state(np_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, device)


def _fidelity(built: BuiltCell, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> dict[str, Any]:
    """The method's gradient vs exact BPTT's on ``(x, y)``: the global cosine, norm ratio and sign
    agreement, the cosines per role (:func:`~snnarena.reference.parameter_roles`) and per tensor.
    Leaves the gradients it computes in ``.grad`` (:class:`FidelityProbe` puts them back)."""
    quiet = PhaseClock(device, enabled=False)
    model, prepared = built.model, built.prepared
    prepared.zero_grad(set_to_none=True)
    model.zero_grad(set_to_none=True)
    built.method.accumulate_gradients(prepared, x, y, built.loss, quiet)
    grads = collect_gradients(model)
    model.zero_grad(set_to_none=True)
    bptt_accumulate(model, x, y, built.loss, quiet)
    reference = collect_gradients(model)
    fid = compare_gradients(grads, reference)
    roles = compare_by_role(grads, reference, parameter_roles(model))
    return {
        "grad_cosine_bptt": fid.cosine,
        "grad_cosine_readout": roles.readout,
        "grad_cosine_hidden_min": roles.hidden_min,
        "grad_cosine_first_layer": roles.first_layer,
        "grad_norm_ratio_bptt": fid.norm_ratio,
        "grad_sign_agreement_bptt": fid.sign_agreement,
        "grad_cosine_layers": json.dumps({k: (None if math.isnan(v) else v) for k, v in fid.per_layer.items()}),
    }


class MetricError(RuntimeError):
    """A metric plugin broke its contract (see :mod:`snnarena.metric`)."""


def metric_values(metric: Metric, values: object) -> dict[str, float]:
    """``values`` returned by ``metric.compute``, checked against ``metric.columns``: exactly the
    declared columns, each a real number; raises :class:`MetricError` naming what is wrong."""
    name = metric.name or type(metric).__name__
    declared = [c.name for c in metric.columns]
    if not declared:
        raise MetricError(f"{name} declares no columns (set Metric.columns to the columns compute returns)")
    if not isinstance(values, Mapping):
        raise MetricError(f"{name}.compute returned {type(values).__name__}; expected {{column: number}}")
    undeclared = sorted(str(k) for k in values if k not in declared)
    if undeclared:
        raise MetricError(f"{name}.compute returned undeclared columns {undeclared}; declared: {declared}")
    missing = [c for c in declared if c not in values]
    if missing:
        raise MetricError(f"{name}.compute did not return declared columns {missing}")
    bad = {k: v for k, v in values.items() if isinstance(v, bool) or not isinstance(v, numbers.Real)}
    if bad:
        shown = ", ".join(f"{k}={v!r} ({type(v).__name__})" for k, v in bad.items())
        raise MetricError(f"{name}.compute returned values that are not numbers: {shown}")
    return {k: float(v) for k, v in values.items()}


def _is_finite_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)


def metric_series_values(metric: Metric, values: object) -> dict[str, list[float]]:
    """``values`` returned by ``metric.compute_series``, checked against ``metric.series``: declared
    series only, each a non-empty sequence of finite real numbers; raises :class:`MetricError`
    naming what is wrong."""
    name = metric.name or type(metric).__name__
    declared = [s.name for s in metric.series]
    if not isinstance(values, Mapping):
        raise MetricError(f"{name}.compute_series returned {type(values).__name__}; expected {{series: [numbers]}}")
    undeclared = sorted(str(k) for k in values if k not in declared)
    if undeclared:
        raise MetricError(f"{name}.compute_series returned undeclared series {undeclared}; declared: {declared}")
    out: dict[str, list[float]] = {}
    for key, curve in values.items():
        if isinstance(curve, (str, bytes, Mapping)) or not isinstance(curve, Sequence) or not curve:
            raise MetricError(f"{name}.compute_series: {key!r} is not a non-empty sequence of numbers ({curve!r:.80})")
        bad = [(i, v) for i, v in enumerate(curve) if not _is_finite_number(v)]
        if bad:
            i, v = bad[0]
            raise MetricError(
                f"{name}.compute_series: {key!r} has {len(bad)} value(s) that are not finite numbers, "
                f"the first at index {i}: {v!r} ({type(v).__name__})"
            )
        out[str(key)] = [float(v) for v in curve]
    return out


def _measure_metric(metric: Metric, ctx: CellContext) -> tuple[dict[str, float], dict[str, list[float]]]:
    """``(columns, series)`` of one metric, each checked against its declarations."""
    columns = metric_values(metric, metric.compute(ctx))
    return columns, metric_series_values(metric, metric.compute_series(ctx))


def _metrics(spec: CellSpec, host: PluginHost, ctx: CellContext) -> dict[str, Any]:
    """Extra metric plugins; a failing metric is named in ``metric_errors``, its columns NaN and
    its series absent. ``metric_series`` is JSON ``{series: {**Series.to_dict(), "metric", "values"}}``
    ("" when there is none)."""
    out: dict[str, Any] = {}
    series: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for name in spec.metrics:
        declared = [c.name for c in cast(type[Metric], host.get("metric", name).obj).columns]
        try:
            metric = build_metric(host, name)
            columns, curves = _measure_metric(metric, ctx)
            taken = sorted(set(curves) & set(series))
            if taken:
                owners = sorted({series[k]["metric"] for k in taken})
                raise MetricError(f"series {taken} were already recorded by metric(s) {owners}; rename them")
            out.update(columns)
            info = {s.name: s for s in metric.series}
            series.update({k: {**info[k].to_dict(), "metric": name, "values": v} for k, v in curves.items()})
        except (KeyboardInterrupt, WorkerStopped):
            raise
        except BaseException as err:  # SystemExit from a metric is that metric's error
            errors[name] = f"{type(err).__name__}: {err}"
            out.update(dict.fromkeys(declared, math.nan))
    out["metric_errors"] = json.dumps(errors) if errors else ""
    out["metric_series"] = json.dumps(series) if series else ""
    return out
