"""``tbptt_local``: truncated BPTT with local training blocks (research notes §2, V5, V11).

Defining properties, in float64: with ``K = T`` and one block it is BPTT; with one block and
``K < T`` it is TBPTT; with several blocks each block's gradient is that of its own local loss
(auxiliary head on its detached input), nothing crosses a block boundary; the saved-bytes peak is
flat in ``T`` and grows with ``K`` and ``Lb``; the heads are the only extra parameters.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import make_mlp, random_batch

from snnarena.data import DataInfo
from snnarena.factory import build_method, build_model, neuron_factory
from snnarena.host import PluginHost
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock, SavedTensorMeter
from snnarena.multistep import set_fused
from snnarena.neuron import detach_state
from snnarena.params import ParamError, params_of
from snnarena.reference import collect_gradients
from snnarena.testing import run_conformance
from snnarena_plugins.tbptt_local import LocalBlocksModel, TBPTTLocal, block_bounds

T = 12


def _clock() -> PhaseClock:
    return PhaseClock(enabled=False)


def _grads(
    host: PluginHost,
    name: str,
    params: dict[str, Any],
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: SequenceLoss,
) -> tuple[float, dict[str, torch.Tensor]]:
    method = build_method(host, name, params)
    prepared = method.prepare(model)
    model.zero_grad(set_to_none=True)
    value = method.accumulate_gradients(prepared, x, y, loss, _clock())
    return value, collect_gradients(model)


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in b)


@pytest.mark.parametrize("form", ["per_step", "rate"])
@pytest.mark.parametrize("block_size", [3, 8])
def test_full_window_single_block_equals_bptt(host: PluginHost, form: str, block_size: int) -> None:
    model = make_mlp(host, hidden=(7, 6, 5), T=T, neuron_params={"v_threshold": 0.5})
    x, y = random_batch(T=T)
    loss = SequenceLoss(form)
    ref_value, ref = _grads(host, "bptt", {}, model, x, y, loss)
    for K in (T, T + 5):
        value, grads = _grads(host, "tbptt_local", {"K": K, "block_size": block_size}, model, x, y, loss)
        assert _max_diff(grads, ref) <= 1e-12
        assert value == pytest.approx(ref_value, rel=1e-12)


@pytest.mark.parametrize("form", ["per_step", "rate"])
def test_single_block_equals_tbptt(host: PluginHost, form: str) -> None:
    model = make_mlp(host, T=T, neuron_params={"v_threshold": 0.5})
    x, y = random_batch(T=T)
    loss = SequenceLoss(form)
    for K in (1, 4, 5):
        ref_value, ref = _grads(host, "tbptt", {"K": K}, model, x, y, loss)
        value, grads = _grads(host, "tbptt_local", {"K": K, "block_size": 2}, model, x, y, loss)
        assert _max_diff(grads, ref) <= 1e-12
        assert value == pytest.approx(ref_value, rel=1e-12)


@pytest.mark.parametrize("form", ["per_step", "rate"])
def test_blocks_learn_from_their_own_loss_only(host: PluginHost, form: str) -> None:
    """Blocks {0, 1} and {2}: block 0's gradient is that of its head's loss, block 1's that of the
    model loss on block 0's *detached* spikes (reference: plain autograd on each sub-network)."""
    model = make_mlp(host, hidden=(7, 6, 5), T=T, neuron_params={"v_threshold": 0.5})
    x, y = random_batch(T=T)
    loss = SequenceLoss(form)
    method = TBPTTLocal(K=T, block_size=2)
    prepared = method.prepare(model)
    assert isinstance(prepared, LocalBlocksModel) and len(prepared.heads) == 1
    prepared.zero_grad(set_to_none=True)
    value = method.accumulate_gradients(prepared, x, y, loss, _clock())
    got = {n: p.grad.detach().clone() for n, p in prepared.named_parameters()}

    prepared.zero_grad(set_to_none=True)
    h = x
    for stage in model.stages[:2]:
        h, _ = stage.forward_seq(h)
    loss.full(prepared.heads[0](h), y).backward()
    top, _ = model.stages[2].forward_seq(h.detach())
    logits = model.readout(top.flatten(0, 1)).unflatten(0, top.shape[:2])
    top_loss = loss.full(logits, y)
    top_loss.backward()
    for n, p in prepared.named_parameters():
        assert p.grad is not None
        assert float((got[n] - p.grad).abs().max()) <= 1e-12, n
    assert value == pytest.approx(float(top_loss.detach()), rel=1e-12)


