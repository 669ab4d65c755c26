"""Shared fixtures: a plugin host with the built-in plugins, and small model/data builders."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from snnarena.data import DataInfo
from snnarena.factory import build_model, neuron_factory
from snnarena.host import HostConfig, PluginHost
from snnarena.model import SpikingModel


@pytest.fixture(scope="session")
def host() -> PluginHost:
    """The built-in plugins, loaded through their entry points (environment filters ignored)."""
    loaded = PluginHost.load(HostConfig())
    return loaded


@pytest.fixture
def fresh_host() -> Iterator[PluginHost]:
    """A host of its own, for tests that register throwaway plugins."""
    yield PluginHost.load(HostConfig())


def make_mlp(
    host: PluginHost,
    *,
    n_in: int = 6,
    hidden: tuple[int, ...] = (7, 5),
    n_classes: int = 3,
    T: int = 8,
    neuron: str = "lif",
    neuron_params: dict[str, Any] | None = None,
    surrogate: str = "atan",
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    weight_scale: float = 1.0,
) -> SpikingModel:
    """A small spiking MLP (float64 by default, for exact gradient comparisons).

    ``weight_scale`` multiplies the default initial weights (> 1 makes deeper layers spike).
    """
    torch.manual_seed(seed)
    info = DataInfo((n_in,), n_classes, T, n_train=0, n_test=0)
    make = neuron_factory(host, neuron, neuron_params or {}, surrogate)
    model = build_model(host, "mlp", info, make, {"hidden": list(hidden)}).to(dtype)
    if weight_scale != 1.0:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(weight_scale)
    return model


def random_batch(
    T: int = 8, batch: int = 4, n_in: int = 6, n_classes: int = 3, seed: int = 1, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input currents ``[T, B, n_in]`` strong enough to make the layers spike, and labels ``[B]``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(T, batch, n_in, generator=g, dtype=dtype) * 2.0
    y = torch.randint(0, n_classes, (batch,), generator=g)
    return x, y


@pytest.fixture
def arena_host() -> Iterator[PluginHost]:
    """Built-ins plus the throwaway test plugin (tiny dataset, a flaky method, two metrics)."""
    from plugin_fixtures import TestPlugin

    loaded = PluginHost.load(HostConfig())
    loaded.add_plugin(TestPlugin(), "test-plugin")
    try:
        yield loaded
    finally:
        loaded.remove_plugin("test-plugin")


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tests run tiny float64 ops: one intra-op thread is faster and immune to busy cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
