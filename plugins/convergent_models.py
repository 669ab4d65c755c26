"""Built-in convergent models (``family = "convergent"``): layered networks that relax to a fixed
point under a static input, after Ernoult, Grollier, Querlioz, Bengio & Scellier, "Updates of
Equilibrium Prop Match Gradients of Backprop Through Time in an RNN with Static Input", NeurIPS
2019 (code: ``ernoult/updatesEPgradientsBPTT``, ``netClasses.py``).

* ``ep_prototypical``: the paper's prototypical setting (the code's ``EPdisc``), a discrete-time
  map ``s[t+1] = (1 − dt) s[t] + dt ρ(∂Φ/∂s(x, s[t]))`` with ``Φ`` a sum of bilinear terms;
* ``ep_energy``: the energy-based setting (the code's ``EPcont``), Euler steps of a Hopfield-like
  gradient flow ``s ← s − dt ∂E/∂s``, whose step is exactly ``∂Φ/∂s`` for ``Φ = ½‖s‖² − dt E``;
* ``ep_conv``: the prototypical setting with convolutions and max-pooling (the code's ``convEP``,
  the paper's first convolutional EP network); its drives ``∂Ψ/∂s`` come from autograd.

``ep_prototypical`` and ``ep_energy`` share one layout. The input ``x`` ``[B, *input_shape]`` is
flattened to ``s_0 = x`` ``[B, n_0]`` (held fixed: it is the static input, not a state). The state is ``s = [s_1, ...,
s_L]``, each ``s_l`` ``[B, n_l]``: the hidden layers from the input side, then the output layer
``s_L`` ``[B, C]`` (the logits of a step). Adjacent layers share one tied weight ``W_l``
``[n_{l+1}, n_l]`` (``l = 0 .. L−1``) used in both directions (``W_l`` upwards, ``W_lᵀ``
downwards), and each state layer has a bias ``b_l`` ``[n_l]``; ``W_0`` reads the input. The paper's
code orders the layers the other way (output ``s_0`` first, the input-side layer last:
``size_tab = [C, ..., n_1, n_0]``); its ``w[2i]`` is our ``W_{L−1−i}`` (same ``[out, in]``
orientation: ``nn.Linear(n_l, n_{l+1})``) and its biases sit on the same layers as ours.

Weights start as in the EP code, which builds them as ``nn.Linear`` with PyTorch's default
initialisation: ``W_l`` and ``b_{l+1}`` uniform in ``±1/√n_l`` (``n_l``: the input-side width).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor, nn

import snnarena
from snnarena.data import DataInfo
from snnarena.model import ConvergentModel, NeuronFactory
from snnarena.params import Param
from snnarena.registry import Register


class Activation(NamedTuple):
    """An activation ``ρ`` and its derivative ``ρ'`` (elementwise, any shape)."""

    rho: Callable[[Tensor], Tensor]
    rho_prime: Callable[[Tensor], Tensor]


def _sigm(x: Tensor) -> Tensor:
    """The EP code's ``sigm``: ``ρ(x) = 1 / (1 + exp(−4(x − ½)))`` (≈ 0 at 0, ≈ 1 at 1)."""
    return torch.sigmoid(4.0 * (x - 0.5))


def _sigm_prime(x: Tensor) -> Tensor:
    r = _sigm(x)
    return 4.0 * r * (1.0 - r)


def _tanh_prime(x: Tensor) -> Tensor:
    return 1.0 - torch.tanh(x).pow(2)


def _inside(x: Tensor) -> Tensor:
    return (x >= 0) & (x <= 1)


def _hardsigm(x: Tensor) -> Tensor:
    """``ρ(x) = clamp(x, 0, 1)`` whose autograd derivative is the EP code's ``ρ'``: 1 on the closed
    interval ``[0, 1]`` (``torch.clamp``'s backward is 0 at the bounds, which would freeze a layer
    at rest ``s = 0``)."""
    return torch.where(_inside(x), x, x.clamp(0.0, 1.0))


def _hardsigm_prime(x: Tensor) -> Tensor:
    return _inside(x).to(x.dtype)


