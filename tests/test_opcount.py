"""Op counts checked against numbers computed by hand (NeuroBench definitions, see snnarena.opcount)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_mlp
from torch import nn

from snnarena.data import DataBundle
from snnarena.factory import build_method
from snnarena.loss import SequenceLoss
from snnarena.metric import CellContext
from snnarena.opcount import OpCounter
from snnarena_plugins.metrics import (
    ActivationSparsity,
    ConnectionSparsity,
    Footprint,
    SynapticOperations,
    TrainingOperations,
)


def spikes_4x10() -> torch.Tensor:
    """A binary input ``[4, 10]`` with 13 spikes, 3 of them in column 0."""
    x = torch.zeros(4, 10, dtype=torch.float64)
    x[0, [0, 2, 5]] = 1
    x[1, [0, 1]] = 1
    x[2, [0, 3, 4, 9]] = 1
    x[3, [6, 7, 8, 9]] = 1
    assert int(x.sum()) == 13
    return x


def nonzero_linear(k: int, m: int) -> nn.Linear:
    torch.manual_seed(0)
    layer = nn.Linear(k, m).double()
    with torch.no_grad():
        layer.weight.copy_(torch.rand(m, k, dtype=torch.float64) + 0.5)  # every weight nonzero
    return layer


def test_linear_on_spikes_counts_accumulates_of_nonzero_inputs_and_weights() -> None:
    layer = nonzero_linear(10, 3)
    with torch.no_grad():
        layer.weight[:, 0] = 0.0  # the 3 spikes in column 0 meet only zero weights
    x = spikes_4x10()
    with OpCounter() as counter:
        layer(x)
    c = counter["forward"]
    assert c.dense == 4 * 10 * 3
    assert c.effective_acs == (13 - 3) * 3
    assert c.effective_macs == 0
    assert c.bias == 4 * 3
    assert c.ops == 4 * 10 * 3 + 4 * 3
    assert "backward" not in counter.counts


def test_linear_on_currents_counts_multiply_accumulates() -> None:
    layer = nonzero_linear(10, 3)
    x = spikes_4x10() * 0.7  # same sparsity pattern, not binary
    with OpCounter() as counter:
        layer(x)
    assert counter["forward"].effective_macs == 13 * 3
    assert counter["forward"].effective_acs == 0
    dense = torch.rand(4, 10, dtype=torch.float64) + 0.1
    with OpCounter() as counter:
        layer(dense)
    assert counter["forward"].effective_macs == counter["forward"].dense == 120


def test_conv2d_dense_excludes_padding_and_spikes_count_their_fan_out() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    with torch.no_grad():
        conv.weight.copy_(torch.rand_like(conv.weight) + 0.5)
    x = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    x[0, 0, 1, 1] = 1  # interior spike: reaches 3x3 outputs in each of 3 output maps
    x[0, 1, 0, 0] = 1  # corner spike: reaches 2x2 outputs in each of 3 output maps
    with OpCounter() as counter:
        conv(x)
    c = counter["forward"]
    # per spatial axis, output positions 0..3 see 2, 3, 3, 2 taps inside the input: 10 pairs
    assert c.dense == 3 * 2 * 10 * 10
    assert c.effective_acs == 3 * 9 + 3 * 4
    assert c.effective_macs == 0
    assert c.bias == 3 * 4 * 4


def test_strided_conv_without_padding() -> None:
    conv = nn.Conv2d(1, 2, 2, stride=2, bias=False).double()
    with torch.no_grad():
        conv.weight.fill_(0.25)  # binary weights would make accumulates
    x = torch.full((1, 1, 4, 4), 0.5, dtype=torch.float64)
    with OpCounter() as counter:
        conv(x)
    assert counter["forward"].dense == 2 * 4 * 4  # 4 outputs per map, 4 taps each, 2 maps
    assert counter["forward"].effective_macs == 32
    assert counter["forward"].bias == 0


def test_linear_backward_counts_weight_and_input_gradients() -> None:
    layer = nonzero_linear(10, 3)
    with torch.no_grad():
        layer.weight[0, :4] = 0.0  # nnz(W) = 30 - 4
    x = spikes_4x10().requires_grad_()
    coeff = torch.rand(4, 3, dtype=torch.float64) + 0.5  # upstream gradient: all nonzero, not binary
    with OpCounter() as counter:
        (layer(x) * coeff).sum().backward()
    back = counter["backward"]
    # grad_W = g^T x: 3·4·10 dense; the effective products are g[b, j]·x[b, i] with x[b, i] = 1 → ACs
    # grad_x = g W:   4·3·10 dense; effective g[b, j]·W[j, i] with W[j, i] != 0 → 4·26 MACs
    assert back.dense == 2 * 4 * 3 * 10
    assert back.effective_acs == 13 * 3
    assert back.effective_macs == 4 * 26
    # grad_b = Σ_b g: 12 elements read; the ``* coeff`` backward multiplies 12 elements
    assert back.elementwise == 12 + 12
    assert counter["forward"].dense == 120


def test_conv_backward_pairs() -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    with torch.no_grad():
        conv.weight.copy_(torch.rand_like(conv.weight) + 0.5)
    x = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    x[0, 0, 1, 1] = 1
    x[0, 1, 0, 0] = 1
    x.requires_grad_()
    with OpCounter() as counter:
        (conv(x) * (torch.rand(1, 3, 4, 4, dtype=torch.float64) + 0.5)).sum().backward()
    back = counter["backward"]
    # grad_input pairs each (output, tap) with the weight: as dense as the forward, all MACs;
    # grad_weight pairs the upstream gradient with the input: the forward's 39 spike products, ACs
    assert back.dense == 2 * 600
    assert back.effective_macs == 600
    assert back.effective_acs == 39


def test_elementwise_reductions_and_phases() -> None:
    a = torch.ones(3, 4)
    with OpCounter() as counter:
        b = a * 2 + 1  # two pointwise ops on 12 elements
        with counter.phase("optimizer"):
            b.sum()  # a reduction reads 12 elements
        a.view(12).clone()  # data movement: no arithmetic
    assert counter["forward"].elementwise == 24
    assert counter["optimizer"].elementwise == 12
    assert counter.calls[("forward", "aten.clone")] == 1


# -- metric plugins -------------------------------------------------------------------------
def make_ctx(host, method: str = "bptt", T: int = 5, n_in: int = 6, hidden=(7, 5), n_test: int = 9) -> CellContext:
    model = make_mlp(host, n_in=n_in, hidden=hidden, T=T, dtype=torch.float32)
    g = torch.Generator().manual_seed(3)
    x_test = (torch.rand(n_test, T, n_in, generator=g) < 0.4).float()  # binary spike rasters
    y_test = torch.randint(0, 3, (n_test,), generator=g)
    data = DataBundle(x_test, y_test, x_test, y_test, T=T, n_classes=3, encoding="none", seed=0)
    probe_x = x_test[:4].transpose(0, 1)
    return CellContext(
        model,
        model,
        build_method(host, method),
        data,
        SequenceLoss("per_step"),
        torch.device("cpu"),
        (probe_x, y_test[:4]),
    )


def test_footprint_and_connection_sparsity(host) -> None:
    ctx = make_ctx(host)
    n_params = (6 * 7 + 7) + (7 * 5 + 5) + (5 * 3 + 3)
    assert Footprint().compute(ctx) == {"footprint": 4 * n_params, "footprint_prepared": 4 * n_params}
    with torch.no_grad():
        ctx.model.stages[0].synapse.weight[:, :2] = 0.0  # 14 of 42 + 35 + 15 = 92 weights
    assert ConnectionSparsity().compute(ctx)["connection_sparsity"] == pytest.approx(14 / 92)


def test_activation_sparsity_and_synaptic_operations(host) -> None:
    ctx = make_ctx(host)
    x = ctx.data.x_test.transpose(0, 1)  # [T, N, n_in]
    with torch.no_grad():
        s1, s2 = ctx.model.forward_seq(x).spikes
    nnz = [int((t != 0).sum()) for t in (x, s1, s2)]
    fan_out = [7, 5, 3]
    n = 9
    expected_acs = sum(k * f for k, f in zip(nnz, fan_out, strict=True)) / n
    dense = 5 * (6 * 7 + 7 * 5 + 5 * 3)  # T · Σ fan_in·fan_out per sample
    ops = SynapticOperations(samples=None, batch_size=4).compute(ctx)
    assert ops == {"Effective_MACs": 0.0, "Effective_ACs": pytest.approx(expected_acs), "Dense": dense}
    sparsity = ActivationSparsity(samples=None, batch_size=4).compute(ctx)["activation_sparsity"]
    assert sparsity == pytest.approx(1 - (nnz[1] + nnz[2]) / (5 * n * (7 + 5)))
    limited = SynapticOperations(samples=2, batch_size=4).compute(ctx)
    assert limited["Dense"] == dense
    assert SynapticOperations().params == {"samples": 1024, "batch_size": 256}


def test_training_operations_of_bptt_and_state_restored(host) -> None:
    ctx = make_ctx(host)
    before = {k: v.clone() for k, v in ctx.model.state_dict().items()}
    out = TrainingOperations().compute(ctx)
    T = 5
    assert out["train_forward_dense"] == T * (6 * 7 + 7 * 5 + 5 * 3)
    # the input needs no gradient: layer 1 computes only grad_W; the others grad_W and grad_input
    assert out["train_backward_dense"] == T * (6 * 7 + 2 * (7 * 5 + 5 * 3))
    assert out["train_backward_ops"] > out["train_backward_dense"]
    assert all(p.grad is None for p in ctx.model.parameters())
    assert all(torch.equal(before[k], v) for k, v in ctx.model.state_dict().items())
