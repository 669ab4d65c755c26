"""Multi-step LIF/IF and ALIF layers with a hand-written backward pass.

``lif_sequence`` and ``alif_sequence`` run a neuron layer over all ``T`` steps of its input
current ``X`` ``[T, B, ...]`` as *one* autograd node: the forward loop runs without a graph and
keeps only what the backward pass needs, and the backward pass runs the reverse recurrence over
``T`` itself. The forward values are bit-for-bit those of ``T`` calls of the neuron's ``step``
(the same floating-point operations in the same order), and the gradients are those of autograd
through the unrolled steps up to float round-off (about 1e-15 relative in float64).

LIF/IF (equations in :mod:`snnarena_plugins.neurons`), per step with ``Z = H − V_th``,
``D = σ'(Z)`` (the surrogate's derivative) and ``g_H`` the gradient of ``H[t]``::

    g_H[t] = a[t] g_V[t] + D[t] g_S[t]         g_V[t−1] = λ g_H[t]         g_X[t] = c g_H[t]
    a = ∂V/∂H + ∂V/∂S'·D:   soft 1 − V_th D (detached: 1);  hard (1 − S) + (V_reset − H) D
                            (detached: 1 − S)

with ``c = 1/τ`` for ``decay_input`` (else 1) and ``g_V[T−1]`` the gradient of the final state.
Saved for backward: ``H`` ``[T, B, ...]`` in the input's dtype, nothing else (``Z``, ``S`` and
``D`` are recomputed from it exactly). ALIF (:class:`snnarena_plugins.neurons.AdaptiveLIF`) saves
``H`` and the threshold ``A`` ``[T, B, ..., N]`` and, with a refractory period, the mask
``1[r[t−1] = 0]`` as ``bool``.

Cost per layer on the CPU: two kernels per step forward for a hard reset to 0 (``addcmul``,
``lt``), three otherwise; backward, the surrogate's derivative and ``a`` for blocks of steps at
once (sized to stay in each thread's cache) and one ``addcmul`` per step. A
:class:`SpikeLinear` fed by a layer's whole spike train saves no copy of it: it keeps a reference
to the tensors the layer saved (``H``) and rebuilds the spikes from them for its weight gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from snnarena.neuron import Neuron, Surrogate


@dataclass(frozen=True)
class LIFConfig:
    """Constants of a LIF/IF layer. ``leak`` ``λ`` (IF: 1); ``input_divisor`` ``τ`` for
    ``decay_input`` (``H = λV + X/τ``), else ``None``."""

    leak: float
    input_divisor: float | None
    threshold: float
    hard_reset: bool
    v_reset: float
    detach_reset: bool


@dataclass(frozen=True)
class ALIFConfig:
    """Constants of an ALIF layer (symbols of :class:`snnarena_plugins.neurons.AdaptiveLIF`):
    ``leak`` ``λ``, ``input_divisor`` ``τ`` or ``None``, ``threshold`` ``V_th``, ``rho`` ``ρ``,
    ``beta`` ``β``, ``n_adaptive`` ``n_a`` (the first ``n_a`` neurons of the last dimension adapt),
    ``refractory`` ``n_ref``."""

    leak: float
    input_divisor: float | None
    threshold: float
    detach_reset: bool
    rho: float
    beta: float
    n_adaptive: int
    refractory: int


def set_fused(module: nn.Module, enabled: bool) -> None:
    """Turn the hand-written multi-step path on or off for every neuron in ``module`` (``fused``)."""
    for m in module.modules():
        if isinstance(m, Neuron):
            m.fused = enabled


def heaviside_surrogate(surrogate: Surrogate) -> bool:
    """Whether ``surrogate`` fires as :class:`~snnarena.neuron.Surrogate` does (``Θ(x)`` forward,
    ``derivative`` backward), which the hand-written backward passes assume."""
    return type(surrogate).__call__ is Surrogate.__call__


#: Input dtypes of the fused path: there its constants are 0-dim tensors of the input's dtype,
#: which give the bits of ``step``'s Python scalars (half types compute those in float32).
DTYPES = (torch.float32, torch.float64)


def fused_path_applies(neuron: Neuron, x: Tensor) -> bool:
    """What every neuron's fused path needs of ``neuron`` and its input ``X`` ``[T, B, ...]``:
    ``fused`` on, ``T > 0``, a dtype in :data:`DTYPES` and a :func:`heaviside_surrogate`. (Each
    neuron also checks that its ``step``/``charge`` are its own, not a subclass's.)"""
    return neuron.fused and x.shape[0] > 0 and x.dtype in DTYPES and heaviside_surrogate(neuron.surrogate)


def _constant(value: float, like: Tensor) -> Tensor:
    """``value`` as a 0-dim tensor of ``like``'s dtype and device (no scalar conversion per call)."""
    return torch.full((), value, dtype=like.dtype, device=like.device)


def _scaled_input(x: Tensor, divisor: float | None) -> Tensor:
    """``X/τ`` over all steps at once (the same division ``step`` does per step), or ``X``."""
    return x if divisor is None else x / divisor


# -- LIF / IF ---------------------------------------------------------------------------------------


def _lif_forward(x: Tensor, v: Tensor, cfg: LIFConfig) -> tuple[Tensor, Tensor, Tensor]:
    """``X`` ``[T, B, ...]``, ``V[−1]`` → spikes ``[T, B, ...]``, ``H`` ``[T, B, ...]``, ``V[T−1]``.

    Bit for bit ``step``'s values with fewer operations per step: the charge ``λ V + X`` is one
    ``addcmul`` ``X + (λ V)·1`` (the product by 1 is exact), ``Θ(H − V_th) = 1[H ≥ V_th]`` (IEEE
    subtraction keeps the sign), ``H − V_th S`` is one fused subtraction (``V_th·S`` is exact for
    ``S ∈ {0, 1}``) and the hard reset ``H (1 − S) + V_reset S`` is ``lerp(H, V_reset, S)``, exact at
    ``S ∈ {0, 1}``. A hard reset to 0 needs only ``K = 1[H < V_th]`` per step, ``H[t] = X[t] + (λ H[t−1])·K``
    (:func:`_lif_forward_reset_to_zero`)."""
    x = _scaled_input(x, cfg.input_divisor)
    if cfg.hard_reset and cfg.v_reset == 0.0:
        return _lif_forward_reset_to_zero(x, v, cfg)
    h, spikes = torch.empty_like(x), torch.empty_like(x)
    one, threshold, v_reset = (_constant(c, x) for c in (1.0, cfg.threshold, cfg.v_reset))
    after = torch.empty_like(v)  # V[t], overwritten each step once the next charge has read it
    for h_t, s_t, x_t in zip(h.unbind(0), spikes.unbind(0), x.unbind(0), strict=True):
        torch.addcmul(x_t, v, one, value=cfg.leak, out=h_t)
        torch.ge(h_t, threshold, out=s_t)
        if cfg.hard_reset:
            torch.lerp(h_t, v_reset, s_t, out=after)
        else:
            torch.sub(h_t, s_t, alpha=cfg.threshold, out=after)
        v = after
    return spikes, h, after


def _lif_forward_reset_to_zero(x: Tensor, v: Tensor, cfg: LIFConfig) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`_lif_forward` for the hard reset to ``V_reset = 0``: ``V[t] = H[t] K[t]`` with
    ``K = 1[H < V_th] = 1 − S``, so a step is ``H[t] = X[t] + (λ H[t−1])·K[t−1]`` and ``K[t]`` (two
    kernels, both exact against ``step``); the spikes of all steps are one comparison at the end."""
    h = torch.empty_like(x)
    threshold = _constant(cfg.threshold, x)
    keep, previous = _constant(1.0, x), v  # V[−1] is a state after its reset: K = 1
    below = torch.empty_like(v)
    for h_t, x_t in zip(h.unbind(0), x.unbind(0), strict=True):
        torch.addcmul(x_t, previous, keep, value=cfg.leak, out=h_t)
        torch.lt(h_t, threshold, out=below)
        keep, previous = below, h_t
    spikes = torch.empty_like(x)
    torch.ge(h, threshold, out=spikes)
    return spikes, h, below.mul_(h[-1])


#: Elements per block of steps (per CPU thread) whose backward terms are computed together on the
#: CPU: small enough to stay in a core's cache between their computation and the recurrence that
#: reads them. Other devices take all steps at once (fewer, larger kernels).
CPU_BLOCK_ELEMENTS = 1 << 15


def _blocks(steps: int, like: Tensor) -> list[tuple[int, int]]:
    """``[t0, t1)`` blocks of ``0 … steps − 1``, last block first (``like``: one step ``[B, ...]``)."""
    if like.device.type != "cpu":
        return [(0, steps)] if steps > 0 else []
    size = max(1, CPU_BLOCK_ELEMENTS * torch.get_num_threads() // max(1, like.numel()))
    return [(t0, min(t0 + size, steps)) for t0 in reversed(range(0, steps, size))]


def _lif_terms(h: Tensor, g_spikes: Tensor | None, out: Tensor, cfg: LIFConfig, surrogate: Surrogate) -> Tensor | None:
    """For ``H`` of some steps: writes ``D g_S`` into ``out`` (zeros without ``g_S``) and returns ``a``
    (``None`` when ``a = 1``), ``D = σ'(Z)``, ``Z = H − V_th``; ``1 − S = 1[Z < 0]`` (IEEE subtraction
    keeps the sign, as the forward's ``1[H < V_th]``)."""
    z = h - cfg.threshold
    a = torch.lt(z, 0.0, out=torch.empty_like(h)) if cfg.hard_reset else None  # 1 − S
    d = surrogate.derivative(z)
    if g_spikes is None:
        out.zero_()
    else:
        torch.mul(d, g_spikes, out=out)
    if a is not None:
        return a if cfg.detach_reset else a.addcmul_(cfg.v_reset - h, d)
    return None if cfg.detach_reset else d.mul_(-cfg.threshold).add_(1.0)  # 1 − V_th D


def _lif_backward(
    h: Tensor, g_spikes: Tensor | None, g_v: Tensor | None, cfg: LIFConfig, surrogate: Surrogate
) -> Tensor:
    """``g_H`` ``[T, B, ...]`` by the reverse recurrence (module docstring): per block of steps,
    ``D g_S`` and ``a`` for all its steps at once, then one in-place ``addcmul`` per step."""
    steps = h.shape[0]
    g_h = torch.empty_like(h)
    rows = g_h.unbind(0)

    def terms(t0: int, t1: int) -> Tensor | None:
        g_s = None if g_spikes is None else g_spikes[t0:t1]
        return _lif_terms(h[t0:t1], g_s, g_h[t0:t1], cfg, surrogate)

    # The last step: g_H = D g_S + a g_V with the final state's gradient g_V.
    a = terms(steps - 1, steps)
    if g_v is not None:
        rows[-1].add_(g_v) if a is None else rows[-1].addcmul_(a[0], g_v)
    # Earlier steps: g_H[t] = D[t] g_S[t] + λ a[t] g_H[t + 1].
    for t0, t1 in _blocks(steps - 1, h[0]):
        a = terms(t0, t1)
        if a is None:
            for t in range(t1 - 1, t0 - 1, -1):
                rows[t].add_(rows[t + 1], alpha=cfg.leak)
        else:
            for t, a_t in zip(range(t1 - 1, t0 - 1, -1), reversed(a.unbind(0)), strict=True):
                rows[t].addcmul_(a_t, rows[t + 1], value=cfg.leak)
    return g_h


class _LIFSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, v0: Tensor, cfg: LIFConfig, surrogate: Surrogate) -> tuple[Tensor, Tensor]:
        spikes, h, v = _lif_forward(x, v0, cfg)
        ctx.save_for_backward(h)
        ctx.cfg, ctx.surrogate = cfg, surrogate
        ctx.set_materialize_grads(False)
        return spikes, v

    @staticmethod
    def backward(ctx: Any, g_spikes: Tensor | None, g_v: Tensor | None) -> tuple[Tensor | None, ...]:
        (h,) = ctx.saved_tensors
        cfg: LIFConfig = ctx.cfg
        if g_spikes is None and g_v is None:
            return None, None, None, None
        g_h = _lif_backward(h, g_spikes, g_v, cfg, ctx.surrogate)
        g_x = g_v0 = None
        if ctx.needs_input_grad[1]:
            g_v0 = g_h[0] * cfg.leak
        if ctx.needs_input_grad[0]:
            g_x = g_h if cfg.input_divisor is None else g_h.div_(cfg.input_divisor)
        return g_x, g_v0, None, None