#: The activations both models offer, by their ``activation`` parameter.
ACTIVATIONS: dict[str, Activation] = {
    "sigm": Activation(_sigm, _sigm_prime),
    "tanh": Activation(torch.tanh, _tanh_prime),
    "hardsigm": Activation(_hardsigm, _hardsigm_prime),
}

_HIDDEN = Param("hidden", "int_list", (100,), "widths of the hidden layers, input side first", low=1, min_len=1)
_ACTIVATION = Param(
    "activation",
    "str",
    "sigm",
    "rho: sigm 1/(1+exp(-4(x-1/2))), tanh, or hardsigm clamp(x, 0, 1)",
    choices=tuple(ACTIVATIONS),
)
_BIAS = Param("bias", "bool", True, "a bias b_l on every state layer")


class LayeredEPModel(ConvergentModel):
    """The layout both models share: tied weights ``W_l`` between adjacent layers (``synapses[l]``,
    an ``nn.Linear(n_l, n_{l+1})`` holding ``W_l`` and ``b_{l+1}``, maps ``s_l`` to ``s_{l+1}``;
    ``s_0 = x`` flattened), the activation ``ρ`` (:attr:`activation`) and the step size ``dt``."""

    def __init__(self, info: DataInfo, make_neuron: NeuronFactory, **params: Any) -> None:
        super().__init__(info, make_neuron, **params)
        widths = (math.prod(info.input_shape), *self.params["hidden"], info.n_classes)
        self.synapses = nn.ModuleList(
            nn.Linear(n_in, n_out, bias=self.params["bias"]) for n_in, n_out in zip(widths, widths[1:], strict=False)
        )
        self.activation = ACTIVATIONS[self.params["activation"]]
        self.dt: float = self.params["dt"]

    @property
    def linears(self) -> list[nn.Linear]:
        """``synapses`` typed: ``linears[l].weight`` is ``W_l`` ``[n_{l+1}, n_l]``, ``.bias`` ``b_{l+1}``."""
        return [cast(nn.Linear, m) for m in self.synapses]

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return tuple(w.out_features for w in self.linears)

    def _drives(self, x: Tensor, r: list[Tensor]) -> list[Tensor]:
        """``h_l = W_{l−1} r_{l−1} + b_l + W_lᵀ r_{l+1}`` ``[B, n_l]`` for ``l = 1 .. L`` (no
        ``W_Lᵀ`` term on the output layer), with ``r_0 = x`` flattened and ``r = [r_1 .. r_L]``."""
        linears = self.linears
        below = [x.flatten(1), *r[:-1]]
        drives = [w(s) for w, s in zip(linears, below, strict=True)]
        for l in range(len(drives) - 1):
            drives[l] = drives[l] + r[l + 1] @ linears[l + 1].weight
        return drives

    def _pairs(self, x: Tensor, r: list[Tensor]) -> Tensor:
        """``Σ_l r_{l+1} · (W_l r_l + b_{l+1})`` ``[B]``, with ``r_0 = x`` flattened."""
        below = [x.flatten(1), *r[:-1]]
        terms = [(w(s) * up).sum(-1) for w, s, up in zip(self.linears, below, r, strict=True)]
        return torch.stack(terms).sum(0)


