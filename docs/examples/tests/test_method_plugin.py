# docs/examples/tests/test_method_plugin.py
"""Conformance of the example methods ``tail_bptt`` and ``readout_online`` (run with pytest from
your plugin's tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from snnarena.data import DataInfo
from snnarena.factory import build_model, neuron_factory
from snnarena.host import HostConfig, PluginHost
from snnarena.loss import SequenceLoss
from snnarena.model import SpikingModel
from snnarena.testing import run_conformance

EXAMPLES = Path(__file__).resolve().parents[1]  # the folder given to --plugins-dir


@pytest.fixture(scope="module")
def host() -> PluginHost:
    # an installed package would just `from my_package import TailBPTT, ReadoutOnline`
    return PluginHost.load(HostConfig(plugins_dirs=(str(EXAMPLES),)))


def small_model(host: PluginHost) -> SpikingModel:
    # float64, and a low threshold so that every layer spikes on the checks' random inputs
    info = DataInfo((6,), 3, T=8, n_train=0, n_test=0)
    make = neuron_factory(host, "lif", {"v_threshold": 0.25}, "atan")
    return build_model(host, "mlp", info, make, {"hidden": [7, 5]}).double()


def test_tail_bptt_conforms(host: PluginHost) -> None:
    TailBPTT = host.get("method", "tail_bptt").obj
    run_conformance(lambda: TailBPTT(K=4), lambda: small_model(host))


def test_tail_bptt_declines_the_rate_loss(host: PluginHost) -> None:
    method = host.get("method", "tail_bptt").obj()
    model = build_model(host, "mlp", DataInfo((6,), 3, T=8, n_train=0, n_test=0), neuron_factory(host, "lif"))
    assert "per_step" in method.skip(model, model.info, SequenceLoss("rate"))


@pytest.mark.parametrize("update", ["batch", "step"])
def test_readout_online_conforms(host: PluginHost, update: str) -> None:
    ReadoutOnline = host.get("method", "readout_online").obj
    run_conformance(lambda: ReadoutOnline(update=update), lambda: small_model(host))
