"""Built-in models: a spiking MLP (``mlp``), a small spiking conv net (``convnet``), a recurrent
spiking net (``rsnn``) and a non-spiking LSTM baseline (``lstm``).

All are stacks of stages with a memoryless linear readout ``o[t] = W_out S_L[t] + b``, so every
gradient method can drive them step by step or run them in multi-step mode. ``mlp`` and
``convnet`` are ``feedforward`` (:class:`~snnarena.model.Stage`: synapse → neuron); ``rsnn`` and
``lstm`` are ``recurrent`` (:class:`~snnarena.model.RecurrentStage`: the stage's previous output
feeds back into its input current).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

import snnarena
from snnarena.data import DataInfo
from snnarena.model import NeuronFactory, RecurrentStage, SpikingModel, Stage
from snnarena.multistep import SpikeLinear
from snnarena.neuron import Neuron, Surrogate
from snnarena.params import Param
from snnarena.registry import Register


class ScaledWSLinear(nn.Linear):
    """A linear synapse with scaled weight standardisation (the ``ScaledWSConv2d`` of OTTT's
    official code, after Brock et al.'s normaliser-free networks), per output unit ``j``::

        Ŵ_j = g_j (W_j − mean(W_j)) / sqrt(n_in · var(W_j) + ε)        y = Ŵ x + b

    with the mean and (biased) variance over the ``n_in`` inputs and a learnable gain ``g``
    ``[out, 1]`` starting at 1. It is linear in ``x`` for fixed parameters (trace-based methods
    apply), and the gradient reaches ``W`` and ``g`` through the standardisation.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, eps: float = 1e-4) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.gain = nn.Parameter(torch.ones(out_features, 1))
        self.eps = eps

    def standardized_weight(self) -> Tensor:
        """``Ŵ`` ``[out, in]``."""
        w = self.weight
        mean = w.mean(dim=1, keepdim=True)
        var = w.var(dim=1, unbiased=False, keepdim=True)
        return self.gain * (w - mean) / torch.sqrt(var * self.in_features + self.eps)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.standardized_weight(), self.bias)


class SpikingMLP(SpikingModel):
    """Fully connected spiking net: ``[B, *input_shape]`` → hidden LIF layers → logits ``[B, C]``.

    Stage ``l``: ``I_l = W_l S_{l−1} + b_l`` (inputs flattened), neuron layer of width
    ``hidden[l]``. Synapses fed by spikes are :class:`~snnarena.multistep.SpikeLinear` (the same
    map; for the weight gradient it rebuilds the fused spikes from what their layer saved instead
    of keeping a copy). ``weight_standardization``
    makes the hidden synapses :class:`ScaledWSLinear` (the readout stays plain, as in OTTT's code).
    """

    name = "mlp"
    PARAMS = (
        Param("hidden", "int_list", (128, 128), "widths of the hidden spiking layers", low=1, min_len=1),
        Param("bias", "bool", True, "bias in every synapse"),
        Param(
            "weight_standardization",
            "bool",
            False,
            "scaled weight standardisation of the hidden synapses (OTTT's official models)",
        ),
    )

    def __init__(self, info: DataInfo, make_neuron: NeuronFactory, **params: Any) -> None:
        super().__init__(info, make_neuron, **params)
        width = math.prod(info.input_shape)
        bias = self.params["bias"]
        standardized = self.params["weight_standardization"]
        for i, out in enumerate(self.params["hidden"]):
            # synapses fed by spikes keep no copy of them for the weight gradient (SpikeLinear)
            layer = ScaledWSLinear if standardized else nn.Linear if i == 0 else SpikeLinear
            linear = layer(width, out, bias=bias)
            synapse = _flat_input(info, linear) if i == 0 else linear
            self.stages.append(Stage(synapse, make_neuron()))
            width = out
        self.readout = SpikeLinear(width, info.n_classes, bias=bias)


class SpikingConvNet(SpikingModel):
    """Small spiking CNN for ``[B, C, H, W]`` inputs.

    Conv stages ``I_l = AvgPool2(BN?(Conv3x3(S_{l−1})))`` with ``channels[l]`` maps, then one fully
    connected spiking stage of width ``fc`` and the linear readout. ``norm="batch"`` inserts a
    BatchNorm2d after each convolution (applied per time step).
    """

    name = "convnet"
    PARAMS = (
        Param("channels", "int_list", (16, 32), "output channels of the conv stages", low=1, min_len=1),
        Param("fc", "int", 128, "width of the fully connected spiking stage", low=1),
        Param("norm", "str", "none", "normalisation after each convolution", choices=("none", "batch")),
        Param("pool", "bool", True, "2x2 average pooling after each convolution"),
    )

    @classmethod
    def skip(cls, info: DataInfo) -> str | None:
        if len(info.input_shape) != 3:
            return (
                f"convnet needs image inputs [C, H, W]; the dataset gives {list(info.input_shape)}"
                " (datasets with a 'flatten' parameter can set it to false)"
            )
        return None

    def __init__(self, info: DataInfo, make_neuron: NeuronFactory, **params: Any) -> None:
        super().__init__(info, make_neuron, **params)
        c, h, w = info.input_shape
        norm = self.params["norm"]
        for out in self.params["channels"]:
            layers: list[nn.Module] = [nn.Conv2d(c, out, 3, padding=1, bias=norm != "batch")]
            if norm == "batch":
                layers.append(nn.BatchNorm2d(out))
            if self.params["pool"] and min(h, w) >= 2:
                layers.append(nn.AvgPool2d(2))
                h, w = h // 2, w // 2
            self.stages.append(Stage(nn.Sequential(*layers), make_neuron()))
            c = out
        fc = self.params["fc"]
        self.stages.append(Stage(nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, fc)), make_neuron()))
        self.readout = nn.Linear(fc, info.n_classes)


