"""Built-in neurons: leaky integrate-and-fire (``lif``) and integrate-and-fire (``if``).

With input current ``X[t]``, membrane ``V``, leak ``λ = 1 − 1/τ`` and threshold ``V_th``:

* charge, ``decay_input=False``: ``H[t] = λ V[t−1] + X[t]``;
  ``decay_input=True``: ``H[t] = λ V[t−1] + X[t]/τ`` (the input is leaked too);
* fire: ``S[t] = Θ(H[t] − V_th)`` with ``Θ(0) = 1`` and the surrogate's derivative backward;
* reset, ``soft``: ``V[t] = H[t] − V_th S'[t]``; ``hard``: ``V[t] = H[t](1 − S'[t]) + V_reset S'[t]``,
  where ``S' = S`` or ``S' = stop_grad(S)`` when ``detach_reset`` is set.

``V[−1] = 0``. ``τ = 1`` gives ``λ = 0``: no memory across steps (with soft reset and
``decay_input=False``, ``H[t] = X[t]``). IF is LIF without leak (``λ = 1``, ``decay_input=False``).
Shapes: ``X``, ``S``, ``V`` are ``[B, ...]``; the state is ``LIFState(v)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

import snnarena
from snnarena.neuron import Neuron, Surrogate
from snnarena.params import Param
from snnarena.registry import Register

_RESET_PARAMS = (
    Param("v_threshold", "float", 1.0, "firing threshold V_th", low=1e-9),
    Param("reset", "str", "soft", "soft (subtract V_th) or hard (set to v_reset)", choices=("soft", "hard")),
    Param("v_reset", "float", 0.0, "membrane value after a spike with hard reset"),
    Param("detach_reset", "bool", False, "stop the gradient through the reset term"),
)


class LIFState(NamedTuple):
    """Membrane potential ``v`` ``[B, ...]`` after the reset of the last step."""

    v: Tensor


class IntegrateAndFire(Neuron):
    """Integrate-and-fire: H = V + X, spike at V_th, soft or hard reset."""

    name = "if"
    PARAMS = _RESET_PARAMS

    def __init__(self, surrogate: Surrogate, **params: Any) -> None:
        super().__init__(surrogate, **params)
        self.v_threshold = float(self.params["v_threshold"])
        self.reset_mode = self.params["reset"]
        self.v_reset = float(self.params["v_reset"])
        self.detach_reset = bool(self.params["detach_reset"])

    @property
    def leak(self) -> float:
        return 1.0

    def init_state(self, x: Tensor) -> LIFState:
        return LIFState(torch.zeros_like(x))

    def charge(self, x: Tensor, v: Tensor) -> Tensor:
        """The membrane before firing, ``H[t]``."""
        return v + x

    def step(self, x: Tensor, state: LIFState) -> tuple[Tensor, LIFState]:
        h = self.charge(x, state.v)
        spike = self.surrogate(h - self.v_threshold)
        s = spike.detach() if self.detach_reset else spike
        if self.reset_mode == "soft":
            v = h - self.v_threshold * s
        else:
            v = h * (1 - s) + self.v_reset * s
        return spike, LIFState(v)


class LeakyIntegrateAndFire(IntegrateAndFire):
    """Leaky integrate-and-fire with leak λ = 1 − 1/τ (see the module docstring)."""

    name = "lif"
    PARAMS = (
        Param("tau", "float", 2.0, "membrane time constant τ in steps (λ = 1 − 1/τ)", low=1.0),
        Param("decay_input", "bool", False, "scale the input by 1/τ (SpikingJelly's default)"),
    ) + _RESET_PARAMS

    def __init__(self, surrogate: Surrogate, **params: Any) -> None:
        super().__init__(surrogate, **params)
        self.tau = float(self.params["tau"])
        self.decay = 1.0 - 1.0 / self.tau
        self.decay_input = bool(self.params["decay_input"])

    @property
    def leak(self) -> float:
        return self.decay

    def charge(self, x: Tensor, v: Tensor) -> Tensor:
        if self.decay_input:
            return self.decay * v + x / self.tau
        return self.decay * v + x


@snnarena.hookimpl
def register_neurons(register: Register) -> None:
    register(LeakyIntegrateAndFire)
    register(IntegrateAndFire)
