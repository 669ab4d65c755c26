# docs/examples/recurrent_model_plugin.py
"""A recurrent spiking net with sparse recurrent synapses and no self-connections (``sparse_rsnn``).

Per step, with ``S_0 = x`` (flattened) and ``S_l[−1] = 0``, recurrent layer ``l`` of width ``N_l``:

    I_l[t] = W_l S_{l−1}[t] + b_l + (M_l ⊙ R_l) S_l[t−1],   S_l[t] = neuron_l(I_l[t])

where ``M_l`` ``[N_l, N_l]`` is a fixed random 0/1 mask: each synapse ``j → i`` exists with
probability ``connectivity`` and ``M_l[i, i] = 0`` (no neuron excites itself, as in LSNN). The
readout is ``o[t] = W_out S_L[t] + b_out``. Each layer is a ``RecurrentStage`` whose recurrent
synapse is the masked linear map below, so every method that trains recurrent models trains it;
the masked-out weights get a zero gradient and stay at zero.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

import snnarena
from snnarena.data import DataInfo
from snnarena.model import NeuronFactory, RecurrentStage, SpikingModel
from snnarena.params import Param
from snnarena.registry import Register

__version__ = "1.0"


class MaskedRecurrence(nn.Module):
    """``S[t−1]`` ``[B, N]`` → ``(M ⊙ R) S[t−1]`` ``[B, N]``: sparse, no self-connections."""

    def __init__(self, n: int, connectivity: float) -> None:
        super().__init__()
        mask = (torch.rand(n, n) < connectivity).float().fill_diagonal_(0.0)  # drawn from the cell's seed
        self.register_buffer("mask", mask)  # a buffer: moves with .to(), never trained
        bound = 1.0 / math.sqrt(max(connectivity * n, 1.0))  # scaled to the expected fan-in
        self.weight = nn.Parameter(torch.empty(n, n).uniform_(-bound, bound) * mask)

    def forward(self, previous: Tensor) -> Tensor:
        return previous @ (self.weight * self.mask).T


class SparseRSNN(SpikingModel):
    """Recurrent layers of the suite's neuron with sparse, autapse-free recurrence; linear readout."""

    name = "sparse_rsnn"
    family = "recurrent"  # only methods whose `families` include "recurrent" train it
    PARAMS = (
        Param("hidden", "int_list", (64,), "widths of the recurrent spiking layers", low=1, min_len=1),
        Param("connectivity", "float", 0.2, "probability of each recurrent synapse j → i (i ≠ j)", low=0.0, high=1.0),
    )

    def __init__(self, info: DataInfo, make_neuron: NeuronFactory, **params: Any) -> None:
        super().__init__(info, make_neuron, **params)  # sets self.info, self.params, empty stages
        width = math.prod(info.input_shape)
        for i, out in enumerate(self.params["hidden"]):
            linear = nn.Linear(width, out)
            synapse = nn.Sequential(nn.Flatten(), linear) if i == 0 and len(info.input_shape) > 1 else linear
            recurrence = MaskedRecurrence(out, self.params["connectivity"])
            self.stages.append(RecurrentStage(synapse, make_neuron(), recurrence))
            width = out
        self.readout = nn.Linear(width, info.n_classes)


@snnarena.hookimpl
def register_models(register: Register) -> None:
    register(SparseRSNN)
