"""Running one cell: build data, model and method, train under measurement, evaluate, record.

:func:`run_cell` returns a :class:`~snnarena.results.CellRecord` whatever happens: ``done`` with
its measurements, ``skipped`` with the method's or model's reason, or ``failed`` with the error
(an exception, a NaN/inf loss, an interruption) — never a silent zero.
"""

from __future__ import annotations

import json
import math
import random
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

import snnarena
from snnarena.factory import build_dataset, build_method, build_metric, build_model, neuron_factory
from snnarena.data import DataBundle
from snnarena.loss import SequenceLoss
from snnarena.measure import DeviceMemory, PhaseClock, SavedTensorMeter
from snnarena.method import GradientMethod
from snnarena.metric import CellContext
from snnarena.model import SpikingModel
from snnarena.params import params_of
from snnarena.host import PluginHost
from snnarena.reference import bptt_accumulate, collect_gradients, compare_gradients
from snnarena.results import CellRecord
from snnarena.suite import CellSpec


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so a CPU rerun reproduces a cell."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch sees no CUDA device")
    return torch.device(device)


def make_optimizer(parameters: Any, config: dict[str, Any]) -> torch.optim.Optimizer:
    name, lr, wd = config["name"], config["lr"], config["weight_decay"]
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=config["momentum"], weight_decay=wd)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "adamax": torch.optim.Adamax}[name]
    return cls(parameters, lr=lr, weight_decay=wd)


@dataclass
class Evaluation:
    accuracy: float
    spike_rate: float


@torch.no_grad()
def evaluate(model: SpikingModel, data: DataBundle, batch_size: int, device: torch.device) -> Evaluation:
    """Test accuracy and mean spike rate of the plain forward pass (the same for every method)."""
    was_training = model.training
    model.eval()
    correct = total = 0
    spikes = neurons = 0.0
    for x, y in data.test_batches(batch_size):
        x, y = x.to(device), y.to(device)
        out = model.forward_seq(x)
        correct += int((SequenceLoss.predict(out.logits) == y).sum())
        total += len(y)
        for stage, s in zip(model.stages, out.spikes):
            if stage.neuron.spiking:
                spikes += float(s.sum())
                neurons += s.numel()
    model.train(was_training)
    return Evaluation(correct / max(total, 1), spikes / neurons if neurons else math.nan)


def _plugin_info(host: PluginHost, spec: CellSpec) -> dict[str, dict[str, str | None]]:
    out = {}
    for kind, name in (("method", spec.method), ("model", spec.model), ("dataset", spec.dataset),
                       ("neuron", spec.neuron), ("surrogate", spec.surrogate), *(("metric", m) for m in spec.metrics)):
        entry = host.get(kind, name)  # type: ignore[arg-type]
        out[f"{kind}:{name}"] = {"plugin": entry.plugin, "distribution": entry.distribution, "version": entry.version}
    return out


def base_row(spec: CellSpec, host: PluginHost, run_id: str, device: torch.device) -> dict[str, Any]:
    """The identifying and provenance columns of a cell's row."""
    method_entry = host.get("method", spec.method)
    return {
        "run_id": run_id, "suite": spec.suite, "cell_id": spec.cell_id, "label": spec.label,
        "method": spec.method,
        "method_params": json.dumps(params_of(method_entry.obj).resolve(spec.method_params), sort_keys=True),
        "model": spec.model, "model_params": json.dumps(spec.model_params, sort_keys=True),
        "dataset": spec.dataset, "dataset_params": json.dumps(spec.dataset_params, sort_keys=True),
        "neuron": spec.neuron, "neuron_params": json.dumps(spec.neuron_params, sort_keys=True),
        "surrogate": spec.surrogate, "loss": spec.loss, "T": spec.T, "seed": spec.seed,
        "memory_class": method_entry.obj.memory_class, "batch_size": spec.train["batch_size"],
        "device": str(device), "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
        "snnarena_version": snnarena.__version__,
        "plugin": method_entry.distribution or method_entry.plugin, "plugin_version": method_entry.version,
        "plugin_versions": json.dumps(_plugin_info(host, spec), sort_keys=True),
    }


