# docs/examples/surrogate_plugin.py
"""A Gaussian surrogate gradient (``gaussian``).

Forward: the Heaviside step ``S = Θ(x)`` (``Θ(0) = 1``), which the base class provides.
Backward: ``dS/dx = exp(−x² / 2σ²) / (σ √(2π))``, the density of ``N(0, σ²)``, whose primitive is
the normal CDF ``½ (1 + erf(x / (σ √2)))``. Peak ``1 / (σ √(2π))`` (about 0.8 for σ = 0.5).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

import snnarena
from snnarena.neuron import Surrogate
from snnarena.params import Param
from snnarena.registry import Register

__version__ = "1.0"


class Gaussian(Surrogate):
    """Gaussian surrogate: dS/dx is the normal density with standard deviation σ."""

    name = "gaussian"
    PARAMS = (Param("sigma", "float", 0.5, "standard deviation σ (larger = wider)", low=1e-6),)

    def derivative(self, x: Tensor) -> Tensor:
        sigma = self.params["sigma"]
        return torch.exp(-0.5 * (x / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))

    def primitive(self, x: Tensor) -> Tensor:
        return 0.5 * (1 + torch.erf(x / (self.params["sigma"] * math.sqrt(2))))


@snnarena.hookimpl
def register_surrogates(register: Register) -> None:
    register(Gaussian)
