"""Built-in neurons: leaky integrate-and-fire (``lif``), integrate-and-fire (``if``) and the
adaptive LIF of LSNNs (``alif``, equations in :class:`AdaptiveLIF`).

With input current ``X[t]``, membrane ``V``, leak ``λ = 1 − 1/τ`` and threshold ``V_th``:

* charge, ``decay_input=False``: ``H[t] = λ V[t−1] + X[t]``;
  ``decay_input=True``: ``H[t] = λ V[t−1] + X[t]/τ`` (the input is leaked too);
* fire: ``S[t] = Θ(H[t] − V_th)`` with ``Θ(0) = 1`` and the surrogate's derivative backward;
* reset, ``soft``: ``V[t] = H[t] − V_th S'[t]``; ``hard``: ``V[t] = H[t](1 − S'[t]) + V_reset S'[t]``,
  where ``S' = S`` or ``S' = stop_grad(S)`` when ``detach_reset`` is set.

``forward_seq`` runs :func:`snnarena.multistep.lif_sequence` (one autograd node for all steps,
the same spikes, states and gradients) unless ``fused`` is off or a subclass changes ``step``.

``V[−1] = 0``. ``τ = 1`` gives ``λ = 0``: no memory across steps (with soft reset and
``decay_input=False``, ``H[t] = X[t]``). IF is LIF without leak (``λ = 1``, ``decay_input=False``).
Shapes: ``X``, ``S``, ``V`` are ``[B, ...]``; the state is ``LIFState(v)``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

import snnarena
from snnarena.multistep import ALIFConfig, LIFConfig, alif_sequence, fused_path_applies, lif_sequence
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

    def sequence_config(self) -> LIFConfig:
        """The constants of :func:`~snnarena.multistep.lif_sequence` for this neuron."""
        return LIFConfig(
            leak=1.0,
            input_divisor=None,
            threshold=self.v_threshold,
            hard_reset=self.reset_mode == "hard",
            v_reset=self.v_reset,
            detach_reset=self.detach_reset,
        )

    def forward_seq(self, x: Tensor, state: LIFState | None = None) -> tuple[Tensor, LIFState]:
        """``X`` ``[T, B, ...]`` → spikes ``[T, B, ...]`` and ``V[T−1]``, through the fused path
        when it applies (same values as ``T`` calls of :meth:`step`)."""
        if not self._fused_applies(x):
            return super().forward_seq(x, state)
        state = self.init_state(x[0]) if state is None else state
        spikes, v = lif_sequence(x, state.v, self.sequence_config(), self.surrogate)
        return spikes, LIFState(v)

    def _fused_applies(self, x: Tensor) -> bool:
        """:func:`~snnarena.multistep.fused_path_applies` and the dynamics are this module's
        (``step``/``charge`` not overridden by a subclass)."""
        own_charge = (IntegrateAndFire.charge, LeakyIntegrateAndFire.charge)
        return (
            fused_path_applies(self, x) and type(self).step is IntegrateAndFire.step and type(self).charge in own_charge
        )


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

    def sequence_config(self) -> LIFConfig:
        return replace(super().sequence_config(), leak=self.decay, input_divisor=self.tau if self.decay_input else None)


class ALIFState(NamedTuple):
    """State of an :class:`AdaptiveLIF` layer after step ``t``, every field ``[B, ..., N]``.

    ``v``: membrane ``V[t]`` after the reset; ``b``: adaptation ``b[t]`` (``0`` for neurons that do
    not adapt); ``refractory``: steps left during which the neuron cannot spike (a float countdown,
    ``0`` when it may spike; always ``0`` with ``refractory = 0``).
    """

    v: Tensor
    b: Tensor
    refractory: Tensor


class AdaptiveLIF(Neuron):
    r"""Adaptive LIF (ALIF) of LSNNs (Bellec et al., NeurIPS 2018): a LIF neuron whose threshold
    rises with each of its spikes and relaxes back with time constant ``τ_a``.

    Input current ``X[t]`` ``[B, ..., N]``; leak ``λ = 1 − 1/τ``; ``ρ = exp(−1/τ_a)``; per neuron
    ``j`` (last dimension, ``N`` neurons) ``β_j = β`` for ``j < n_a = round(f·N)`` (Python's
    ``round``, ``f = adaptive_fraction``) and ``β_j = 0`` otherwise; ``m_j = 1[j < n_a]``::

        H[t] = λ V[t−1] + X[t]          (decay_input: λ V[t−1] + X[t]/τ)
        A[t] = V_th + β_j b[t−1]                     adaptive threshold (b of the previous step)
        S[t] = Θ(H[t] − A[t]) · 1[r[t−1] = 0]        surrogate(x = H − A) backward
        V[t] = H[t] − A[t] S'[t]                     reset by the adaptive threshold
        b[t] = ρ b[t−1] + (1 − ρ) m_j S[t]
        r[t] = max(r[t−1] − 1, 0) + n_ref stop_grad(S[t])

    with ``V[−1] = b[−1] = r[−1] = 0``, ``Θ(0) = 1`` and ``S' = S``, or ``stop_grad(S)`` when
    ``detach_reset`` is set (the reset's ``A[t]`` keeps its gradient; ``b`` uses ``S``).
    ``n_ref = refractory``: after a spike at ``t`` the neuron cannot spike at ``t+1 … t+n_ref``
    (its membrane still integrates). The refractory mask multiplies the spike, so ``∂S/∂H = 0``
    during those steps (the pseudo-derivative is gated like the spike, as e-prop's ``ψ``); the
    countdown ``r`` is integer-valued and carries no gradient. Neurons with ``m_j = 0`` keep
    ``b ≡ 0`` (with ``β_j = 0`` their ``b`` could not act anyway). With ``β = 0`` or ``f = 0`` and
    ``n_ref = 0`` this is ``lif`` with ``reset = "soft"`` exactly. An LSNN is ``rsnn`` with this
    neuron and ``0 < f < 1`` (a LIF/ALIF mix); Bellec et al.'s pseudo-derivative
    ``γ max(0, 1 − |H − A|/V_th)/V_th`` is the ``bellec`` surrogate with ``width = V_th``.
    State: :class:`ALIFState` ``(v, b, refractory)``, each shaped like ``X[t]``.
    """

    name = "alif"
    PARAMS = (
        Param("tau", "float", 2.0, "membrane time constant τ in steps (λ = 1 − 1/τ)", low=1.0),
        Param("decay_input", "bool", False, "scale the input by 1/τ (as lif)"),
        Param("v_threshold", "float", 1.0, "baseline threshold V_th", low=1e-9),
        Param("detach_reset", "bool", False, "stop the gradient through the spike of the reset term"),
        Param("tau_adapt", "float", 100.0, "adaptation time constant τ_a in steps (ρ = exp(−1/τ_a))", low=1.0),
        Param("beta", "float", 1.8, "threshold increase per unit of adaptation b (0: no adaptation)", low=0.0),
        Param("adaptive_fraction", "float", 1.0, "fraction f of the layer's neurons that adapt", low=0.0, high=1.0),
        Param("refractory", "int", 0, "steps after a spike during which the neuron cannot spike", low=0),
    )

    def __init__(self, surrogate: Surrogate, **params: Any) -> None:
        super().__init__(surrogate, **params)
        self.tau = float(self.params["tau"])
        self.decay = 1.0 - 1.0 / self.tau
        self.decay_input = bool(self.params["decay_input"])
        self.v_threshold = float(self.params["v_threshold"])
        self.detach_reset = bool(self.params["detach_reset"])
        self.rho = math.exp(-1.0 / float(self.params["tau_adapt"]))
        self.beta = float(self.params["beta"])
        self.adaptive_fraction = float(self.params["adaptive_fraction"])
        self.n_refractory = int(self.params["refractory"])

    @property
    def leak(self) -> float:
        return self.decay

    def n_adaptive(self, n: int) -> int:
        """How many of a layer's ``n`` neurons adapt: ``round(f·n)``, the first ones."""
        return round(self.adaptive_fraction * n)

    def betas(self, like: Tensor) -> Tensor:
        """``β_j`` ``[N]`` for a layer whose last dimension is ``like``'s (dtype and device of ``like``)."""
        n = like.shape[-1]
        beta = like.new_zeros(n)
        beta[: self.n_adaptive(n)] = self.beta
        return beta

    def init_state(self, x: Tensor) -> ALIFState:
        return ALIFState(torch.zeros_like(x), torch.zeros_like(x), torch.zeros_like(x))

    def charge(self, x: Tensor, v: Tensor) -> Tensor:
        """The membrane before firing, ``H[t]``."""
        if self.decay_input:
            return self.decay * v + x / self.tau
        return self.decay * v + x

    def step(self, x: Tensor, state: ALIFState) -> tuple[Tensor, ALIFState]:
        h = self.charge(x, state.v)
        threshold = self.v_threshold + self.beta * state.b  # b ≡ 0 where β_j = 0
        spike = self.surrogate(h - threshold)
        if self.n_refractory > 0:
            spike = spike * (state.refractory == 0).to(spike.dtype)
        s = spike.detach() if self.detach_reset else spike
        v = h - threshold * s
        b = self.rho * state.b + (1 - self.rho) * self._adaptive_part(spike)
        refractory = state.refractory
        if self.n_refractory > 0:
            refractory = (refractory - 1).clamp_min(0) + self.n_refractory * spike.detach()
        return spike, ALIFState(v, b, refractory)

    def sequence_config(self, n: int) -> ALIFConfig:
        """The constants of :func:`~snnarena.multistep.alif_sequence` for a layer of ``n`` neurons."""
        return ALIFConfig(
            leak=self.decay,
            input_divisor=self.tau if self.decay_input else None,
            threshold=self.v_threshold,
            detach_reset=self.detach_reset,
            rho=self.rho,
            beta=self.beta,
            n_adaptive=self.n_adaptive(n),
            refractory=self.n_refractory,
        )

    def forward_seq(self, x: Tensor, state: ALIFState | None = None) -> tuple[Tensor, ALIFState]:
        """``X`` ``[T, B, ..., N]`` → spikes and the state after step ``T − 1``, through
        :func:`~snnarena.multistep.alif_sequence` unless ``fused`` is off or a subclass changes
        ``step``/``charge`` (same values as ``T`` calls of :meth:`step`)."""
        fused = (
            fused_path_applies(self, x)
            and type(self).step is AdaptiveLIF.step
            and type(self).charge is AdaptiveLIF.charge
        )
        if not fused:
            return super().forward_seq(x, state)
        state = self.init_state(x[0]) if state is None else state
        spikes, (v, b, r) = alif_sequence(
            x, (state.v, state.b, state.refractory), self.sequence_config(x.shape[-1]), self.surrogate
        )
        return spikes, ALIFState(v, b, r)

    def _adaptive_part(self, spike: Tensor) -> Tensor:
        """``m_j S[t]``: the spikes of the adaptive neurons, zeros elsewhere."""
        n = spike.shape[-1]
        k = self.n_adaptive(n)
        return spike if k == n else F.pad(spike[..., :k], (0, n - k))


@snnarena.hookimpl
def register_neurons(register: Register) -> None:
    register(LeakyIntegrateAndFire)
    register(IntegrateAndFire)
    register(AdaptiveLIF)
