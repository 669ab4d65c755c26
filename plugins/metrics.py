"""Efficiency metrics with NeuroBench's names, measured on every finished cell that asks for them.

Add them to a suite with ``metrics = ["footprint", "synaptic_operations", ...]``; each returns the
columns below (errors propagate: a failing metric is reported in ``metric_errors``, never 0).

=======================  ==================================================================
metric                   columns and definition
=======================  ==================================================================
footprint                ``footprint``: bytes of the model's parameters and buffers
                         (NeuroBench Footprint); ``footprint_prepared``: the same for the
                         module the method trains (auxiliary heads included).
connection_sparsity      ``connection_sparsity``: zero weights / all weights of the connection
                         layers (``Linear``, ``Conv*d``, ``ConvTranspose*d``, RNN layers/cells).
activation_sparsity      ``activation_sparsity = 1 − nnz / numel`` over the outputs of every
                         neuron stage, all time steps and test samples (plain ``forward_seq``,
                         eval mode).
synaptic_operations      ``Effective_MACs``, ``Effective_ACs``, ``Dense`` per sample of the test
                         data, where one sample is a whole input sequence of ``T`` steps
                         (NeuroBench's unit; divide by ``T`` for per-step numbers). Products
                         of a connection layer (synapses and readout) whose input and weight
                         are both nonzero are *effective*; they are ACs when an operand is
                         binary (spikes), MACs otherwise; ``Dense`` counts every product.
                         Definitions in :mod:`snnarena.opcount`.
training_operations      operations of one call of the method's ``accumulate_gradients`` (the
                         forward and backward passes of a training step, optimizer excluded)
                         on the probe batch, **per training sample**: ``train_forward_ops``,
                         ``train_backward_ops`` (synaptic products + elementwise + bias),
                         ``train_{forward,backward}_dense`` and
                         ``train_{forward,backward}_effective_{acs,macs}``. Operations the
                         autograd engine runs count as backward, others as the phase the
                         method's clock names. Parameters, gradients and buffers are restored.
=======================  ==================================================================
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

import snnarena
from snnarena.columns import Column
from snnarena.measure import PhaseClock
from snnarena.metric import CellContext, Metric
from snnarena.opcount import OpCounter
from snnarena.params import Param
from snnarena.registry import Register

CONNECTION_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.RNNBase,
    nn.RNNCellBase,
)
_SAMPLES = Param(
    "samples", "int", 1024, "test samples used (the first N of the test split; null = all)", low=1, nullable=True
)
_BATCH = Param("batch_size", "int", 256, "evaluation batch size", low=1)


def module_bytes(module: nn.Module) -> int:
    """Bytes of the parameters and buffers of ``module``, each storage counted once."""
    seen: set[int] = set()
    total = 0
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def held_out_inputs(ctx: CellContext, samples: int | None, batch_size: int) -> Iterator[Tensor]:
    """The first ``samples`` test inputs ``[T, B, ...]`` on the cell's device, batch by batch."""
    left = samples if samples is not None else ctx.data.info.n_test
    for x, _ in ctx.data.test_batches(batch_size):
        if left <= 0:
            break
        x = x[:, :left]
        left -= x.shape[1]
        yield x.to(ctx.device)


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode and no gradient inside the block; the previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


class Footprint(Metric):
    """Bytes of parameters and buffers (NeuroBench Footprint)."""

    name = "footprint"
    columns = (
        Column("footprint", False, "B", "memory", "bytes of the model's parameters and buffers"),
        Column("footprint_prepared", False, "B", "memory", "bytes of the module the method trains"),
    )

    def compute(self, ctx: CellContext) -> dict[str, float]:
        return {"footprint": module_bytes(ctx.model), "footprint_prepared": module_bytes(ctx.prepared)}


class ConnectionSparsity(Metric):
    """Share of zero weights in the connection layers (NeuroBench ConnectionSparsity)."""

    name = "connection_sparsity"
    columns = (Column("connection_sparsity", None, "", "ratio", "share of zero connection weights"),)

    def compute(self, ctx: CellContext) -> dict[str, float]:
        zeros = total = 0
        for module in ctx.model.modules():
            if isinstance(module, CONNECTION_LAYERS):
                for name, p in module.named_parameters(recurse=False):
                    if name.startswith("weight"):
                        zeros += int((p == 0).sum())
                        total += p.numel()
        if total == 0:
            raise ValueError(f"model {ctx.model.name!r} has no connection layer (Linear/Conv/RNN) weights")
        return {"connection_sparsity": zeros / total}