def _peak(host: PluginHost, K: int, block_size: int, steps: int, width: int = 8, batch: int = 4) -> int:
    model = make_mlp(host, n_in=width, hidden=(width,) * 4, T=steps)
    set_fused(model, False)  # plain autograd: float spikes and membranes, the bytes the formula below counts
    x, y = random_batch(T=steps, batch=batch, n_in=width)
    method = build_method(host, "tbptt_local", {"K": K, "block_size": block_size})
    prepared = method.prepare(model)
    with SavedTensorMeter(exclude=list(prepared.parameters()) + [x]) as meter:
        method.accumulate_gradients(prepared, x, y, SequenceLoss(), _clock())
    return meter.peak_bytes


def test_saved_bytes_flat_in_T_and_proportional_to_K_and_block_size(host: PluginHost) -> None:
    width, batch = 8, 4
    peaks = {
        (K, Lb): [_peak(host, K, Lb, steps, width, batch) for steps in (8, 16, 32, 64)] for K in (4, 8) for Lb in (1, 2)
    }
    for key, over_T in peaks.items():
        assert len(set(over_T)) == 1, (key, over_T)  # flat in T (T >= K)
    peak = {key: over_T[0] for key, over_T in peaks.items()}
    for Lb in (1, 2):
        assert 1.9 <= peak[(8, Lb)] / peak[(4, Lb)] <= 2.1  # ∝ K
    for K in (4, 8):
        # one more stage per block: per step its input spikes and its membrane (for the surrogate)
        per_stage = K * batch * 2 * width * 8
        assert 0.9 * per_stage <= peak[(K, 2)] - peak[(K, 1)] <= 1.1 * per_stage
    bptt_model = make_mlp(host, n_in=width, hidden=(width,) * 4, T=64)
    x, y = random_batch(T=64, batch=batch, n_in=width)
    with SavedTensorMeter(exclude=list(bptt_model.parameters()) + [x]) as meter:
        build_method(host, "bptt").accumulate_gradients(bptt_model, x, y, SequenceLoss(), _clock())
    assert peak[(8, 2)] < meter.peak_bytes / 4


def test_extra_parameters_are_the_heads(host: PluginHost) -> None:
    model = make_mlp(host, n_in=8, hidden=(8, 8, 8, 8), n_classes=3)
    for block_size, heads in ((1, 3), (2, 1), (3, 1), (4, 0), (9, 0)):
        method = TBPTTLocal(block_size=block_size)
        prepared = method.prepare(model)
        assert method.extra_parameters(prepared, model) == heads * (8 * 3 + 3)
        shared = {id(p) for p in prepared.parameters()}
        assert all(id(p) in shared for p in model.parameters())
    assert block_bounds(4, 3) == [(0, 3), (3, 4)]


def test_wrapper_behaves_like_the_model(host: PluginHost) -> None:
    model = make_mlp(host)
    x, _ = random_batch()
    prepared = TBPTTLocal(block_size=1).prepare(model)
    assert torch.equal(prepared(x), model(x))
    assert prepared.family == model.family and prepared.info == model.info and prepared.stages is model.stages
    with pytest.raises(ValueError, match="prepare"):
        TBPTTLocal(block_size=1).accumulate_gradients(
            model, x, torch.zeros(4, dtype=torch.long), SequenceLoss(), _clock()
        )


def test_convnet_heads_pool_feature_maps(host: PluginHost) -> None:
    torch.manual_seed(0)
    info = DataInfo((1, 4, 4), 3, 6, n_train=0, n_test=0)
    make = neuron_factory(host, "lif", {"v_threshold": 0.3}, "atan")
    model = build_model(host, "convnet", info, make, {"channels": [2, 3], "fc": 5}).double()
    method = TBPTTLocal(K=3, block_size=1)
    prepared = method.prepare(model)
    assert method.extra_parameters(prepared, model) == (2 * 3 + 3) + (3 * 3 + 3)
    x = torch.rand(6, 2, 1, 4, 4, dtype=torch.float64) * 2
    value = method.accumulate_gradients(prepared, x, torch.tensor([0, 2]), SequenceLoss(), _clock())
    assert value > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in prepared.parameters())


