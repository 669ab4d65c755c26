"""Throwaway plugins used by the host, suite and runner tests (registered in fixtures only)."""

from __future__ import annotations

import torch

import snnarena
from snnarena.columns import Column
from snnarena.data import DataBundle, Dataset
from snnarena.method import GradientMethod
from snnarena.metric import Metric
from snnarena.params import Param
from snnarena.reference import bptt_accumulate


class TinyBlobs(Dataset):
    """Three Gaussian blobs in 4-d, direct coding: trains in well under a second."""

    name = "tiny_blobs"
    PARAMS = (Param("n", "int", 96, "samples", low=6),)

    def build(self, T: int, seed: int) -> DataBundle:
        g = torch.Generator().manual_seed(seed)
        n = self.params["n"]
        y = torch.arange(n) % 3
        centers = torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0]])
        x = centers[y] + 0.3 * torch.randn(n, 4, generator=g)
        split = n * 3 // 4
        return DataBundle(x[:split], y[:split], x[split:], y[split:], T=T, n_classes=3, encoding="direct", seed=seed)


class Flaky(GradientMethod):
    """BPTT that misbehaves on request: raise, return NaN, or skip."""

    name = "flaky"
    PARAMS = (Param("behaviour", "str", "ok", "what to do", choices=("ok", "raise", "nan", "skip")),)

    def skip(self, model, info, loss):
        return "flaky was told to skip" if self.params["behaviour"] == "skip" else super().skip(model, info, loss)

    def accumulate_gradients(self, model, x, y, loss, clock):
        if self.params["behaviour"] == "raise":
            raise RuntimeError("flaky exploded on purpose")
        value = bptt_accumulate(model, x, y, loss, clock)
        return float("nan") if self.params["behaviour"] == "nan" else value


class WeightNorm(Metric):
    """Sum of squared weights (a metric a plugin adds)."""

    name = "weight_norm"
    columns = (Column("weight_norm", False, "", "score", "sum of squared weights"),)

    def compute(self, ctx):
        return {"weight_norm": float(sum((p.detach() ** 2).sum() for p in ctx.model.parameters()))}


class Broken(Metric):
    """A metric that always fails."""

    name = "broken_metric"
    columns = (Column("broken_value", None),)

    def compute(self, ctx):
        raise ZeroDivisionError("broken on purpose")


class TestPlugin:
    """A plugin object, as an external package would provide through its entry point."""

    @snnarena.hookimpl
    def register_datasets(self, register):
        register(TinyBlobs)

    @snnarena.hookimpl
    def register_gradient_methods(self, register):
        register(Flaky)

    @snnarena.hookimpl
    def register_metrics(self, register):
        register(WeightNorm)
        register(Broken)


TINY_SUITE = """
name = "tiny"
description = "throwaway suite for tests"

[train]
epochs = 2
batch_size = 16
optimizer = {{ name = "adam", lr = 0.03 }}

[grid]
seeds = [0, 1]
T = [4]

[[methods]]
name = "bptt"

[[methods]]
name = "flaky"
params = {{ behaviour = {behaviours} }}

[[models]]
name = "mlp"
params = {{ hidden = [16] }}
neuron = {{ name = "lif", params = {{ tau = 2.0 }} }}

[[datasets]]
name = "tiny_blobs"
"""