class _OnTestData(Metric):
    """A metric measured on the first ``samples`` test samples; defaults filled in when built
    directly (``SynapticOperations()``) rather than through the plugin host."""

    PARAMS = (_SAMPLES, _BATCH)


class ActivationSparsity(_OnTestData):
    """1 − nonzero/total of the neuron stages' outputs on the test data (NeuroBench)."""

    name = "activation_sparsity"
    columns = (Column("activation_sparsity", None, "", "ratio", "1 - nonzero/total neuron outputs on test data"),)

    def compute(self, ctx: CellContext) -> dict[str, float]:
        nonzero = total = 0
        with evaluating(ctx.model):
            for x in held_out_inputs(ctx, self.params["samples"], self.params["batch_size"]):
                for s in ctx.model.forward_seq(x).spikes:
                    nonzero += int((s != 0).sum())
                    total += s.numel()
        if total == 0:
            raise ValueError("no test data to measure activation sparsity on")
        return {"activation_sparsity": 1.0 - nonzero / total}


class SynapticOperations(_OnTestData):
    """Effective MACs/ACs and dense synaptic operations per test sample (NeuroBench SynOps)."""

    name = "synaptic_operations"
    columns = (
        Column("Effective_MACs", False, "ops", "count", "multiply-accumulates on nonzero inputs per test sample"),
        Column("Effective_ACs", False, "ops", "count", "accumulates of spike inputs per test sample"),
        Column("Dense", False, "ops", "count", "dense synaptic operations per test sample"),
    )

    def compute(self, ctx: CellContext) -> dict[str, float]:
        counter = OpCounter()
        samples = 0
        with evaluating(ctx.model):
            for x in held_out_inputs(ctx, self.params["samples"], self.params["batch_size"]):
                with counter:
                    ctx.model.forward_seq(x)
                samples += x.shape[1]
        if samples == 0:
            raise ValueError("no test data to count synaptic operations on")
        c = counter["forward"]
        return {
            "Effective_MACs": c.effective_macs / samples,
            "Effective_ACs": c.effective_acs / samples,
            "Dense": c.dense / samples,
        }


class _CountingClock(PhaseClock):
    """A silent clock that tells an :class:`OpCounter` which phase the method is in."""

    def __init__(self, counter: OpCounter, device: torch.device) -> None:
        super().__init__(device, enabled=False)
        self.counter = counter

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        with self.counter.phase(name):
            yield


@contextmanager
def restored(module: nn.Module) -> Iterator[None]:
    """Put back the gradients, buffers (BatchNorm statistics ...) and mode of ``module``."""
    grads: dict[nn.Parameter, Any] = {p: None if p.grad is None else p.grad.clone() for p in module.parameters()}
    buffers = [(b, b.clone()) for b in module.buffers()]
    was_training = module.training
    try:
        yield
    finally:
        for p, g in grads.items():
            p.grad = g
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        module.train(was_training)


class TrainingOperations(Metric):
    """Forward/backward operations of one training step of the cell's method, per sample."""

    name = "training_operations"
    columns = (
        Column("train_forward_ops", False, "ops", "count", "operations of the forward phase per sample"),
        Column("train_backward_ops", False, "ops", "count", "operations of the backward phase per sample"),
        *(
            Column(f"train_{phase}_{what}", False, "ops", "count", f"{what} operations of the {phase} phase per sample")
            for phase in ("forward", "backward")
            for what in ("dense", "effective_acs", "effective_macs")
        ),
    )

    def compute(self, ctx: CellContext) -> dict[str, float]:
        x, y = ctx.probe
        counter = OpCounter()
        with restored(ctx.prepared):
            ctx.prepared.train()
            ctx.prepared.zero_grad(set_to_none=True)
            with counter:
                ctx.method.accumulate_gradients(ctx.prepared, x, y, ctx.loss, _CountingClock(counter, ctx.device))
        batch = y.shape[0]
        out: dict[str, float] = {}
        for phase in ("forward", "backward"):
            c = counter[phase]
            out[f"train_{phase}_ops"] = c.ops / batch
            if phase in ("forward", "backward"):
                out[f"train_{phase}_dense"] = c.dense / batch
                out[f"train_{phase}_effective_acs"] = c.effective_acs / batch
                out[f"train_{phase}_effective_macs"] = c.effective_macs / batch
        return out


@snnarena.hookimpl
def register_metrics(register: Register) -> None:
    for cls in (Footprint, ConnectionSparsity, ActivationSparsity, SynapticOperations, TrainingOperations):
        register(cls)
