# docs/examples/neuron_plugin.py
"""A minimal adaptive LIF neuron (``simple_alif``): the threshold rises after each spike.

With input current ``X[t]``, membrane ``V``, adaptation ``A``, leak ``λ = 1 − 1/τ`` and
adaptation decay ``ρ = 1 − 1/τ_a``:

* charge:    ``H[t] = λ V[t−1] + X[t]``
* threshold: ``θ[t] = V_th + β A[t−1]``
* fire:      ``S[t] = Θ(H[t] − θ[t])`` (the surrogate's derivative in the backward pass)
* reset:     ``V[t] = H[t] − θ[t] S[t]`` (soft reset by the current threshold)
* adapt:     ``A[t] = ρ A[t−1] + S[t]``

``V[−1] = A[−1] = 0``. Shapes: ``X``, ``S``, ``V``, ``A`` are ``[B, ...]``; the state is
``ALIFState(v, a)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

import snnarena
from snnarena.neuron import Neuron, Surrogate
from snnarena.params import Param
from snnarena.registry import Register

__version__ = "1.0"


class ALIFState(NamedTuple):
    """Membrane ``v`` and adaptation ``a`` after the last step, both ``[B, ...]``."""

    v: Tensor
    a: Tensor


class AdaptiveLIF(Neuron):
    """Adaptive LIF: a leaky membrane whose threshold grows by β after each spike and decays back."""

    name = "simple_alif"
    PARAMS = (
        Param("tau", "float", 2.0, "membrane time constant τ in steps (λ = 1 − 1/τ)", low=1.0),
        Param("tau_adapt", "float", 20.0, "adaptation time constant τ_a in steps", low=1.0),
        Param("beta", "float", 0.2, "threshold increase per unit of adaptation", low=0.0),
        Param("v_threshold", "float", 1.0, "base firing threshold V_th", low=1e-9),
    )

    def __init__(self, surrogate: Surrogate, **params: Any) -> None:
        super().__init__(surrogate, **params)  # validates params and stores them in self.params
        self.decay = 1.0 - 1.0 / self.params["tau"]
        self.adapt_decay = 1.0 - 1.0 / self.params["tau_adapt"]

    @property
    def leak(self) -> float:
        """``λ``: methods that keep presynaptic traces (``ottt``) decay them with it."""
        return self.decay

    def init_state(self, x: Tensor) -> ALIFState:
        return ALIFState(torch.zeros_like(x), torch.zeros_like(x))

    def step(self, x: Tensor, state: ALIFState) -> tuple[Tensor, ALIFState]:
        h = self.decay * state.v + x
        threshold = self.params["v_threshold"] + self.params["beta"] * state.a
        spike = self.surrogate(h - threshold)
        v = h - threshold * spike
        a = self.adapt_decay * state.a + spike
        return spike, ALIFState(v, a)


@snnarena.hookimpl
def register_neurons(register: Register) -> None:
    register(AdaptiveLIF)
