"""Neuron equations, and the single-step path agreeing with the multi-step path."""

from __future__ import annotations

import pytest
import torch
from conftest import make_mlp, random_batch

from snnarena.data import DataInfo
from snnarena.factory import build_model, neuron_factory


def test_lif_follows_its_equations(host):
    make = neuron_factory(host, "lif", {"tau": 4.0, "v_threshold": 1.0, "reset": "soft"})
    neuron = make()
    x = torch.tensor([[0.6], [0.6], [0.6], [0.0]])
    spikes, _ = neuron.forward_seq(x.unsqueeze(1))
    # H = 0.75 V + X : 0.6 → 1.05 (spike, V=0.05) → 0.6375 → 1.078 (spike)
    assert spikes.flatten().tolist() == [0.0, 1.0, 0.0, 0.0]
    v = 0.0
    expected = []
    for xt in [0.6, 0.6, 0.6, 0.0]:
        h = 0.75 * v + xt
        s = float(h >= 1.0)
        v = h - s
        expected.append(s)
    assert spikes.flatten().tolist() == expected


def test_hard_reset_and_decay_input(host):
    neuron = neuron_factory(host, "lif", {"tau": 2.0, "decay_input": True, "reset": "hard", "v_reset": -0.5})()
    s, state = neuron.step(torch.tensor([3.0]), neuron.init_state(torch.zeros(1)))
    assert s.item() == 1.0 and state.v.item() == -0.5  # H = 0 + 3/2 >= 1 → reset to v_reset
    s, state = neuron.step(torch.tensor([1.0]), state)
    assert s.item() == 0.0 and state.v.item() == pytest.approx(-0.25 + 0.5)


def test_if_neuron_integrates_without_leak(host):
    neuron = neuron_factory(host, "if")()
    spikes, _ = neuron.forward_seq(torch.full((4, 1), 0.3))
    assert spikes.flatten().tolist() == [0.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize("neuron", ["lif", "if"])
def test_mlp_step_by_step_equals_multi_step(host, neuron):
    model = make_mlp(host, neuron=neuron, weight_scale=3.0)
    x, _ = random_batch()
    seq = model.forward_seq(x)
    state = model.init_state()
    logits = []
    for t in range(x.shape[0]):
        out = model.step(x[t], state)
        state = out.state
        logits.append(out.logits)
    torch.testing.assert_close(torch.stack(logits), seq.logits)
    assert seq.logits.shape == (8, 4, 3)
    assert all(s.sum() > 0 for s in seq.spikes), "the test input should make every layer spike"


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_convnet_shapes_and_modes(host, norm):
    torch.manual_seed(0)
    info = DataInfo((1, 8, 8), 10, 4, 0, 0)
    model = build_model(
        host, "convnet", info, neuron_factory(host, "lif"), {"channels": [4, 8], "fc": 16, "norm": norm}
    )
    model.eval()
    x = torch.rand(4, 3, 1, 8, 8) * 3
    seq = model.forward_seq(x)
    assert seq.logits.shape == (4, 3, 10)
    state, logits = model.init_state(), []
    for t in range(4):
        out = model.step(x[t], state)
        state, _ = out.state, logits.append(out.logits)
    torch.testing.assert_close(torch.stack(logits), seq.logits)
    assert model.has_batch_norm() == (norm == "batch")


def test_convnet_skips_flat_inputs(host):
    cls = host.get("model", "convnet").obj
    assert "image inputs" in cls.skip(DataInfo((64,), 10, 4, 0, 0))
    assert cls.skip(DataInfo((1, 8, 8), 10, 4, 0, 0)) is None
