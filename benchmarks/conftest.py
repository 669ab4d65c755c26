"""Fixtures and machine information for the pytest-benchmark microbenchmarks.

Run them with ``pytest benchmarks/bench_neuron_step.py --benchmark-enable`` (the project's
``addopts`` disable benchmarks, and ``testpaths`` keeps them out of the test run). Add
``--benchmark-autosave`` or ``--benchmark-json=out.json`` to keep the results: the saved
``machine_info`` gains the torch version and threads, CUDA version, GPU and CPU model.
"""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import torch

import snnarena
from snnarena.host import HostConfig, PluginHost


@lru_cache(maxsize=1)
def load_host() -> PluginHost:
    """The built-in plugins (environment filters ignored), loaded once per session."""
    return PluginHost.load(HostConfig())


@pytest.fixture(scope="session")
def host() -> PluginHost:
    return load_host()


def devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else ``platform.processor()``."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    machine_info["cpu_model"] = cpu_model()
    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["cuda"] = torch.version.cuda
    machine_info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    machine_info["snnarena"] = snnarena.__version__