class EPPrototypical(LayeredEPModel):
    """The prototypical setting of discrete-time EP (Ernoult et al. 2019; the code's ``EPdisc``).

    Coupling term, per sample (``s_0 = x`` ``[B, n_0]``, ``s_l`` ``[B, n_l]``)::

        Ψ(x, s) = Σ_{l=0}^{L−1} s_{l+1}ᵀ (W_l s_l + b_{l+1})                       [B]

    Its state gradient is the layer's drive, ``∂Ψ/∂s_l = W_{l−1} s_{l−1} + b_l + W_lᵀ s_{l+1}``
    (no ``W_Lᵀ`` term for the output layer), and one step is::

        s_l[t+1] = (1 − dt) s_l[t] + dt ρ(∂Ψ/∂s_l(x, s[t]))                       l = 1 .. L

    The primitive function is ``Φ = ½(1 − dt) Σ_l ‖s_l‖² + dt Ψ`` (``Φ = Ψ`` at ``dt = 1``): with
    ``ρ`` the identity, ``s[t+1] = ∂Φ/∂s`` exactly, so the leak is part of ``Φ`` and EP's parameter
    term ``∂Φ/∂θ = dt ∂Ψ/∂θ`` is scaled consistently with the nudge.

    all layers updated at once from ``s[t]``. ``dt = 1`` is the paper's ``s[t+1] = ρ(∂Φ/∂s)`` (the
    activation kept outside ``Ψ``, as the paper does); ``dt < 1`` is the code's leaky form
    ``s ← s + dt(−s + ρ(∂Ψ/∂s))`` (its default ``--dt`` is 0.2). With a non-linear ``ρ`` the step
    is not itself a gradient ``∂Φ'/∂s`` (its Jacobian ``(1 − dt) I + dt diag(ρ') W`` is not
    symmetric), so EP's updates only approximate BPTT's here, as in the paper's experiments.
    The code's nudge ``β(y − s)`` is inside the ``dt`` bracket: ``relax(..., nudge=lambda o:
    dt·β·(onehot(y) − o))`` reproduces it.
    EP's parameter term is ``∂Φ/∂W_l = dt s_{l+1} s_lᵀ`` and ``∂Φ/∂b_l = dt s_l`` (summed over the batch).
    """

    name = "ep_prototypical"
    PARAMS = (
        _HIDDEN,
        _ACTIVATION,
        Param("dt", "float", 1.0, "leak: s <- (1-dt) s + dt rho(dPhi/ds); 1 is the paper's map", low=1e-6, high=1.0),
        _BIAS,
    )

    def dynamics(self, x: Tensor, state: list[Tensor]) -> list[Tensor]:
        return _leaky_step(self.activation.rho, self.dt, state, self._drives(x, state))

    def phi(self, x: Tensor, state: list[Tensor]) -> Tensor:
        return _leaky_phi(self.dt, state, self._pairs(x, state))


class EPEnergy(LayeredEPModel):
    """The energy-based setting of discrete-time EP (Ernoult et al. 2019; the code's ``EPcont``).

    A Hopfield-like energy, per sample (``ρ(s_0) := s_0 = x`` ``[B, n_0]``)::

        E(x, s) = ½ Σ_{l=1}^{L} ‖s_l‖² − Σ_{l=0}^{L−1} ρ(s_{l+1})ᵀ (W_l ρ(s_l) + b_{l+1})      [B]
        ∂E/∂s_l = s_l − ρ'(s_l) ⊙ (W_{l−1} ρ(s_{l−1}) + b_l + W_lᵀ ρ(s_{l+1}))

    and one Euler step of the gradient flow ``ds/dt = −∂E/∂s`` (all layers at once)::

        s_l[t+1] = s_l[t] − dt ∂E/∂s_l(x, s[t])
                 = (1 − dt) s_l[t] + dt ρ'(s_l[t]) ⊙ (W_{l−1} ρ(s_{l−1}[t]) + b_l + W_lᵀ ρ(s_{l+1}[t]))

    EP's primitive function of this map is ``Φ(x, s) = ½ Σ_l ‖s_l‖² − dt E(x, s)`` [B]: then
    ``∂Φ/∂s = s − dt ∂E/∂s = s[t+1]`` exactly, and ``∂Φ/∂θ = −dt ∂E/∂θ`` (``∂Φ/∂W_l = dt
    ρ(s_{l+1}) ρ(s_l)ᵀ``, ``∂Φ/∂b_l = dt ρ(s_l)``). The code's nudge ``β(y − s_L)`` enters inside
    the ``dt`` bracket, i.e. ``nudge(o) = dt·β·(onehot(y) − o)`` here, and then EP's
    ``(1/(dt·β))(∂Φ/∂θ(s^β) − ∂Φ/∂θ(s*))`` is the code's update.

    ``clamp = true`` clips every layer to ``[0, 1]`` after each step (the code's default, without
    ``--no_clamp``): the step is then no longer ``∂Φ/∂s``, so EP's equivalence with BPTT is only
    approximate. Differences from the code: the output layer here carries ``ρ`` and ``ρ'`` like the
    hidden ones (the code drops them there, which is the same under clamping with ``hardsigm``), and
    the input enters as ``x`` (the code uses ``ρ(x)``: the same for ``hardsigm`` on inputs in
    ``[0, 1]``).
    """

    name = "ep_energy"
    PARAMS = (
        _HIDDEN,
        _ACTIVATION,
        Param("dt", "float", 0.2, "Euler step of the gradient flow (the code's default 0.2)", low=1e-6, high=1.0),
        Param("clamp", "bool", False, "clip the state to [0, 1] after each step (breaks the step = dPhi/ds identity)"),
        _BIAS,
    )

    def dynamics(self, x: Tensor, state: list[Tensor]) -> list[Tensor]:
        rho, rho_prime, dt = *self.activation, self.dt
        drives = self._drives(x, [rho(s) for s in state])
        new = [(1.0 - dt) * s + dt * rho_prime(s) * h for s, h in zip(state, drives, strict=True)]
        return [s.clamp(0.0, 1.0) for s in new] if self.params["clamp"] else new

    def energy(self, x: Tensor, state: list[Tensor]) -> Tensor:
        """``E(x, s)`` ``[B]`` (see the class docstring)."""
        rho = self.activation.rho
        return _half_square(state) - self._pairs(x, [rho(s) for s in state])

    def phi(self, x: Tensor, state: list[Tensor]) -> Tensor:
        return _half_square(state) - self.dt * self.energy(x, state)