def lif_sequence(x: Tensor, v0: Tensor, cfg: LIFConfig, surrogate: Surrogate) -> tuple[Tensor, Tensor]:
    """A LIF/IF layer over ``X`` ``[T, B, ...]`` from ``V[−1] = v0`` ``[B, ...]`` → spikes
    ``[T, B, ...]`` (``X``'s dtype) and ``V[T−1]``; one autograd node (module docstring)."""
    spikes, v = _LIFSequence.apply(x, v0, cfg, surrogate)
    return spikes, v


# -- ALIF -------------------------------------------------------------------------------------------


def _adaptive_mask(like: Tensor, n_adaptive: int) -> Tensor | None:
    """``m_j`` ``[N]`` (1 for the first ``n_a`` neurons), or ``None`` when every neuron adapts."""
    n = like.shape[-1]
    if n_adaptive >= n:
        return None
    m = like.new_zeros(n)
    m[:n_adaptive] = 1
    return m


def _alif_forward(
    x: Tensor, state: tuple[Tensor, Tensor, Tensor], cfg: ALIFConfig
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, tuple[Tensor, Tensor, Tensor]]:
    """→ spikes, ``H``, ``A``, the refractory mask ``bool`` (or ``None``) and the final state;
    bit for bit ``step``'s values (the exact rewrites of :func:`_lif_forward`)."""
    v, b, r = state
    x = _scaled_input(x, cfg.input_divisor)
    h, a, spikes = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
    one, threshold = _constant(1.0, x), _constant(cfg.threshold, x)
    free = torch.empty(x.shape, dtype=torch.bool, device=x.device) if cfg.refractory > 0 else None
    free_rows = (None,) * x.shape[0] if free is None else free.unbind(0)
    n_adaptive = min(cfg.n_adaptive, x.shape[-1])
    for h_t, a_t, s_t, x_t, free_t in zip(
        h.unbind(0), a.unbind(0), spikes.unbind(0), x.unbind(0), free_rows, strict=True
    ):
        torch.addcmul(x_t, v, one, value=cfg.leak, out=h_t)  # X + (λ V)·1
        torch.addcmul(threshold, b, one, value=cfg.beta, out=a_t)  # V_th + (β b)·1
        torch.ge(h_t, a_t, out=s_t)
        if free_t is not None:
            torch.eq(r, 0, out=free_t)
            s_t.mul_(free_t)
        v = torch.addcmul(h_t, a_t, s_t, value=-1.0)  # H − A S
        b = b * cfg.rho
        if n_adaptive > 0:  # + (1 − ρ) m S, only where m = 1
            b[..., :n_adaptive].add_(s_t[..., :n_adaptive], alpha=1 - cfg.rho)
        if free_t is not None:
            r = torch.sub(r, 1).clamp_min_(0).add_(s_t, alpha=cfg.refractory)
    return spikes, h, a, free, (v, b, r)


