"""Method presets are data (issue 13): every preset resolves against the method's parameters and
the registered neuron/surrogate plugins, uses a loss form the method trains, names valid optimizer
keys, cites a source for every value it sets, and the values the research notes pin
(``shared/research/methods.md`` §3, §4, §5, §12) are the ones shipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest

from snnarena.host import HostConfig, PluginHost
from snnarena.method import GradientMethod, Preset
from snnarena.params import params_of
from snnarena.suite import OPTIMIZER_PARAMS

#: Methods whose plugins ship presets (the ones issue 13 names for the ``paper`` protocol).
WITH_PRESETS = ("ottt", "sltt", "ratebp", "tbptt_local")


def _method(host: PluginHost, name: str) -> type[GradientMethod[Any]]:
    return cast("type[GradientMethod[Any]]", host.get("method", name).obj)


def _presets() -> Iterator[tuple[str, str]]:
    host = PluginHost.load(HostConfig())
    for name in host.names("method"):
        for preset in _method(host, name).PRESETS:
            yield name, preset


ALL_PRESETS = sorted(_presets())


def _preset(host: PluginHost, method: str, name: str = "paper") -> Preset:
    return _method(host, method).PRESETS[name]


def _value_keys(preset: Preset) -> set[str]:
    """The ``sources`` key of every value the preset sets (``params.K``, ``neuron.params.tau`` ...)."""
    keys = {f"params.{k}" for k in preset.params}
    for part in ("neuron", "surrogate"):
        table = getattr(preset, part)
        if table is not None:
            keys |= {f"{part}.name"} | {f"{part}.params.{k}" for k in table.get("params", {})}
    if preset.loss is not None:
        keys.add("loss")
    if preset.optimizer is not None:
        keys |= {f"optimizer.{k}" for k in preset.optimizer}
    if preset.model is not None:
        keys |= {f"model.{k}" for k in preset.model}
    return keys


def test_the_paper_methods_ship_a_paper_preset(host: PluginHost) -> None:
    for method in WITH_PRESETS:
        assert "paper" in _method(host, method).PRESETS, method
    assert {m for m, _ in ALL_PRESETS} >= set(WITH_PRESETS)


@pytest.mark.parametrize(("method", "name"), ALL_PRESETS)
def test_preset_resolves(host: PluginHost, method: str, name: str) -> None:
    cls = _method(host, method)
    preset = _preset(host, method, name)
    assert preset.doc.strip()
    resolved = params_of(cls).resolve(preset.params)
    cls(**resolved)  # the method accepts them
    for kind in ("neuron", "surrogate"):
        table = getattr(preset, kind)
        if table is None:
            continue
        assert set(table) <= {"name", "params"}, (kind, table)
        plugin = host.get(kind, table["name"]).obj
        params_of(plugin).resolve(table.get("params", {}))
    if preset.loss is not None:
        assert preset.loss in cls.loss_forms
    if preset.optimizer is not None:
        OPTIMIZER_PARAMS.resolve(preset.optimizer)
        assert "momentum" not in preset.optimizer or preset.optimizer["name"] == "sgd"
    if preset.model is not None:  # the built-in mlp takes every model parameter a built-in preset sets
        params_of(host.get("model", "mlp").obj).resolve(dict(preset.model))


@pytest.mark.parametrize(("method", "name"), ALL_PRESETS)
def test_every_value_has_a_source_and_every_source_a_value(host: PluginHost, method: str, name: str) -> None:
    preset = _preset(host, method, name)
    assert set(preset.sources) == _value_keys(preset)
    assert all(text.strip() for text in preset.sources.values())


def test_value_keys_can_fail() -> None:
    """The source check is not vacuous: a value without a source or a stale source is noticed."""
    preset = Preset(doc="x", params={"K": 2}, loss="rate", sources={"loss": "here", "params.Lb": "there"})
    assert _value_keys(preset) == {"params.K", "loss"} != set(preset.sources)


def _lif(preset: Preset) -> dict[str, Any]:
    assert preset.neuron is not None and preset.neuron["name"] == "lif"
    return dict(preset.neuron["params"])


def test_ottt_paper_uses_the_official_trace_conventions(host: PluginHost) -> None:
    """methods.md §3(b,c,f): raw input, traced readout, plain bias gradient (the defaults stay exact)."""
    preset = _preset(host, "ottt")
    assert {k: preset.params[k] for k in ("input_trace", "readout_trace", "bias_trace")} == {
        "input_trace": False,
        "readout_trace": True,
        "bias_trace": False,
    }
    defaults = params_of(_method(host, "ottt")).resolve({})
    assert (defaults["input_trace"], defaults["readout_trace"], defaults["bias_trace"]) == (True, False, True)
    assert _lif(preset) == {"tau": 2.0, "decay_input": False, "v_threshold": 1.0, "reset": "soft", "detach_reset": True}
    assert preset.surrogate == {"name": "sigmoid", "params": {"alpha": 4.0}}
    assert preset.loss == "per_step" and preset.params["loss_lambda"] == 0.05  # §3(c), §12: CIFAR
    assert preset.optimizer == {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0, "schedule": "cosine"}


def test_sltt_paper_values(host: PluginHost) -> None:
    """methods.md §4(c), §12: τ = 1.1, decay_input=False, soft reset, triangle (α = 1), SGD 0.1/0.9."""
    preset = _preset(host, "sltt")
    lif = _lif(preset)
    assert (lif["tau"], lif["decay_input"], lif["reset"]) == (1.1, False, "soft")
    assert preset.surrogate == {"name": "triangle", "params": {"alpha": 1.0}}
    assert preset.loss == "per_step"
    assert preset.params == {"k": None, "loss_lambda": 0.05, "loss_means": 1.0}  # §4(c), §12
    assert preset.optimizer is not None and (preset.optimizer["lr"], preset.optimizer["momentum"]) == (0.1, 0.9)


def test_ratebp_paper_values(host: PluginHost) -> None:
    """methods.md §5(b,c), §12: λ = 0.2 (τ = 1.25), θ = 1, soft detached reset, sigmoid α = 4, 1/T scale."""
    preset = _preset(host, "ratebp")
    lif = _lif(preset)
    assert 1 - 1 / lif["tau"] == pytest.approx(0.2)
    assert (lif["v_threshold"], lif["reset"], lif["detach_reset"], lif["decay_input"]) == (1.0, "soft", True, False)
    assert preset.surrogate == {"name": "sigmoid", "params": {"alpha": 4.0}}
    assert preset.params["eligibility_surrogate"] == "sigmoid4" and preset.params["official_grad_scale"] is True
    assert preset.loss == "rate"
    assert preset.optimizer == {
        "name": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "weight_decay_on": "weights",
        "schedule": "cosine",
    }


def test_tbptt_local_paper_unlocks_updates(host: PluginHost) -> None:
    """methods.md §2(b), §12: an update after every segment; the rest is the suite's (no official code)."""
    preset = _preset(host, "tbptt_local")
    assert preset.params == {"update": "segment"}
    assert preset.neuron is None and preset.surrogate is None and preset.optimizer is None