def _leaky_step(rho: Callable[[Tensor], Tensor], dt: float, state: list[Tensor], drives: list[Tensor]) -> list[Tensor]:
    """The prototypical step ``s_l ← (1 − dt) s_l + dt ρ(h_l)`` from the drives ``h_l = ∂Ψ/∂s_l``."""
    if dt == 1.0:
        return [rho(h) for h in drives]
    return [(1.0 - dt) * s + dt * rho(h) for s, h in zip(state, drives, strict=True)]


def _leaky_phi(dt: float, state: list[Tensor], coupling: Tensor) -> Tensor:
    """``Φ = ½(1 − dt) Σ_l ‖s_l‖² + dt Ψ`` ``[B]`` for the coupling term ``Ψ`` (``Ψ`` at ``dt = 1``)."""
    if dt == 1.0:
        return coupling
    return (1.0 - dt) * _half_square(state) + dt * coupling


def _half_square(state: list[Tensor]) -> Tensor:
    """``½ Σ_l ‖s_l‖²`` per sample ``[B]``."""
    return 0.5 * torch.stack([s.pow(2).sum(-1) for s in state]).sum(0)


class EPConv(ConvergentModel):
    """The prototypical setting with convolutions (Ernoult et al. 2019; the code's ``convEP``).

    Input images ``x`` ``[B, C_0, H, W]``; layer ``l = 1 .. L_c`` is a feature map ``s_l`` ``[B,
    C_l, H/2^l, W/2^l]`` (stored flattened, ``[B, n_l]``, as the convergent contract asks), the
    output ``s_o`` ``[B, C]``. With ``P`` a 2×2 max-pooling and ``conv_l`` a ``k×k`` convolution
    (padding ``k // 2``, bias on ``s_{l+1}``), the coupling term is::

        Ψ(x, s) = Σ_{l=0}^{L_c−1} ⟨s_{l+1}, P(conv_l(s_l))⟩ + ⟨s_o, W_o s_{L_c} + b_o⟩      [B]

    with ``s_0 = x``, and one step is ``s_l[t+1] = (1 − dt) s_l[t] + dt ρ(∂Ψ/∂s_l(x, s[t]))``
    (all layers at once). The drive ``∂Ψ/∂s_l = conv_lᵀ(Pᵀ s_{l+1}) + P(conv_{l−1}(s_{l−1}))``
    (``Pᵀ`` un-pools to the arg-max of the forward pooling, as the code's ``max_unpool2d`` with the
    pooling indices) is computed by autograd of ``Ψ``, so a step is differentiable (BPTT through
    it takes second derivatives). The primitive function is ``Φ = ½(1 − dt) Σ_l ‖s_l‖² + dt Ψ``,
    as for ``ep_prototypical``. ``synapses`` lists the convolutions then the output layer (EP's
    ``layer_lr`` takes one factor per entry).
    """

    name = "ep_conv"
    PARAMS = (
        Param("channels", "int_list", (32, 64), "channels of the convolutional layers, input side first", low=1),
        Param("kernel", "int", 5, "convolution kernel size k (odd; padding k // 2)", low=1),
        Param(
            "activation",
            "str",
            "hardsigm",
            "rho: sigm 1/(1+exp(-4(x-1/2))), tanh, or hardsigm clamp(x, 0, 1) (the paper's conv net)",
            choices=tuple(ACTIVATIONS),
        ),
        Param("dt", "float", 1.0, "leak: s <- (1-dt) s + dt rho(dPsi/ds); 1 is the paper's map", low=1e-6, high=1.0),
    )

    @classmethod
    def skip(cls, info: DataInfo) -> str | None:
        reason = super().skip(info)
        if reason is None and len(info.input_shape) != 3:
            return f"ep_conv needs images [C, H, W]; the input is {list(info.input_shape)} (use flatten = false)"
        return reason

    def __init__(self, info: DataInfo, make_neuron: NeuronFactory, **params: Any) -> None:
        super().__init__(info, make_neuron, **params)
        if len(info.input_shape) != 3:
            raise ValueError(f"ep_conv needs images [C, H, W], got input shape {list(info.input_shape)}")
        if self.params["kernel"] % 2 == 0:
            raise ValueError(f"ep_conv: kernel must be odd, got {self.params['kernel']}")
        c, h, w = info.input_shape
        self.shapes: list[tuple[int, int, int]] = []
        convs: list[nn.Module] = []
        for out in self.params["channels"]:
            if h < 2 or w < 2:
                raise ValueError(
                    f"ep_conv: {len(self.params['channels'])} pooled layers shrink {info.input_shape} below 1x1"
                )
            convs.append(nn.Conv2d(c, out, self.params["kernel"], padding=self.params["kernel"] // 2))
            c, h, w = out, h // 2, w // 2
            self.shapes.append((c, h, w))
        self.synapses = nn.ModuleList([*convs, nn.Linear(c * h * w, info.n_classes)])
        self.pool = nn.MaxPool2d(2)
        self.activation = ACTIVATIONS[self.params["activation"]]
        self.dt: float = self.params["dt"]

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return (*(math.prod(shape) for shape in self.shapes), self.info.n_classes)

    def _coupling(self, x: Tensor, state: list[Tensor]) -> Tensor:
        """``Ψ(x, s)`` ``[B]``."""
        below = x
        terms = []
        for conv, shape, s_up in zip(self.synapses[:-1], self.shapes, state, strict=False):
            terms.append((self.pool(conv(below)).flatten(1) * s_up).sum(-1))
            below = s_up.unflatten(1, shape)
        terms.append((self.synapses[-1](below.flatten(1)) * state[-1]).sum(-1))
        return torch.stack(terms).sum(0)

    def _drives(self, x: Tensor, state: list[Tensor]) -> list[Tensor]:
        """``∂Ψ/∂s_l`` by autograd (kept differentiable when gradients are on, for BPTT)."""
        differentiable = torch.is_grad_enabled()
        with torch.enable_grad():
            s = [t if t.requires_grad else t.detach().requires_grad_() for t in state]
            grads = torch.autograd.grad(self._coupling(x, s).sum(), s, create_graph=differentiable)
        return list(grads) if differentiable else [g.detach() for g in grads]

    def dynamics(self, x: Tensor, state: list[Tensor]) -> list[Tensor]:
        return _leaky_step(self.activation.rho, self.dt, state, self._drives(x, state))

    def phi(self, x: Tensor, state: list[Tensor]) -> Tensor:
        return _leaky_phi(self.dt, state, self._coupling(x, state))


@snnarena.hookimpl
def register_models(register: Register) -> None:
    register(EPPrototypical)
    register(EPEnergy)
    register(EPConv)
