"""Built-in models: a spiking MLP (``mlp``) and a small spiking conv net (``convnet``).

Both are stacks of :class:`~snnarena.model.Stage` (synapse → neuron) with a memoryless linear
readout ``o[t] = W_out S_L[t] + b``, so every gradient method can drive them step by step or
run them in multi-step mode.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

import snnarena
from snnarena.data import DataInfo
from snnarena.model import NeuronFactory, SpikingModel, Stage
from snnarena.params import Param
from snnarena.registry import Register


class SpikingMLP(SpikingModel):
    """Fully connected spiking net: ``[B, *input_shape]`` → hidden LIF layers → logits ``[B, C]``.

    Stage ``l``: ``I_l = W_l S_{l−1} + b_l`` (inputs flattened), neuron layer of width
    ``hidden[l]``.
    """

    name = "mlp"
    PARAMS = (
        Param("hidden", "int_list", (128, 128), "widths of the hidden spiking layers", low=1, min_len=1),
        Param("bias", "bool", True, "bias in every synapse"),
    )

    def __init__(self, info: DataInfo, make_neuron: NeuronFactory, **params: Any) -> None:
        super().__init__(info, make_neuron, **params)
        width = math.prod(info.input_shape)
        bias = self.params["bias"]
        for i, out in enumerate(self.params["hidden"]):
            linear = nn.Linear(width, out, bias=bias)
            synapse = nn.Sequential(nn.Flatten(), linear) if i == 0 and len(info.input_shape) > 1 else linear
            self.stages.append(Stage(synapse, make_neuron()))
            width = out
        self.readout = nn.Linear(width, info.n_classes, bias=bias)


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


@snnarena.hookimpl
def register_models(register: Register) -> None:
    register(SpikingMLP)
    register(SpikingConvNet)
