# docs/examples/model_plugin.py
"""A spiking 1-D convolutional net (``conv1d``) for vector or ``[C, L]`` inputs.

Per step, with ``S_0 = x`` ``[B, L]`` (read as one channel) or ``[B, C, L]``:

* conv stage ``l``: ``I_l = AvgPool2(Conv1d_k(S_{l−1}))`` with ``channels[l]`` maps, then a neuron
  layer (pooling only while the length is at least 2);
* fully connected stage: ``I = W Flatten(S) + b`` of width ``fc``, then a neuron layer;
* readout: ``o[t] = W_out S_L[t] + b_out`` (memoryless, logits ``[B, n_classes]``).

Every synapse is affine in its input, so trace-based methods (``ottt``) can train it too.
"""

from __future__ import annotations

from typing import Any

from torch import nn

import snnarena
from snnarena.data import DataInfo
from snnarena.model import NeuronFactory, SpikingModel, Stage
from snnarena.params import Param
from snnarena.registry import Register

__version__ = "1.0"


class SpikingConv1d(SpikingModel):
    """Spiking 1-D conv net: conv stages over the last axis, a dense spiking stage, a linear readout."""

    name = "conv1d"
    family = "feedforward"  # each stage depends on time only through its own neuron state
    PARAMS = (
        Param("channels", "int_list", (8,), "output channels of the conv stages", low=1),
        Param("kernel_size", "int", 3, "odd kernel size (zero padding keeps the length)", choices=(1, 3, 5, 7)),
        Param("fc", "int", 32, "width of the fully connected spiking stage", low=1),
    )

    @classmethod
    def skip(cls, info: DataInfo) -> str | None:
        if len(info.input_shape) not in (1, 2):
            return f"conv1d needs inputs [L] or [C, L]; the dataset gives {list(info.input_shape)}"
        return None

    def __init__(self, info: DataInfo, make_neuron: NeuronFactory, **params: Any) -> None:
        super().__init__(info, make_neuron, **params)  # sets self.info, self.params, empty stages
        shape = info.input_shape
        channels, length = (1, shape[0]) if len(shape) == 1 else shape
        kernel = self.params["kernel_size"]
        for i, out in enumerate(self.params["channels"]):
            layers: list[nn.Module] = [nn.Unflatten(1, (1, length))] if i == 0 and len(shape) == 1 else []
            layers.append(nn.Conv1d(channels, out, kernel, padding=kernel // 2))
            if length >= 2:
                layers.append(nn.AvgPool1d(2))
                length //= 2
            self.stages.append(Stage(nn.Sequential(*layers), make_neuron()))
            channels = out
        fc = self.params["fc"]
        self.stages.append(Stage(nn.Sequential(nn.Flatten(), nn.Linear(channels * length, fc)), make_neuron()))
        self.readout = nn.Linear(fc, info.n_classes)


@snnarena.hookimpl
def register_models(register: Register) -> None:
    register(SpikingConv1d)
