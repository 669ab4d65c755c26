"""Instantiate registered plugins from names and (unvalidated) parameter dictionaries.

Parameters are validated against each class's ``PARAMS`` and defaults are filled in, so
``build_method(host, "tbptt", {"K": 4})`` and a suite entry ``{name = "tbptt", params = {K = 4}}``
build the same object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from snnarena.data import Bundle, DataInfo, Dataset
from snnarena.errors import ConfigurationError
from snnarena.host import PluginHost
from snnarena.method import GradientMethod
from snnarena.metric import Metric
from snnarena.model import NeuronFactory, SpikingModel
from snnarena.neuron import Neuron, Surrogate
from snnarena.params import params_of
from snnarena.registry import Kind


def build(host: PluginHost, kind: Kind, name: str, params: Mapping[str, Any] | None = None) -> Any:
    """``cls(**resolved_params)`` for the class registered as ``name`` of ``kind``."""
    cls = host.get(kind, name).obj
    return cls(**params_of(cls).resolve(params or {}))


def build_surrogate(host: PluginHost, name: str, params: Mapping[str, Any] | None = None) -> Surrogate:
    surrogate: Surrogate = build(host, "surrogate", name, params)
    return surrogate


def neuron_factory(
    host: PluginHost,
    name: str,
    params: Mapping[str, Any] | None = None,
    surrogate: str = "atan",
    surrogate_params: Mapping[str, Any] | None = None,
) -> NeuronFactory:
    """A function returning a fresh neuron layer (with its own surrogate) on every call."""
    cls = host.get("neuron", name).obj
    resolved = params_of(cls).resolve(params or {})
    surrogate_cls = host.get("surrogate", surrogate).obj
    surrogate_resolved = params_of(surrogate_cls).resolve(surrogate_params or {})

    def make() -> Neuron:
        neuron: Neuron = cls(surrogate_cls(**surrogate_resolved), **resolved)
        return neuron

    return make


def no_neuron(model: str) -> NeuronFactory:
    """The neuron factory of a model that builds no neuron (``uses_neuron = False``): calling it
    is a :class:`~snnarena.errors.ConfigurationError` naming the model."""

    def make() -> Neuron:
        raise ConfigurationError(f"model {model!r} declares uses_neuron = False but asked for a neuron")

    return make


def build_model(
    host: PluginHost,
    name: str,
    info: DataInfo,
    make_neuron: NeuronFactory,
    params: Mapping[str, Any] | None = None,
) -> SpikingModel:
    cls = host.get("model", name).obj
    model: SpikingModel = cls(info, make_neuron, **params_of(cls).resolve(params or {}))
    return model


def build_dataset(host: PluginHost, name: str, T: int, seed: int, params: Mapping[str, Any] | None = None) -> Bundle:
    dataset: Dataset = build(host, "dataset", name, params)
    return dataset.build(T=T, seed=seed)


def build_method(host: PluginHost, name: str, params: Mapping[str, Any] | None = None) -> GradientMethod:
    method: GradientMethod = build(host, "method", name, params)
    return method


def build_metric(host: PluginHost, name: str, params: Mapping[str, Any] | None = None) -> Metric:
    metric: Metric = build(host, "metric", name, params)
    return metric