def run_cell(spec: CellSpec, host: PluginHost, run_id: str, device: str = "auto") -> CellRecord:
    """Train and measure one cell; any failure becomes a ``failed`` record with its error."""
    started = time.perf_counter()
    torch_device = resolve_device(device)
    row = base_row(spec, host, run_id, torch_device)
    curves: list[dict[str, Any]] = []
    try:
        row.update(_train_and_measure(spec, host, torch_device, curves, row))
        tb = ""
    except KeyboardInterrupt:
        row.update(status="failed", reason="interrupted (KeyboardInterrupt)")
        row["duration_s"] = time.perf_counter() - started
        raise _Interrupted(CellRecord(spec.to_dict(), row, curves, traceback.format_exc())) from None
    except Exception as err:
        row.update(status="failed", reason=f"{type(err).__name__}: {err}")
        tb = traceback.format_exc()
    row["duration_s"] = time.perf_counter() - started
    for c in curves:
        c.update(run_id=run_id, cell_id=spec.cell_id, method=spec.method, model=spec.model,
                 dataset=spec.dataset, T=spec.T, seed=spec.seed)
    return CellRecord(spec.to_dict(), row, curves, tb)


class _Interrupted(BaseException):
    """Carries the record of the cell that a Ctrl-C interrupted up to the runner."""

    def __init__(self, record: CellRecord) -> None:
        super().__init__("interrupted")
        self.record = record


@dataclass
class BuiltCell:
    """A cell ready to train: data, the model, the method and the module it trains."""

    data: DataBundle
    model: SpikingModel
    method: GradientMethod
    prepared: nn.Module
    loss: SequenceLoss
    optimizer: torch.optim.Optimizer


def _checked_reason(reason: object, who: str) -> str | None:
    """A plugin's skip reason, which must be ``None`` or a string."""
    if not isinstance(reason, (str, type(None))):
        raise TypeError(f"{who}.skip returned {reason!r}; expected a string or None")
    return reason or None


def build_cell(spec: CellSpec, host: PluginHost, device: torch.device) -> BuiltCell | str:
    """Seed, then build everything a cell trains with; or the model's/method's skip reason."""
    seed_everything(spec.seed)
    data = build_dataset(host, spec.dataset, spec.T, spec.seed, spec.dataset_params)
    reason = _checked_reason(host.get("model", spec.model).obj.skip(data.info), spec.model)
    if reason:
        return reason
    make_neuron = neuron_factory(host, spec.neuron, spec.neuron_params, spec.surrogate, spec.surrogate_params)
    model = build_model(host, spec.model, data.info, make_neuron, spec.model_params).to(device)
    method = build_method(host, spec.method, spec.method_params)
    loss = SequenceLoss(spec.loss)  # type: ignore[arg-type]
    reason = _checked_reason(method.skip(model, data.info, loss), spec.method)
    if reason:
        return reason
    prepared = method.prepare(model).to(device)
    return BuiltCell(data, model, method, prepared, loss, make_optimizer(prepared.parameters(), spec.optimizer))


