"""Microbenchmarks of the LIF neuron: one ``step`` and a ``forward_seq`` over ``T`` steps.

Each is timed for every registered surrogate, forward only (no autograd) and forward + backward
(where the surrogate's derivative runs), on the CPU and, when present, on CUDA (synchronised
inside the timed function, so the time is the device's). Shapes: ``B = 64`` samples of
``N = 1024`` neurons, ``T = 32`` steps for ``forward_seq``.

    pytest benchmarks/bench_neuron_step.py --benchmark-enable [--benchmark-json=neuron.json]
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from conftest import devices, load_host

from snnarena.factory import neuron_factory
from snnarena.host import PluginHost
from snnarena.neuron import Neuron

B, N, T = 64, 1024, 32
SURROGATES = load_host().names("surrogate")


def make_neuron(host: PluginHost, surrogate: str, device: str) -> Neuron:
    return neuron_factory(host, "lif", {"tau": 2.0}, surrogate)().to(device)


def synchronised(fn: Callable[[], object], device: str) -> Callable[[], None]:
    def run() -> None:
        fn()
        if device == "cuda":
            torch.cuda.synchronize()

    return run


def record(benchmark, surrogate: str, device: str, mode: str, passes: str, shape: tuple[int, ...]) -> None:
    benchmark.group = f"lif {mode} {passes} {device}"
    benchmark.extra_info.update(
        neuron="lif",
        surrogate=surrogate,
        device=device,
        mode=mode,
        passes=passes,
        shape=list(shape),
        torch=torch.__version__,
        gpu=torch.cuda.get_device_name(0) if device == "cuda" else None,
    )


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("passes", ["forward", "forward_backward"])
@pytest.mark.parametrize("surrogate", SURROGATES)
def test_step(benchmark, host: PluginHost, surrogate: str, passes: str, device: str) -> None:
    neuron = make_neuron(host, surrogate, device)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(B, N, device=device, generator=g) * 2
    state = neuron.init_state(x)
    record(benchmark, surrogate, device, "step", passes, (B, N))
    if passes == "forward":

        def target() -> object:
            with torch.no_grad():
                return neuron.step(x, state)

    else:
        x.requires_grad_(True)

        def target() -> object:
            spike, new = neuron.step(x, state)
            (spike.sum() + new.v.sum()).backward()
            return spike

    benchmark(synchronised(target, device))


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("passes", ["forward", "forward_backward"])
@pytest.mark.parametrize("surrogate", SURROGATES)
def test_forward_seq(benchmark, host: PluginHost, surrogate: str, passes: str, device: str) -> None:
    neuron = make_neuron(host, surrogate, device)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(T, B, N, device=device, generator=g) * 2
    record(benchmark, surrogate, device, "forward_seq", passes, (T, B, N))
    if passes == "forward":

        def target() -> object:
            with torch.no_grad():
                return neuron.forward_seq(x)

    else:
        x.requires_grad_(True)

        def target() -> object:
            spikes, _ = neuron.forward_seq(x)
            spikes.sum().backward()
            return spikes

    benchmark(synchronised(target, device))