def test_training_reduces_the_loss(host: PluginHost) -> None:
    model = make_mlp(host, n_in=6, hidden=(16, 16, 16), T=T, neuron_params={"v_threshold": 0.5})
    g = torch.Generator().manual_seed(5)
    centers = torch.rand(3, 6, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 3, (24,), generator=g)
    x = (centers[y] + 0.1 * torch.randn(24, 6, generator=g, dtype=torch.float64)).expand(T, 24, 6).contiguous()
    loss = SequenceLoss()
    method = TBPTTLocal(K=4, block_size=1)
    prepared = method.prepare(model)
    optimizer = torch.optim.Adam(prepared.parameters(), lr=0.02)

    def model_loss() -> float:
        with torch.no_grad():
            return float(loss.full(model.forward_seq(x).logits, y))

    before = model_loss()
    for _ in range(15):
        method.train_step(prepared, x, y, loss, optimizer, _clock())
    assert model_loss() < 0.5 * before


def test_parameter_validation() -> None:
    with pytest.raises(ParamError, match=r"K: expected an integer >= 1"):
        params_of(TBPTTLocal).resolve({"K": 0})
    with pytest.raises(ValueError, match=r"block_size: expected an integer >= 1"):
        TBPTTLocal(block_size=0)
    assert TBPTTLocal().params == {"K": 8, "block_size": 1, "update": "batch"}
    with pytest.raises(ParamError, match=r"update"):
        TBPTTLocal(update="window")


def _train_once(
    host: PluginHost, params: dict[str, Any], T_: int = T, lr: float = 0.1
) -> tuple[int, dict[str, torch.Tensor]]:
    """One ``train_step`` with SGD on a fresh model; the number of optimizer steps and the new weights."""
    model = make_mlp(host, hidden=(7, 6, 5), T=T_, neuron_params={"v_threshold": 0.5})
    x, y = random_batch(T=T_)
    method = TBPTTLocal(**params)
    prepared = method.prepare(model)
    optimizer = torch.optim.SGD(prepared.parameters(), lr=lr)
    steps = [0]
    optimizer.register_step_post_hook(lambda *_: steps.__setitem__(0, steps[0] + 1))
    method.train_step(prepared, x, y, SequenceLoss(), optimizer, _clock())
    return steps[0], {n: p.detach().clone() for n, p in prepared.named_parameters()}


@pytest.mark.parametrize("block_size", [1, 3])
def test_per_segment_update_with_one_segment_equals_per_batch(host: PluginHost, block_size: int) -> None:
    for K in (T, T + 3):
        n_batch, batch = _train_once(host, {"K": K, "block_size": block_size, "update": "batch"})
        n_seg, seg = _train_once(host, {"K": K, "block_size": block_size, "update": "segment"})
        assert n_batch == n_seg == 1
        assert _max_diff(seg, batch) <= 1e-14


@pytest.mark.parametrize("K", [3, 5])
def test_per_segment_update_steps_once_per_segment(host: PluginHost, K: int) -> None:
    """``update="segment"`` steps the optimizer after every segment (ceil(T/K) times) and the later
    segments run with the updated weights, so the result differs from one summed step."""
    n_batch, batch = _train_once(host, {"K": K, "block_size": 2, "update": "batch"})
    n_seg, seg = _train_once(host, {"K": K, "block_size": 2, "update": "segment"})
    assert n_batch == 1 and n_seg == -(-T // K)
    assert _max_diff(seg, batch) > 1e-6


def test_per_segment_update_is_sequential_sgd_on_segments(host: PluginHost) -> None:
    """Reference: with SGD, segment s's step uses the gradient of segment s's loss at the weights
    after segments 0..s−1, from the carried (detached) state — reproduced by hand with BPTT pieces."""
    K, lr = 4, 0.1
    _, got = _train_once(host, {"K": K, "block_size": 9, "update": "segment"}, lr=lr)
    model = make_mlp(host, hidden=(7, 6, 5), T=T, neuron_params={"v_threshold": 0.5})
    x, y = random_batch(T=T)
    loss = SequenceLoss()
    state = model.init_state()
    for start in range(0, T, K):
        model.zero_grad(set_to_none=True)
        out = model.forward_seq(x[start : start + K], state)
        loss.segment(out.logits, y, T, start).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad
        state = detach_state(out.state)
    want = {"model." + n: p.detach() for n, p in model.named_parameters()}
    assert _max_diff(got, want) <= 1e-12


@pytest.mark.parametrize("update", ["batch", "segment"])
def test_conforms_with_either_update(host: PluginHost, update: str) -> None:
    run_conformance(
        lambda: TBPTTLocal(K=3, block_size=1, update=update),
        lambda: make_mlp(host, neuron_params={"v_threshold": 0.25}),
        Ts=(8, 16),
    )