class _ALIFSequence(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: Tensor, v0: Tensor, b0: Tensor, r0: Tensor, cfg: ALIFConfig, surrogate: Surrogate
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        spikes, h, a, free, (v, b, r) = _alif_forward(x, (v0, b0, r0), cfg)
        ctx.save_for_backward(h, a, free)
        ctx.cfg, ctx.surrogate = cfg, surrogate
        ctx.set_materialize_grads(False)
        r = r.clone() if r is r0 else r  # without a refractory period the countdown stays r[−1]
        ctx.mark_non_differentiable(r)
        return spikes, v, b, r

    @staticmethod
    def backward(
        ctx: Any, g_spikes: Tensor | None, g_v: Tensor | None, g_b: Tensor | None, _g_r: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        h, a, free = ctx.saved_tensors
        cfg: ALIFConfig = ctx.cfg
        g_x, g_v0, g_b0 = _alif_backward(h, a, free, g_spikes, g_v, g_b, cfg, ctx.surrogate)
        if cfg.input_divisor is not None:
            g_x = g_x.div_(cfg.input_divisor)
        return (
            g_x if ctx.needs_input_grad[0] else None,
            g_v0 if ctx.needs_input_grad[1] else None,
            g_b0 if ctx.needs_input_grad[2] else None,
            None,
            None,
            None,
        )


def _alif_backward(
    h: Tensor,
    a: Tensor,
    free: Tensor | None,
    g_spikes: Tensor | None,
    g_v: Tensor | None,
    g_b: Tensor | None,
    cfg: ALIFConfig,
    surrogate: Surrogate,
) -> tuple[Tensor, Tensor, Tensor]:
    """Reverse recurrence of ALIF, per step with ``D`` masked by ``1[r[t−1] = 0]``::

        g_S = g_S^out + (1 − ρ) m g_b[t] − A g_V[t] (not detached)     g_Z = D g_S
        g_H = g_V[t] + g_Z     g_A = −S g_V[t] − g_Z
        g_b[t−1] = ρ g_b[t] + β g_A     g_V[t−1] = λ g_H     g_X[t] = c g_H

    → ``g_H`` ``[T, ...]``, ``g_V[−1]``, ``g_b[−1]``; coefficients block by block."""
    gv = torch.zeros_like(h[0]) if g_v is None else g_v
    gb = torch.zeros_like(h[0]) if g_b is None else g_b
    g_x = torch.empty_like(h)
    m = _adaptive_mask(h, cfg.n_adaptive)
    adapt = (1 - cfg.rho) if m is None else m * (1 - cfg.rho)  # (1 − ρ) m
    for t0, t1 in _blocks(h.shape[0], h[0]):
        z = h[t0:t1] - a[t0:t1]
        fired = z >= 0
        d = surrogate.derivative(z)
        if free is not None:
            fired.logical_and_(free[t0:t1])
            d = d * free[t0:t1]
        s = fired.to(h.dtype)
        q = None if g_spikes is None else d * g_spikes[t0:t1]  # D g_S^out
        k = d * adapt  # (1 − ρ) m D
        n = None if cfg.detach_reset else a[t0:t1].neg().mul_(d)  # −A D
        for i in range(t1 - t0 - 1, -1, -1):
            g_z = k[i] * gb
            if q is not None:
                g_z.add_(q[i])
            if n is not None:
                g_z.addcmul_(n[i], gv)
            g_h = torch.add(gv, g_z, out=g_x[t0 + i])
            g_a = torch.addcmul(g_z, s[i], gv).neg_()  # −S g_V − g_Z
            gb = torch.add(gb * cfg.rho, g_a, alpha=cfg.beta)
            gv = g_h * cfg.leak
    return g_x, gv, gb


def alif_sequence(
    x: Tensor, state: tuple[Tensor, Tensor, Tensor], cfg: ALIFConfig, surrogate: Surrogate
) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
    """An ALIF layer over ``X`` ``[T, B, ..., N]`` from ``(V, b, r)[−1]`` → spikes ``[T, B, ..., N]``
    and ``(V, b, r)[T−1]``; one autograd node (the refractory countdown ``r`` carries no gradient)."""
    spikes, v, b, r = _ALIFSequence.apply(x, *state, cfg, surrogate)
    return spikes, (v, b, r)


# -- a linear synapse that does not keep its spike input --------------------------------------------


def _lif_spikes(saved: tuple[Tensor | None, ...], cfg: LIFConfig, dtype: torch.dtype) -> Tensor:
    """The spikes of a fused LIF/IF layer from its saved ``H``: ``1[H ≥ V_th]`` (as the forward)."""
    (h,) = saved
    assert h is not None
    return torch.ge(h, _constant(cfg.threshold, h), out=torch.empty(h.shape, dtype=dtype, device=h.device))


def _alif_spikes(saved: tuple[Tensor | None, ...], cfg: ALIFConfig, dtype: torch.dtype) -> Tensor:
    """The spikes of a fused ALIF layer from its saved ``H``, ``A`` and mask: ``1[H ≥ A] 1[r[t−1] = 0]``."""
    h, a, free = saved
    assert h is not None and a is not None
    fired = torch.ge(h, a)
    if free is not None:
        fired.logical_and_(free)
    return fired.to(dtype)


#: The autograd nodes of the fused layers (their output 0 is a spike train) and how each rebuilds
#: that spike train from what it saved for backward.
_SPIKE_REBUILDS: dict[type, Callable[[tuple[Tensor | None, ...], Any, torch.dtype], Tensor]] = {
    _LIFSequence._backward_cls: _lif_spikes,
    _ALIFSequence._backward_cls: _alif_spikes,
}


def is_fused_spikes(x: Tensor) -> bool:
    """Whether ``x`` (or the tensor it is a view of) is the spike output of :func:`lif_sequence` or
    :func:`alif_sequence`, hence holds only 0 and 1."""
    base = x if x._base is None else x._base
    return base.output_nr == 0 and type(base.grad_fn) in _SPIKE_REBUILDS


class SpikeSource(NamedTuple):
    """A fused layer's spike train as a function of the tensors that layer saved for backward:
    ``rebuild(tensors, config, dtype)`` gives the spikes ``[T, B, ...]`` (contiguous) in ``dtype``."""

    rebuild: Callable[[tuple[Tensor | None, ...], Any, torch.dtype], Tensor]
    config: Any
    tensors: tuple[Tensor | None, ...]


def spike_source(x: Tensor) -> SpikeSource | None:
    """How to rebuild ``x`` from what its fused layer saved, when ``x`` is that layer's whole spike
    output (or a contiguous reshape of all of it, e.g. ``[T·B, N]``); else ``None``."""
    if not is_fused_spikes(x):
        return None
    base = x if x._base is None else x._base
    whole = x.numel() == base.numel() and x.data_ptr() == base.data_ptr() and x.is_contiguous() and base.is_contiguous()
    if not whole:
        return None
    node: Any = base.grad_fn  # the fused layer's ctx: its config and saved tensors
    return SpikeSource(_SPIKE_REBUILDS[type(node)], node.cfg, tuple(node.saved_tensors))


class _BinaryLinear(torch.autograd.Function):
    """``X W^T + b`` for ``X`` ``[M, K]`` of 0/1 values. For the weight gradient ``g^T X`` it saves
    no copy of ``X``: with a :class:`SpikeSource` it saves the tensors the spiking layer already
    saved (the same storage) and rebuilds ``X`` from them; otherwise ``X`` as ``bool`` (4 or 8 times
    fewer bytes than float)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, source: SpikeSource | None) -> Tensor:
        kept: tuple[Tensor | None, ...] = ()
        if ctx.needs_input_grad[1]:
            kept = (x.to(torch.bool),) if source is None else source.tensors
        ctx.save_for_backward(weight, *kept)
        ctx.rebuild = None if source is None else (source.rebuild, source.config)
        ctx.x_shape, ctx.has_bias = x.shape, bias is not None
        return torch.nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        weight, *kept = ctx.saved_tensors
        g_x = grad.mm(weight) if ctx.needs_input_grad[0] else None
        g_w = g_b = None
        if ctx.needs_input_grad[1]:
            if ctx.rebuild is None:
                x = kept[0].to(grad.dtype)
            else:
                rebuild, config = ctx.rebuild
                x = rebuild(tuple(kept), config, grad.dtype).view(ctx.x_shape)
            g_w = grad.t().mm(x)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            g_b = grad.sum(0)
        return g_x, g_w, g_b, None


class SpikeLinear(nn.Linear):
    """``nn.Linear`` for the spikes of a fused LIF/IF/ALIF layer (``[M, K]``, 0/1): for the weight
    gradient it keeps no copy of its input, only a reference to what the spiking layer saved anyway
    (its whole output), or the input as ``bool`` (a part of it). On any other input: ``nn.Linear``."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2 and torch.is_grad_enabled() and is_fused_spikes(x):
            out: Tensor = _BinaryLinear.apply(x, self.weight, self.bias, spike_source(x))
            return out
        return super().forward(x)