def test_scaled_weight_standardisation_is_the_official_formula_and_affine() -> None:
    import torch

    from snnarena_plugins.models import ScaledWSLinear

    torch.manual_seed(0)
    layer = ScaledWSLinear(6, 4).double()
    with torch.no_grad():
        layer.gain.copy_(torch.tensor([[1.0], [2.0], [0.5], [1.5]]))
    w = layer.weight.detach()
    expected = (
        layer.gain.detach()
        * (w - w.mean(1, keepdim=True))
        / torch.sqrt(w.var(1, unbiased=False, keepdim=True) * 6 + 1e-4)
    )
    assert torch.allclose(layer.standardized_weight(), expected, atol=1e-14)
    x, y = torch.rand(3, 6, dtype=torch.float64), torch.rand(3, 6, dtype=torch.float64)
    zero = layer(torch.zeros(1, 6, dtype=torch.float64))
    assert torch.allclose(layer(x + y) - zero, (layer(x) - zero) + (layer(y) - zero))  # affine in its input
    layer(x).sum().backward()
    assert layer.weight.grad is not None and layer.gain.grad is not None


def test_the_ottt_paper_preset_standardises_the_mlp_and_its_bptt_reference(host: PluginHost) -> None:
    from snnarena.suite import SuiteError, parse_suite

    text = """
name = "ws"
[train]
steps = 1
[grid]
T = [4]
[[methods]]
name = "bptt"
[[methods]]
name = "ottt"
preset = "paper"
[[models]]
name = "mlp"
params = { hidden = [8] }
[[datasets]]
name = "digits"
"""
    cells = parse_suite(text, host).cells
    standardised = {(c.method, c.optimizer["name"]) for c in cells if c.model_params.get("weight_standardization")}
    assert standardised == {("ottt", "sgd"), ("bptt", "sgd")}  # the preset's cells and their BPTT reference
    plain = [c for c in cells if not c.model_params.get("weight_standardization")]
    assert [(c.method, c.optimizer["name"]) for c in plain] == [("bptt", "adam")]
    with pytest.raises(SuiteError, match=r"sets model parameters \['weight_standardization'\], which model 'lstm"):
        parse_suite(text.replace('name = "mlp"\nparams = { hidden = [8] }', 'name = "lstm"'), host)


def test_ottt_trains_a_weight_standardised_mlp(host: PluginHost) -> None:
    from snnarena.data import DataInfo
    from snnarena.factory import build_method, build_model, neuron_factory
    from snnarena.testing import run_conformance

    def model() -> Any:
        info = DataInfo((6,), 3, 8, n_train=0, n_test=0)
        make = neuron_factory(host, "lif", {"v_threshold": 0.25}, "atan")
        return build_model(host, "mlp", info, make, {"hidden": [7, 5], "weight_standardization": True}).double()

    run_conformance(lambda: build_method(host, "ottt", {}), model)
