# docs/examples/convergent_model_plugin.py
"""A convergent network with an input-to-output skip coupling (``skip_hopfield``), for EP and BPTT.

One hidden layer ``s_1`` ``[B, H]`` and the output layer ``s_2`` ``[B, C]`` relax under a static
input ``x`` ``[B, D]`` (flattened). The coupling term, per sample, is::

    Ψ(x, s) = s_1ᵀ(W_1 x + b_1) + s_2ᵀ(W_2 s_1 + b_2) + s_2ᵀ U x                 [B]

and one step is ``s_l[t+1] = ρ(∂Ψ/∂s_l(x, s[t]))`` with the hard sigmoid ``ρ(h) = clamp(h, 0, 1)``:

* ``∂Ψ/∂s_1 = W_1 x + b_1 + W_2ᵀ s_2``,
* ``∂Ψ/∂s_2 = W_2 s_1 + b_2 + U x``.

The drives come from autograd of ``Ψ``, so the model states its coupling once; the primitive
function is ``Φ = Ψ`` (the step map is ``ρ(∂Φ/∂s)``, Ernoult et al.'s prototypical setting with
``dt = 1``). The logits of a step are the output layer's new state.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

import snnarena
from snnarena.data import DataInfo
from snnarena.model import ConvergentModel, NeuronFactory
from snnarena.params import Param
from snnarena.registry import Register

__version__ = "1.0"


class SkipHopfield(ConvergentModel):
    """Hidden and output layers with tied weights and a direct input-to-output coupling ``U``."""

    name = "skip_hopfield"
    PARAMS = (Param("hidden", "int", 64, "width H of the hidden layer", low=1),)

    def __init__(self, info: DataInfo, make_neuron: NeuronFactory, **params: Any) -> None:
        super().__init__(info, make_neuron, **params)  # convergent models build no neuron
        n_in, n_hidden = math.prod(info.input_shape), self.params["hidden"]
        self.w1 = nn.Linear(n_in, n_hidden)  # W_1, b_1
        self.w2 = nn.Linear(n_hidden, info.n_classes)  # W_2, b_2
        self.skip_coupling = nn.Linear(n_in, info.n_classes, bias=False)  # U

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return (self.w1.out_features, self.w2.out_features)

    def phi(self, x: Tensor, state: list[Tensor]) -> Tensor:
        s1, s2 = state
        x = x.flatten(1)
        return (s1 * self.w1(x)).sum(-1) + (s2 * (self.w2(s1) + self.skip_coupling(x))).sum(-1)

    def dynamics(self, x: Tensor, state: list[Tensor]) -> list[Tensor]:
        differentiable = torch.is_grad_enabled()  # BPTT differentiates through the drives
        with torch.enable_grad():
            s = [t if t.requires_grad else t.detach().requires_grad_() for t in state]
            drives = torch.autograd.grad(self.phi(x, s).sum(), s, create_graph=differentiable)
        return [d.clamp(0.0, 1.0) if differentiable else d.detach().clamp(0.0, 1.0) for d in drives]


@snnarena.hookimpl
def register_models(register: Register) -> None:
    register(SkipHopfield)
