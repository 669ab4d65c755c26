"""Built-in graph models: a spiking GCN (``spiking_gcn``) and a non-spiking GCN baseline (``gcn``).

Both run on one graph whose ``N`` nodes are the batch (:class:`~snnarena.model.GraphModel`): stage
``l`` is a graph convolution ``I_l[t] = Â S_{l−1}[t] W_l + b_l`` ``[N, hidden[l]]``
(:class:`~snnarena.graph.GraphConv`, ``Â = D^{-1/2}(A + I)D^{-1/2}`` of ``DataInfo.graph``) followed
by a unit, and the readout is a per-node linear map ``o[t] = S_L[t] W_out + b`` ``[N, C]``, ``C =
info.n_classes`` (classes, or the embedding size whose inner products score edges). The
convolutions are affine in their input, so the stages keep the feedforward contract and
``bptt``, ``tbptt`` and ``checkpointed_bptt`` train both unchanged.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

import snnarena
from snnarena.data import DataInfo
from snnarena.graph import GraphConv
from snnarena.model import GraphModel, NeuronFactory, Stage
from snnarena.neuron import Neuron, Surrogate
from snnarena.params import Param
from snnarena.registry import Register

HIDDEN = Param("hidden", "int_list", (16,), "widths of the hidden graph-convolution layers", low=1, min_len=1)
BIAS = Param("bias", "bool", True, "bias in every graph convolution and the readout")


class SpikingGCN(GraphModel):
    """Spiking GCN: graph-convolution stages of the suite's neuron, then a linear readout.

    Stage ``l``: ``I_l[t] = Â S_{l−1}[t] W_l + b_l`` (``S_0 = x``), ``S_l[t] = neuron_l(I_l[t])``;
    ``o[t] = S_L[t] W_out + b``. Trained by BPTT with surrogate gradients it is the "DvS" baseline
    of MSG (Sun et al., NeurIPS 2024).
    """

    name = "spiking_gcn"
    PARAMS = (HIDDEN, BIAS)

    def __init__(self, info: DataInfo, make_neuron: NeuronFactory, **params: Any) -> None:
        super().__init__(info, make_neuron, **params)
        _graph_conv_stack(self, make_neuron)


def _graph_conv_stack(model: GraphModel, make_unit: NeuronFactory) -> None:
    """Fill ``model.stages`` with ``GraphConv`` stages of widths ``hidden`` (units from
    ``make_unit``) and set its linear readout to ``n_classes`` outputs."""
    (width,) = model.info.input_shape
    bias = model.params["bias"]
    for out in model.params["hidden"]:
        model.stages.append(Stage(GraphConv(width, out, model.graph, bias=bias), make_unit()))
        width = out
    model.readout = nn.Linear(width, model.info.n_classes, bias=bias)


class NoState(NamedTuple):
    """The (empty) state of a unit without memory."""


class ReLUUnit(Neuron):
    """``max(I, 0)``: a stateless, non-spiking unit (the state is an empty :class:`NoState`).
    The surrogate is never used."""

    name = "relu_unit"
    spiking = False

    def __init__(self) -> None:
        super().__init__(Surrogate())  # no spike: the base surrogate stays unused

    def init_state(self, x: Tensor) -> NoState:
        return NoState()

    def step(self, x: Tensor, state: NoState) -> tuple[Tensor, NoState]:
        return torch.relu(x), state

    def extra_repr(self) -> str:
        return "non-spiking"


class GCN(GraphModel):
    """Non-spiking GCN baseline (Kipf & Welling, 2017): ``H_l = ReLU(Â H_{l−1} W_l + b_l)`` per
    step (``H_0 = x[t]``), ``o[t] = H_L W_out + b``. Memoryless: with ``direct`` coding every
    step gives the same output. It builds no neuron from the suite (``uses_neuron``)."""

    name = "gcn"
    uses_neuron = False
    PARAMS = (HIDDEN, BIAS)

    def __init__(self, info: DataInfo, make_neuron: NeuronFactory, **params: Any) -> None:
        super().__init__(info, make_neuron, **params)
        _graph_conv_stack(self, ReLUUnit)


@snnarena.hookimpl
def register_models(register: Register) -> None:
    register(SpikingGCN)
    register(GCN)
