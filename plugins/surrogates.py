"""Built-in surrogate gradients for the Heaviside spike function.

Forward: ``S = Θ(x)`` with ``Θ(x) = 1`` for ``x >= 0`` (``x = H - V_th``). Backward: the
derivative below. ``primitive`` is a smooth step whose derivative is exactly that surrogate.

=============  ==========================================  =========================
name           dS/dx                                       default
=============  ==========================================  =========================
sigmoid        α σ(αx) (1 − σ(αx))                         α = 4 (peak 1)
atan           (α/2) / (1 + (π α x / 2)²)                  α = 2 (peak 1)
fast_sigmoid   1 / (1 + k |x|)²  (SuperSpike)              k = 25 (peak 1)
triangle       max(0, α − α² |x|)                          α = 1 (peak α)
rectangle      (1/a) · 1[|x| < a/2]                        a = 1 (height 1/a)
bellec         (γ/w) max(0, 1 − |x|/w)                     γ = 0.3, w = 1 (peak γ/w)
=============  ==========================================  =========================

``bellec`` is the pseudo-derivative of LSNNs and e-prop (Bellec et al. 2018, 2020),
``dS/dv_s = γ max(0, 1 − |v_s|)`` with ``v_s = x / V_th``: set ``width`` to the neuron's
``v_threshold``. ``triangle`` with ``α = 1/V_th`` is the same shape with ``γ = 1``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

import snnarena
from snnarena.neuron import Surrogate
from snnarena.params import Param
from snnarena.registry import Register

_WIDTH = Param("alpha", "float", 1.0, "sharpness (larger = narrower)", low=1e-6)


class Sigmoid(Surrogate):
    """Sigmoid surrogate: dS/dx = α σ(αx)(1 − σ(αx)), the derivative of σ(αx)."""

    name = "sigmoid"
    PARAMS = (Param("alpha", "float", 4.0, "slope of σ(αx)", low=1e-6),)

    def derivative(self, x: Tensor) -> Tensor:
        a = self.params["alpha"]
        s = torch.mul(x, a).sigmoid_()  # in place where possible: the fused backward calls this per block
        return s.mul(a).mul_(torch.rsub(s, 1))

    def primitive(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.params["alpha"] * x)


class ATan(Surrogate):
    """Arctangent surrogate: dS/dx = (α/2) / (1 + (παx/2)²)."""

    name = "atan"
    PARAMS = (Param("alpha", "float", 2.0, "width parameter α", low=1e-6),)

    def derivative(self, x: Tensor) -> Tensor:
        a = self.params["alpha"]
        t = torch.mul(x, math.pi * a).div_(2)
        return t.mul_(t).add_(1).reciprocal_().mul_(a / 2)

    def primitive(self, x: Tensor) -> Tensor:
        a = self.params["alpha"]
        return torch.atan(math.pi * a * x / 2) / math.pi + 0.5


class FastSigmoid(Surrogate):
    """Fast sigmoid (SuperSpike): dS/dx = 1 / (1 + k|x|)², the derivative of x / (1 + k|x|)."""

    name = "fast_sigmoid"
    PARAMS = (Param("slope", "float", 25.0, "slope k", low=1e-6),)

    def derivative(self, x: Tensor) -> Tensor:
        t = x.abs().mul_(self.params["slope"]).add_(1)
        return t.mul_(t).reciprocal_()

    def primitive(self, x: Tensor) -> Tensor:
        return x / (1 + self.params["slope"] * x.abs())


class Triangle(Surrogate):
    """Triangle (piecewise quadratic primitive): dS/dx = max(0, α − α²|x|)."""

    name = "triangle"
    PARAMS = (_WIDTH,)

    def derivative(self, x: Tensor) -> Tensor:
        a = self.params["alpha"]
        return x.abs().mul_(a * a).neg_().add_(a).clamp_min_(0)

    def primitive(self, x: Tensor) -> Tensor:
        a = self.params["alpha"]
        z = (a * x).clamp(-1, 1)
        return torch.where(z < 0, (z + 1) ** 2 / 2, 1 - (1 - z) ** 2 / 2)


class Rectangle(Surrogate):
    """Rectangle (straight-through within a window): dS/dx = (1/a) · 1[|x| < a/2]."""

    name = "rectangle"
    PARAMS = (Param("width", "float", 1.0, "window width a", low=1e-6),)

    def derivative(self, x: Tensor) -> Tensor:
        a = self.params["width"]
        return (x.abs() < a / 2).to(x.dtype) / a

    def primitive(self, x: Tensor) -> Tensor:
        a = self.params["width"]
        return (x / a + 0.5).clamp(0, 1)


class Bellec(Surrogate):
    """LSNN/e-prop pseudo-derivative: dS/dx = (γ/w) max(0, 1 − |x|/w), with ``w = V_th``."""

    name = "bellec"
    PARAMS = (
        Param("gamma", "float", 0.3, "dampening factor γ (Bellec et al.: 0.3)", low=1e-6),
        Param("width", "float", 1.0, "half-width w; the neuron's v_threshold normalises as in the paper", low=1e-9),
    )

    def derivative(self, x: Tensor) -> Tensor:
        gamma, w = self.params["gamma"], self.params["width"]
        return x.abs().div_(w).neg_().add_(1).clamp_min_(0).mul_(gamma / w)

    def primitive(self, x: Tensor) -> Tensor:
        z = (x / self.params["width"]).clamp(-1, 1)
        return self.params["gamma"] * torch.where(z < 0, (z + 1) ** 2 / 2, 1 - (1 - z) ** 2 / 2)


@snnarena.hookimpl
def register_surrogates(register: Register) -> None:
    for cls in (Sigmoid, ATan, FastSigmoid, Triangle, Rectangle, Bellec):
        register(cls)