def _flat_input(info: DataInfo, linear: nn.Linear) -> nn.Module:
    """``linear`` on samples flattened to vectors (a no-op for vector inputs)."""
    return nn.Sequential(nn.Flatten(), linear) if len(info.input_shape) > 1 else linear


class RecurrentSNN(SpikingModel):
    """Recurrent spiking net: recurrent layers of the suite's neuron, then a linear readout.

    Layer ``l`` (width ``N_l = hidden[l]``, inputs flattened): ``I_l[t] = W_l S_{l−1}[t] + b_l +
    R_l S_l[t−1]`` with ``S_l[−1] = 0`` and ``R_l`` ``[N_l, N_l]`` (no bias; self-connections
    included), then the neuron layer ``S_l[t] = neuron_l(I_l[t])``. ``recurrent=false`` drops
    ``R_l`` (the same net without feedback, for ablations). Readout ``o[t] = W_out S_L[t] + b``.
    """

    name = "rsnn"
    family = "recurrent"
    PARAMS = (
        Param("hidden", "int_list", (128,), "widths of the recurrent spiking layers", low=1, min_len=1),
        Param("recurrent", "bool", True, "recurrent weights R_l (false: feedforward layers, for ablations)"),
        Param("bias", "bool", True, "bias in the input synapses and the readout"),
    )

    def __init__(self, info: DataInfo, make_neuron: NeuronFactory, **params: Any) -> None:
        super().__init__(info, make_neuron, **params)
        width = math.prod(info.input_shape)
        bias = self.params["bias"]
        for i, out in enumerate(self.params["hidden"]):
            linear = nn.Linear(width, out, bias=bias)
            synapse = _flat_input(info, linear) if i == 0 else linear
            recurrent = nn.Linear(out, out, bias=False) if self.params["recurrent"] else None
            self.stages.append(RecurrentStage(synapse, make_neuron(), recurrent))
            width = out
        self.readout = nn.Linear(width, info.n_classes, bias=bias)


class LSTMState(NamedTuple):
    """The memory cell ``c`` ``[B, H]`` of an LSTM layer (its output ``h`` is the stage's output)."""

    c: Tensor


class LSTMUnit(Neuron):
    """The LSTM nonlinearity as a (non-spiking) unit of a :class:`RecurrentStage`.

    Input: the gate pre-activations ``I = W x + b + R h[t−1]`` ``[B, 4H]``, in PyTorch's gate order
    ``(i, f, g, o)``; then ``c[t] = σ(f) ⊙ c[t−1] + σ(i) ⊙ tanh(g)`` and the output
    ``h[t] = σ(o) ⊙ tanh(c[t])`` ``[B, H]`` (``c[−1] = 0``). The surrogate is never used.
    """

    name = "lstm_unit"
    spiking = False

    def __init__(self) -> None:
        super().__init__(Surrogate())  # no spike: the base surrogate stays unused

    def init_state(self, x: Tensor) -> LSTMState:
        return LSTMState(x.new_zeros(*x.shape[:-1], x.shape[-1] // 4))

    def step(self, x: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        i, f, g, o = x.chunk(4, dim=-1)
        c = torch.sigmoid(f) * state.c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), LSTMState(c)

    def extra_repr(self) -> str:
        return "non-spiking"


class LSTM(SpikingModel):
    """Non-spiking LSTM baseline: LSTM layers (``torch.nn.LSTM``'s equations) and a linear readout.

    Layer ``l`` of width ``H = hidden[l]`` is a :class:`RecurrentStage` whose synapse gives the
    gate inputs ``W_l h_{l−1}[t] + b_l`` ``[B, 4H]``, whose recurrent synapse adds ``R_l h_l[t−1]``
    (``torch.nn.LSTM``'s ``weight_ih``, ``bias_ih + bias_hh`` and ``weight_hh``) and whose unit is
    :class:`LSTMUnit`. Weights start uniform in ``[−1/√H, 1/√H]`` as in ``torch.nn.LSTM``.
    Readout ``o[t] = W_out h_L[t] + b``. It builds no neuron from the suite (``uses_neuron``).
    """

    name = "lstm"
    family = "recurrent"
    uses_neuron = False
    PARAMS = (Param("hidden", "int_list", (128,), "widths of the LSTM layers", low=1, min_len=1),)

    def __init__(self, info: DataInfo, make_neuron: NeuronFactory, **params: Any) -> None:
        super().__init__(info, make_neuron, **params)
        width = math.prod(info.input_shape)
        for i, out in enumerate(self.params["hidden"]):
            gates, recurrent = nn.Linear(width, 4 * out), nn.Linear(out, 4 * out, bias=False)
            bound = 1.0 / math.sqrt(out)
            for p in (*gates.parameters(), *recurrent.parameters()):
                nn.init.uniform_(p, -bound, bound)
            synapse = _flat_input(info, gates) if i == 0 else gates
            self.stages.append(RecurrentStage(synapse, LSTMUnit(), recurrent))
            width = out
        self.readout = nn.Linear(width, info.n_classes)


@snnarena.hookimpl
def register_models(register: Register) -> None:
    register(SpikingMLP)
    register(SpikingConvNet)
    register(RecurrentSNN)
    register(LSTM)