def _train_and_measure(
    spec: CellSpec, host: PluginHost, device: torch.device, curves: list[dict[str, Any]], row: dict[str, Any]
) -> dict[str, Any]:
    built = build_cell(spec, host, device)
    if isinstance(built, str):
        return {"status": "skipped", "reason": built}
    data, model, method, prepared, loss, optimizer = (
        built.data, built.model, built.method, built.prepared, built.loss, built.optimizer
    )
    row["n_parameters"] = sum(p.numel() for p in model.parameters())
    row["extra_parameters"] = method.extra_parameters(prepared, model)

    train = spec.train
    generator = torch.Generator().manual_seed(spec.seed)
    probe = next(data.train_batches(min(train["batch_size"], data.info.n_train), torch.Generator().manual_seed(spec.seed + 1)))
    clock = PhaseClock(device)
    device_memory = DeviceMemory(device)
    device_memory.reset()
    exclude = list(prepared.parameters())
    peak_saved = 0
    step = 0
    epoch = 0
    t0 = time.perf_counter()
    last_losses: list[float] = []
    last_eval: Evaluation | None = None  # evaluation of the current weights, if taken
    budget_steps = train["steps"]
    epochs = train["epochs"] if train["epochs"] is not None else math.inf
    prepared.train()
    while epoch < epochs and (budget_steps is None or step < budget_steps):
        epoch_losses: list[float] = []
        last_eval = None
        for x, y in data.train_batches(train["batch_size"], generator):
            x, y = x.to(device), y.to(device)
            with SavedTensorMeter(exclude + [x, y]) as meter:
                value = method.train_step(prepared, x, y, loss, optimizer, clock)
            clock.end_step()
            peak_saved = max(peak_saved, meter.peak_bytes)
            if not math.isfinite(value):
                raise NonFiniteLossError(f"training loss became {value} at epoch {epoch + 1}, step {step + 1}")
            epoch_losses.append(value)
            step += 1
            if budget_steps is not None and step >= budget_steps:
                break
        epoch += 1
        last_losses = epoch_losses or last_losses
        point: dict[str, Any] = {"epoch": epoch, "step": step, "elapsed_s": time.perf_counter() - t0,
                                 "train_loss": float(np.mean(epoch_losses)) if epoch_losses else math.nan,
                                 "test_accuracy": math.nan}
        if train["eval_every_epoch"]:
            last_eval = evaluate(model, data, train["eval_batch_size"], device)
            point["test_accuracy"] = last_eval.accuracy
        curves.append(point)
        if not epoch_losses:
            break
    result: dict[str, Any] = {"status": "done", "reason": "", "train_steps": step, "epochs": epoch}
    result["peak_device_bytes"] = device_memory.peak_bytes()
    result["peak_activation_bytes"] = peak_saved
    result.update(clock.summary_ms(train["timing_warmup"]))
    result["train_loss"] = float(np.mean(last_losses)) if last_losses else math.nan
    final = last_eval or evaluate(model, data, train["eval_batch_size"], device)
    result["test_accuracy"] = final.accuracy
    result["spike_rate"] = final.spike_rate
    if curves:
        curves[-1]["test_accuracy"] = final.accuracy
    px, py = probe[0].to(device), probe[1].to(device)
    if train["fidelity"]:
        result.update(_fidelity(method, model, prepared, px, py, loss, device))
    result.update(_metrics(spec, host, CellContext(model, prepared, method, data, loss, device, (px, py))))
    return result


def _fidelity(
    method: GradientMethod, model: SpikingModel, prepared: nn.Module, x: torch.Tensor, y: torch.Tensor,
    loss: SequenceLoss, device: torch.device,
) -> dict[str, Any]:
    """Cosine and norm ratio of the method's gradient vs exact BPTT on the probe batch."""
    quiet = PhaseClock(device, enabled=False)
    prepared.zero_grad(set_to_none=True)
    method.accumulate_gradients(prepared, x, y, loss, quiet)
    grads = collect_gradients(model)
    model.zero_grad(set_to_none=True)
    bptt_accumulate(model, x, y, loss, quiet)
    reference = collect_gradients(model)
    prepared.zero_grad(set_to_none=True)
    fid = compare_gradients(grads, reference)
    return {
        "grad_cosine_bptt": fid.cosine,
        "grad_norm_ratio_bptt": fid.norm_ratio,
        "grad_sign_agreement_bptt": fid.sign_agreement,
        "grad_cosine_layers": json.dumps({k: (None if math.isnan(v) else v) for k, v in fid.per_layer.items()}),
    }


def _metrics(spec: CellSpec, host: PluginHost, ctx: CellContext) -> dict[str, Any]:
    """Extra metric plugins; a failing metric is named in ``metric_errors``, its columns absent."""
    out: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in spec.metrics:
        try:
            values = build_metric(host, name).compute(ctx)
        except Exception as err:
            errors[name] = f"{type(err).__name__}: {err}"
            continue
        out.update({k: float(v) for k, v in values.items()})
    out["metric_errors"] = json.dumps(errors) if errors else ""
    return out
