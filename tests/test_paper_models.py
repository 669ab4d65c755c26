"""The papers' networks (``plugins/paper_models.py``): tiny versions pass the model conformance
checks, every method a network claims trains one step on it, the others skip it with a reason, the
scaled-weight-standardised layers compute what they document, and the full-size networks keep
their parameter counts."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import torch
import torch.nn.functional as F

import snnarena_plugins.paper_models as paper_models
from snnarena.data import DataInfo
from snnarena.factory import build_method, build_model, neuron_factory
from snnarena.host import HostConfig, PluginHost
from snnarena.loss import LossForm, SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.model import SpikingModel
from snnarena.suite import SuiteError, parse_suite
from snnarena.testing import make_batch, model_checks, run_model_conformance
from snnarena_plugins.paper_models import InputScaledLinear, ScaledWSConv2d

TINY = {"width": 1 / 16}
#: model name → (input shape, tiny parameters)
NETWORKS: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {
    "vgg11_ws": ((3, 8, 8), TINY),
    "vgg_snn": ((2, 16, 16), TINY),
    "vgg11_bn": ((2, 16, 16), TINY),
    "preact_resnet18": ((3, 8, 8), {**TINY, "blocks": [1, 1]}),
}


@pytest.fixture(scope="module")
def paper_host() -> Iterator[PluginHost]:
    """The built-in plugins, with the paper networks (added here until their entry point exists)."""
    host = PluginHost.load(HostConfig())
    if "vgg11_ws" not in host.names("model"):
        host.add_plugin(paper_models, "paper_models")
    yield host


def tiny(host: PluginHost, name: str, dtype: torch.dtype = torch.float32, **params: Any) -> SpikingModel:
    shape, defaults = NETWORKS[name]
    torch.manual_seed(0)
    info = DataInfo(shape, 4, 4, n_train=0, n_test=0)
    make = neuron_factory(host, "lif", {"tau": 2.0}, "atan")
    return build_model(host, name, info, make, {**defaults, **params}).to(dtype)


@pytest.mark.parametrize("name", ["vgg11_ws", "vgg_snn", "vgg11_bn"])
def test_chain_networks_pass_the_conformance_checks(paper_host: PluginHost, name: str) -> None:
    run_model_conformance(lambda: tiny(paper_host, name, torch.float64))


def test_vgg_with_ws_instead_of_batch_norm_passes_the_conformance_checks(paper_host: PluginHost) -> None:
    run_model_conformance(lambda: tiny(paper_host, "vgg_snn", torch.float64, norm="none", weight_standardization=True))


@pytest.mark.parametrize("params", [{}, {"norm": "none", "weight_standardization": True}])
def test_residual_network_passes_the_common_checks(paper_host: PluginHost, params: dict[str, Any]) -> None:
    """step = forward_seq (BatchNorm per step in both), resuming from the state, detaching it.
    (``run_model_conformance`` runs these once snnarena.testing knows the residual family.)"""
    model = tiny(paper_host, "preact_resnet18", torch.float64, **params)
    x, _ = make_batch(model, T=6, batch=3)
    for check in model_checks("feedforward"):
        check(model, x)


def test_residual_network_uses_its_skip_connections(paper_host: PluginHost) -> None:
    model = tiny(paper_host, "preact_resnet18", torch.float64)
    x, _ = make_batch(model, T=3, batch=2)
    with torch.no_grad():
        before = model.forward_seq(x).logits
        for merge in model.merges:
            for p in merge.conv2.parameters():
                p.zero_()
        after = model.forward_seq(x).logits
    assert not torch.equal(before, after)
    assert len(model.stages) == 2 * 2 + 1 and model.family == "residual"


def classification_loss(form: str) -> SequenceLoss:
    return SequenceLoss(cast(LossForm, form), "classification")


def train_one_step(host: PluginHost, model: SpikingModel, method_name: str, params: dict[str, Any], form: str) -> None:
    """One real training step: a finite loss, a gradient for every parameter, parameters moved."""
    method = build_method(host, method_name, params)
    prepared = method.prepare(model)
    x, y = make_batch(model, T=4, batch=3)
    before = {n: p.detach().clone() for n, p in prepared.named_parameters()}
    optimizer = torch.optim.SGD(prepared.parameters(), lr=0.1)
    grads: dict[str, bool] = {}
    hooks = [p.register_hook(lambda g, n=n: grads.__setitem__(n, True)) for n, p in prepared.named_parameters()]
    value = method.train_step(prepared, x, y, classification_loss(form), optimizer, PhaseClock())
    for hook in hooks:
        hook.remove()
    assert math.isfinite(value)
    missing = sorted(set(before) - set(grads))
    assert not missing, f"{method_name}: no gradient reached {missing}"
    assert any(not torch.equal(before[n], p) for n, p in prepared.named_parameters())


# (model, model params, method, method params, loss form): each pair a network claims
TRAINS = [
    *[("vgg11_ws", {}, m, {}, "per_step") for m in ("bptt", "tbptt", "checkpointed_bptt", "sltt")],
    ("vgg11_ws", {}, "ottt", {"input_trace": False, "readout_trace": True, "bias_trace": False}, "per_step"),
    ("vgg11_ws", {}, "ottt", {"mode": "O"}, "per_step"),
    ("vgg11_ws", {}, "ratebp", {}, "rate"),
    ("vgg11_ws", {}, "tbptt_local", {"K": 2, "block_size": 2}, "per_step"),
    *[("vgg_snn", {}, m, {}, "per_step") for m in ("bptt", "tbptt", "sltt")],
    ("vgg_snn", {}, "tbptt_local", {"K": 2, "block_size": 3, "update": "segment"}, "rate"),
    ("vgg_snn", {"norm": "none", "weight_standardization": True}, "ottt", {}, "per_step"),
    ("vgg_snn", {"norm": "none", "weight_standardization": True}, "ratebp", {}, "rate"),
    ("vgg_snn", {"norm": "none"}, "checkpointed_bptt", {}, "per_step"),
    *[("vgg11_bn", {}, m, {}, "per_step") for m in ("bptt", "sltt")],
    ("vgg11_bn", {"norm": "none", "weight_standardization": True}, "ottt", {}, "per_step"),
    ("vgg11_bn", {"norm": "none"}, "ratebp", {}, "rate"),
]


@pytest.mark.parametrize(("name", "model_params", "method", "params", "form"), TRAINS)
def test_claimed_methods_train_one_step(
    paper_host: PluginHost, name: str, model_params: dict[str, Any], method: str, params: dict[str, Any], form: str
) -> None:
    model = tiny(paper_host, name, **model_params)
    info = model.info
    reason = build_method(paper_host, method, params).skip(model, info, classification_loss(form))
    assert reason is None, reason
    train_one_step(paper_host, model, method, params, form)


@pytest.mark.parametrize("method", ["bptt", "tbptt", "sltt"])
def test_residual_network_trains_with_step_driven_methods(paper_host: PluginHost, method: str) -> None:
    """bptt, tbptt and sltt drive model.step/forward_seq and the state only, so they train the
    residual network (their ``families`` must list "residual" for suites to run them on it)."""
    train_one_step(paper_host, tiny(paper_host, "preact_resnet18"), method, {}, "per_step")


@pytest.mark.parametrize(
    ("name", "model_params", "method", "form", "fragment"),
    [
        ("vgg_snn", {}, "ottt", "per_step", "BatchNorm"),
        ("vgg_snn", {}, "ratebp", "rate", "BatchNorm"),
        ("vgg11_bn", {}, "checkpointed_bptt", "per_step", "BatchNorm"),
        ("preact_resnet18", {"norm": "none", "weight_standardization": True}, "ottt", "per_step", "residual"),
        ("preact_resnet18", {}, "ratebp", "rate", "residual"),
        ("preact_resnet18", {}, "tbptt_local", "per_step", "residual"),
    ],
)
def test_methods_that_cannot_train_a_network_skip_it(
    paper_host: PluginHost, name: str, model_params: dict[str, Any], method: str, form: str, fragment: str
) -> None:
    model = tiny(paper_host, name, **model_params)
    reason = build_method(paper_host, method, {}).skip(model, model.info, classification_loss(form))
    assert isinstance(reason, str) and fragment in reason, reason


def test_scaled_ws_conv_standardises_and_folds_its_input_scale() -> None:
    torch.manual_seed(0)
    conv = ScaledWSConv2d(3, 5, 3, padding=1, input_scale=2.74).double()
    with torch.no_grad():
        conv.gain.uniform_(0.5, 2.0)
    w = conv.standardized_weight()
    fan_in = 3 * 3 * 3
    flat = (w / conv.gain).flatten(1)
    assert torch.allclose(flat.mean(1), torch.zeros(5, dtype=torch.float64), atol=1e-12)
    raw_var = conv.weight.flatten(1).var(1)  # unbiased, as the official code
    assert torch.allclose(flat.var(1), raw_var / (raw_var * fan_in + conv.eps))
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    folded = conv(x)
    official = F.conv2d(2.74 * x, w, conv.bias, padding=1)  # Scale(2.74), then the conv
    assert torch.allclose(folded, official)
    g_folded = torch.autograd.grad(folded.square().sum(), [x, conv.weight, conv.gain])
    g_official = torch.autograd.grad(official.square().sum(), [x, conv.weight, conv.gain])
    assert all(torch.allclose(a, b) for a, b in zip(g_folded, g_official, strict=True))


def test_input_scaled_linear_is_the_linear_of_the_scaled_input() -> None:
    torch.manual_seed(0)
    linear = InputScaledLinear(4, 3, 2.74).double()
    x = torch.rand(5, 4, dtype=torch.float64)
    assert torch.allclose(linear(x), F.linear(2.74 * x, linear.weight, linear.bias))


def test_vgg11_ws_folds_the_scale_into_every_layer_but_the_first(paper_host: PluginHost) -> None:
    model = tiny(paper_host, "vgg11_ws")
    scales = [m.input_scale for m in model.modules() if isinstance(m, (ScaledWSConv2d, InputScaledLinear))]
    assert scales == [1.0] + [2.74] * 8
    assert not model.has_batch_norm()


@pytest.mark.parametrize(
    ("name", "shape", "n_parameters"),
    [
        ("vgg11_ws", (3, 32, 32), 9_228_362),
        ("vgg_snn", (2, 48, 48), 9_271_498),
        ("vgg11_bn", (2, 48, 48), 9_476_298),
        ("preact_resnet18", (3, 32, 32), 11_176_906),
    ],
)
def test_full_size_networks(paper_host: PluginHost, name: str, shape: tuple[int, ...], n_parameters: int) -> None:
    """Paper-size networks for 10 classes (vgg_snn: 512·3·3 = 4608 readout inputs at 48×48)."""
    info = DataInfo(shape, 10, 4, n_train=0, n_test=0)
    model = build_model(paper_host, name, info, neuron_factory(paper_host, "lif", {}, "atan"), {})
    assert sum(p.numel() for p in model.parameters()) == n_parameters
    if name == "vgg_snn":
        assert model.readout[-1].in_features == 4608


def test_non_image_data_is_skipped(paper_host: PluginHost) -> None:
    for name in NETWORKS:
        cls = paper_host.get("model", name).obj
        reason = cls.skip(DataInfo((20,), 3, 4, n_train=0, n_test=0))
        assert isinstance(reason, str) and "[C, H, W]" in reason


@pytest.mark.parametrize(
    "suite", ["paper-cifar10", "paper-cifar100", "paper-cifar10dvs", "paper-dvsgesture", "paper-shd", "paper-imagenet"]
)
def test_paper_suites_resolve_but_for_their_data(paper_host: PluginHost, suite: str) -> None:
    """Every method, preset, model and setting of a paper suite validates; the only problems left are
    the datasets' (a dataset plugin not installed yet, or its files missing on this machine)."""
    path = Path(__file__).parents[1] / "suites" / f"{suite}.toml"
    text = path.read_text()
    tomllib.loads(text)
    try:
        spec = parse_suite(text, paper_host, str(path))
    except SuiteError as refused:
        assert all(problem.startswith("datasets[0]") for problem in refused.problems), refused.problems
    else:
        assert spec.cells
