"""``ep``: Equilibrium Propagation in discrete time (Ernoult, Grollier, Querlioz, Bengio & Scellier,
NeurIPS 2019), and ``gdu``, the metric of its gradient-descending-updates (GDU) property.

**Method.** For a convergent model (:class:`~snnarena.model.ConvergentModel`) with a static input
``x = x[0]`` ``[B, ...]`` and the cell's loss ``ℓ`` (batch mean of the per-sample cost ``c_b``)::

    free phase     s* = s_T,           s_{t+1} = F(x, s_t),  s_0 = 0 (rest),  T = the suite's T
    nudged phase   s^β_0 = s*,          s^β_{t+1} = F(x, s^β_t) + ν(s^β_{t,L}),   t < K
                   ν(o) = −β ∂(B ℓ)/∂o  (on the output layer: −β ∂c_b/∂o_b per sample)
    update         p.grad += −(1/(β B)) (∂Φ/∂θ(x, s^β_K) − ∂Φ/∂θ(x, s*))        Φ summed over the batch

``ν`` is taken from ``loss.step`` on the output layer by autograd, so ``final_mse`` gives
``β (onehot(y) − o)`` (the code's nudge) and ``final`` gives ``β (onehot(y) − softmax(o))``.
Scaling the nudge by ``B`` makes ``β`` a per-sample strength, independent of the batch size, as in
the code (its update carries the same ``1/(βB)``). ``symmetric`` runs two nudged phases at ``±β``
and uses ``−(1/(2βB))(∂Φ/∂θ(s^β_K) − ∂Φ/∂θ(s^{−β}_K))``; ``random_sign`` draws the sign of ``β``
per batch (the paper's variant against the bias of a one-sided ``β``).

**Why this is K-step truncated BPTT (the GDU theorem).** Suppose one step is a gradient,
``F = ∂Φ/∂s`` (``ep_energy`` without clamping; ``ep_prototypical`` with ``dt = 1`` and ``ρ``
linear where the units are), and ``s*`` is a fixed point. The nudged phase is the free map of
``Φ − β B ℓ``. Differentiating in ``β`` at 0 (``H = ∂²Φ/∂s²`` at ``s*``, symmetric; ``g = ∂(Bℓ)/∂s``)::

    ṡ_{t+1} = H ṡ_t − g,  ṡ_0 = 0   ⇒   ṡ_{t+1} − ṡ_t = −H^t g

BPTT through ``K`` steps that start at ``s*`` (so every step sits at ``s*`` and has Jacobian
``Hᵀ = H``) has adjoint ``λ_{T−t} = H^t g`` at ``t`` steps before the end, and the parameters used
by the step into ``s_{T−t}`` receive ``∂²Φ/∂θ∂s · H^t g``. EP's per-step increment is
``(1/β)(∂Φ/∂θ(s^β_{t+1}) − ∂Φ/∂θ(s^β_t)) → ∂²Φ/∂θ∂s (ṡ_{t+1} − ṡ_t) = −∂²Φ/∂θ∂s H^t g``: the
negative BPTT contribution, step by step; summed over ``t < K`` it is ``−B`` times the gradient of
``ℓ`` through K-step truncated BPTT from the fixed point. The error is ``O(β)`` (the next Taylor
term in ``β``); the symmetric difference cancels the even terms, ``O(β²)``. With ``T`` a multiple
of ``K`` the host's ``tbptt`` with the same ``K`` computes exactly that truncated gradient (its last
segment; the others get no loss share) once the free phase has settled.

*ep_prototypical.* Its step is ``(1 − dt) s + dt ρ(∂Φ/∂s)``: with a non-linear ``ρ`` the Jacobian
``(1 − dt) I + dt diag(ρ') H`` is not symmetric and the parameter term carries ``dt ρ'``, so EP's
update differs from BPTT's by the factors ``ρ'`` (``≤ 1`` for ``sigm``/``tanh``; exact where
``hardsigm`` is inside ``(0, 1)``) — the paper's approximate GDU. Its ``phi`` omits the leak: for
``dt < 1`` the primitive of the linear map is ``(1 − dt)½‖s‖² + dt Φ``, whose ``θ``-gradient is
``dt ∂Φ/∂θ``, so this method's update is ``1/dt`` times the gradient (a rescaled step size; the
``gdu`` RMSE shows it). Use ``dt = 1`` (the paper's map) to compare with BPTT.

**Per-layer learning rates.** ``layer_lr`` (one factor per ``model.synapses[l]``, input side first)
multiplies the gradients of that module's parameters (``W_l`` and the bias ``b_{l+1}`` of the
layer it feeds, as the code's ``lr_tab`` covers ``w[i].weight`` and ``w[i].bias``). With SGD at
learning rate 1, ``layer_lr`` = the code's ``lr_tab`` reversed (it lists the output layer first)
is the code's update; an adaptive optimizer (Adam) largely normalises such scales away.

**Convergence check.** The free phase's residual ``r = max_{l,b,i} |s_l[T] − s_l[T−1]|`` bounds
how far the free dynamics alone still move the state; over the ``K`` nudged steps that drift
enters the update as about ``K r / β`` against an ``O(1)`` signal. The free phase has *settled*
when ``K r / β ≤ tolerance``. The method records every training batch's residual
(:attr:`EquilibriumPropagation.settling`); the ``gdu`` metric reports the probe's residual, whether
it settled, and the share of unsettled training batches. A non-finite state has residual NaN and
is never settled; its update is non-finite too, which fails the cell.

Memory: the phases run under ``torch.no_grad``; autograd keeps only the two states for the
``∂Φ/∂θ`` difference and one output layer for ``∂ℓ/∂o``: ``O(B·N)``, flat in ``T`` and ``K``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

import snnarena
from snnarena.claims import Check, Claim, Conditions
from snnarena.columns import Column
from snnarena.data import DataInfo
from snnarena.errors import ConfigurationError
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.method import GradientMethod
from snnarena.metric import CellContext, Metric, Series
from snnarena.model import ConvergentModel, SpikingModel
from snnarena.params import Param
from snnarena.registry import Register

State = list[Tensor]
_BETA_DOC = "nudging strength per sample (the code's beta; times dt for its leaky models)"
_TOLERANCE = Param(
    "tolerance", "float", 0.05, "settled when K * residual / beta <= tolerance (see the module docstring)", low=0.0
)


# -- shared pieces ------------------------------------------------------------------------------
def free_phase(model: ConvergentModel, x: Tensor, steps: int) -> tuple[State, float]:
    """The state after ``steps`` free steps from rest and its residual ``max |s[T] − s[T−1]|``
    (NaN when the state is not finite); ``x`` ``[B, ...]``."""
    before = model.relax(x, steps - 1)
    after = model.relax(x, 1, state=before)
    return after, residual(before, after)


def residual(before: State, after: State) -> float:
    """``max_{l,b,i} |after_l − before_l|``; NaN if any entry of ``after`` is not finite."""
    if not all(bool(torch.isfinite(s).all()) for s in after):
        return math.nan
    return max(float((a - b).abs().max()) for a, b in zip(after, before, strict=True))


def is_settled(residual_value: float, beta: float, K: int, tolerance: float) -> bool:
    """Whether the free dynamics' drift over ``K`` nudged steps, ``K r / |β|``, is within
    ``tolerance``; ``False`` for a NaN residual."""
    return not math.isnan(residual_value) and K * residual_value / abs(beta) <= tolerance


def loss_nudge(loss: SequenceLoss, y: Tensor, T: int, beta: float) -> Callable[[Tensor], Tensor]:
    """``ν(o) = −β ∂(B ℓ)/∂o`` ``[B, C]``: the per-sample cost's gradient on the output layer,
    from the cell's loss (its final step's share) by autograd on a detached copy of ``o``."""

    def nudge(o: Tensor) -> Tensor:
        with torch.enable_grad():
            leaf = o.detach().requires_grad_()
            (grad,) = torch.autograd.grad(loss.step(leaf, y, T, T - 1), leaf)
        return -beta * len(y) * grad

    return nudge


def phi_difference_grads(
    model: ConvergentModel, x: Tensor, a: State, b: State, params: Sequence[nn.Parameter]
) -> tuple[Tensor | None, ...]:
    """``∂/∂θ (Φ(x, a) − Φ(x, b))`` summed over the batch, the states held fixed (detached)."""
    with torch.enable_grad():
        value = model.phi(x, [s.detach() for s in a]).sum() - model.phi(x, [s.detach() for s in b]).sum()
        return torch.autograd.grad(value, list(params), allow_unused=True)


# -- the method -----------------------------------------------------------------------------------
@dataclass
class Settling:
    """The free phases a method ran: how many, how many had not settled, the last residual."""

    batches: int = 0
    unsettled: int = 0
    last_residual: float = math.nan

    def record(self, value: float, settled: bool) -> None:
        self.batches += 1
        self.unsettled += 0 if settled else 1
        self.last_residual = value

    @property
    def unsettled_fraction(self) -> float:
        return self.unsettled / self.batches if self.batches else math.nan


_SOURCE = "Ernoult et al., NeurIPS 2019 (arXiv 1905.13633)"
#: The paper's headline claim (its title): EP's updates follow BPTT's gradients step by step.
PAPER_CLAIMS = (
    Claim(
        "gdu-sign-agreement",
        "EP's cumulative updates have the sign of -(K-step truncated BPTT's gradients) on at least 90 % of the "
        "weights (the gradient-descending-updates property, measured by the gdu metric on the trained network).",
        f"{_SOURCE}, title and abstract; GDU theorem (Sec. 3), sign-agreement recipe of the official code",
        "title and abstract, confirmed (qualitative; the 90 % bar is ours)",
        Check("threshold", "gdu_sign_agreement", ">=", 0.9),
        Conditions(
            "prototypical networks on MNIST (784-512-10 ...), beta -> 0 (0.01 in the GDU figures), T = 150, K = 10",
            datasets=("mnist",),
            models=("ep_prototypical",),
            min_parameters=400_000,
            T=(150,),
        ),
    ),
    Claim(
        "gdu-rmse",
        "EP's cumulative updates match -(K-step truncated BPTT's gradients) step by step: relative RMSE below 0.1.",
        f"{_SOURCE}, title ('Updates of EP match gradients of BPTT'); RMSE of the official code (compute_Hist)",
        "title, confirmed (qualitative; the 0.1 bar is ours)",
        Check("threshold", "gdu_rmse", "<=", 0.1),
        Conditions(
            "prototypical networks on MNIST, beta -> 0 (0.01 in the GDU figures), T = 150, K = 10",
            datasets=("mnist",),
            models=("ep_prototypical",),
            min_parameters=400_000,
            T=(150,),
        ),
    ),
)


class EquilibriumPropagation(GradientMethod[SpikingModel]):
    """Free phase of ``T`` steps, nudged phase of ``K``, update from ``∂Φ/∂θ`` at the two states."""

    name = "ep"
    memory_class = "O(1)"
    families = frozenset({"convergent"})
    tasks = frozenset({"static_classification"})
    loss_forms = frozenset({"final", "final_mse"})
    CLAIMS = PAPER_CLAIMS
    PARAMS = (
        Param("K", "int", 10, "nudged-phase steps (the truncation of the BPTT it matches)", low=1),
        Param("beta", "float", 0.1, _BETA_DOC, low=1e-12),
        Param("symmetric", "bool", False, "two nudged phases at +beta and -beta (error O(beta^2))"),
        Param("random_sign", "bool", False, "draw the sign of beta per batch (one-sided phases only)"),
        Param(
            "layer_lr",
            "float_list",
            None,
            "gradient factor per model.synapses[l], input side first (the code's lr_tab reversed)",
            low=0.0,
            nullable=True,
            min_len=1,
        ),
        _TOLERANCE,
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        #: Every free phase :meth:`accumulate_gradients` ran (the ``gdu`` metric reports it).
        self.settling = Settling()

    def skip(self, model: SpikingModel, info: DataInfo, loss: SequenceLoss) -> str | None:
        reason = super().skip(model, info, loss)
        if reason is None and self.params["layer_lr"] is not None:
            self._layer_scales(model)  # a wrong length is the suite's error: raise now, not mid-training
        return reason

    def _layer_scales(self, model: nn.Module) -> dict[nn.Parameter, float]:
        """``{parameter: factor}`` from ``layer_lr`` (every parameter 1.0 without it)."""
        factors = self.params["layer_lr"]
        if factors is None:
            return {p: 1.0 for p in model.parameters()}
        layers = getattr(model, "synapses", None)
        if not isinstance(layers, nn.ModuleList) or len(layers) != len(factors):
            count = len(layers) if isinstance(layers, nn.ModuleList) else "no"
            raise ConfigurationError(
                f"ep: layer_lr has {len(factors)} factors but model {getattr(model, 'name', '')!r} has {count} "
                "synapse layers (model.synapses); give one factor per layer, input side first"
            )
        scales = {p: 1.0 for p in model.parameters()}
        for factor, layer in zip(factors, layers, strict=True):
            for p in layer.parameters():
                scales[p] = float(factor)
        return scales

    def _beta(self) -> float:
        beta = float(self.params["beta"])
        if self.params["random_sign"] and not self.params["symmetric"] and bool(torch.rand(()) < 0.5):
            return -beta
        return beta

    def accumulate_gradients(
        self, model: SpikingModel, x: Tensor, y: Tensor, loss: SequenceLoss, clock: PhaseClock
    ) -> float:
        assert isinstance(model, ConvergentModel), "ep trains convergent models only (see skip)"
        T, K, u, batch = x.shape[0], self.params["K"], x[0], len(y)
        beta = self._beta()
        with clock.phase("forward"), torch.no_grad():
            free, r = free_phase(model, u, T)
            self.settling.record(r, is_settled(r, beta, K, self.params["tolerance"]))
            value = float(loss.step(free[-1], y, T, T - 1))
            nudged = model.relax(u, K, state=free, nudge=loss_nudge(loss, y, T, beta))
            if self.params["symmetric"]:
                low = model.relax(u, K, state=free, nudge=loss_nudge(loss, y, T, -beta))
                scale = -1.0 / (2.0 * beta * batch)
            else:
                low, scale = free, -1.0 / (beta * batch)
        with clock.phase("backward"):
            params = [p for p in model.parameters() if p.requires_grad]
            grads = phi_difference_grads(model, u, nudged, low, params)
            factors = self._layer_scales(model)
            with torch.no_grad():
                for p, g in zip(params, grads, strict=True):
                    if g is None:
                        continue
                    step = g * (scale * factors[p])
                    p.grad = step if p.grad is None else p.grad + step
        return value


# -- the GDU metric -----------------------------------------------------------------------------
def _per_step_copies(model: ConvergentModel, steps: int) -> tuple[list[ConvergentModel], list[list[nn.Parameter]]]:
    """``steps`` independent copies of ``model`` (for the per-step BPTT contributions) and the
    trainable parameters of each, in ``model.parameters()`` order."""
    copies = [copy.deepcopy(model) for _ in range(steps)]
    return copies, [[p for p in c.parameters() if p.requires_grad] for c in copies]


def bptt_per_step(
    model: ConvergentModel, x: Tensor, y: Tensor, loss: SequenceLoss, start: State, K: int, T: int
) -> list[list[Tensor]]:
    """``∇BPTT_θ(t)`` for ``t < K``: the gradient of ``ℓ`` after ``K`` free steps from ``start``
    (detached) owed to the parameters as used by the step ``t`` steps before the end; one list
    of tensors per ``t``, in ``model.parameters()`` order. Each step runs on its own copy of the
    model, so one backward separates the contributions."""
    copies, params = _per_step_copies(model, K)
    s = [v.detach() for v in start]
    with torch.enable_grad():
        for step_model in copies:  # step k of K uses copies[k]; t = K − 1 − k steps before the end
            s = step_model.dynamics(x, s)
        grads = torch.autograd.grad(loss.step(s[-1], y, T, T - 1), [p for ps in params for p in ps], allow_unused=True)
    n = len(params[0])
    by_step = [list(grads[k * n : (k + 1) * n]) for k in range(K)]
    zeros = [torch.zeros_like(p) for p in params[0]]
    filled = [[z if g is None else g for g, z in zip(step, zeros, strict=True)] for step in by_step]
    return filled[::-1]  # index t: t steps before the end


def ep_per_step(
    model: ConvergentModel, x: Tensor, y: Tensor, loss: SequenceLoss, start: State, K: int, T: int, beta: float
) -> list[list[Tensor]]:
    """``ΔEP_θ(β, t) = (1/(βB))(∂Φ/∂θ(s^β_{t+1}) − ∂Φ/∂θ(s^β_t))`` for ``t < K``, nudged from ``start``."""
    params = [p for p in model.parameters() if p.requires_grad]
    nudge = loss_nudge(loss, y, T, beta)
    out = []
    s = start
    with torch.no_grad():
        for _ in range(K):
            nxt = model.relax(x, 1, state=s, nudge=nudge)
            grads = phi_difference_grads(model, x, nxt, s, params)
            out.append(
                [torch.zeros_like(p) if g is None else g / (beta * len(y)) for g, p in zip(grads, params, strict=True)]
            )
            s = nxt
    return out


def cumulative(per_step: list[list[Tensor]]) -> list[Tensor]:
    """Per parameter, the running sums over ``t`` ``[K, *shape]``."""
    return [torch.stack(curve).cumsum(0) for curve in zip(*per_step, strict=True)]


def gdu_rmse(N: Sequence[Tensor], D: Sequence[Tensor]) -> float:
    """The paper's RMSE between curves ``N`` and ``D`` (``[K, *shape]`` per parameter): per
    component ``sqrt(Σ_t (N_t − D_t)² / max(Σ_t N_t², Σ_t D_t²))`` (0 where both are identically 0),
    averaged over each tensor's components, then over the tensors."""
    means = []
    for n, d in zip(N, D, strict=True):
        scale = torch.maximum(n.pow(2).sum(0), d.pow(2).sum(0))
        err = (n - d).pow(2).sum(0)
        per_component = torch.where(scale > 0, (err / scale.clamp_min(torch.finfo(scale.dtype).tiny)).sqrt(), 0.0)
        means.append(float(per_component.mean()))
    return sum(means) / len(means)


def sign_agreement(N: Sequence[Tensor], D: Sequence[Tensor]) -> float:
    """Share of components whose final (cumulative, ``t = K − 1``) values have the same sign
    (both 0 counts as agreeing), over all parameters."""
    return sign_agreement_by_step(N, D)[-1]


def sign_agreement_by_step(N: Sequence[Tensor], D: Sequence[Tensor]) -> list[float]:
    """Per ``t < K``, the share of components where ``sign(N_t) = sign(D_t)`` (both 0 counts as
    agreeing), over all parameters; ``N``, ``D``: ``[K, *shape]`` per parameter."""
    agree = torch.stack([(torch.sign(n) == torch.sign(d)).flatten(1).sum(1) for n, d in zip(N, D, strict=True)])
    total = sum(n[0].numel() for n in N)
    return [int(a) / total for a in agree.sum(0)]


def error_by_step(N: Sequence[Tensor], D: Sequence[Tensor]) -> list[float]:
    """Per ``t < K``, the relative error ``|N_t − D_t| / max(|N_t|, |D_t|)`` per component (0 where
    both are 0; in ``[0, 2]``), averaged over each tensor's components, then over the tensors."""
    per_tensor = []
    for n, d in zip(N, D, strict=True):
        scale = torch.maximum(n.abs(), d.abs())
        relative = torch.where(scale > 0, (n - d).abs() / scale.clamp_min(torch.finfo(scale.dtype).tiny), 0.0)
        per_tensor.append(relative.flatten(1).mean(1))  # [K]
    return [float(v) for v in torch.stack(per_tensor).mean(0)]


@dataclass(frozen=True)
class GDUMeasure:
    """The GDU comparison on one batch (see :class:`GDU`); the ``*_by_step`` curves are empty
    when the free state diverged."""

    rmse: float
    sign_agreement: float
    residual: float
    settled: bool
    error_by_step: tuple[float, ...] = ()
    sign_agreement_by_step: tuple[float, ...] = ()


def measure_gdu(
    model: ConvergentModel, x: Tensor, y: Tensor, loss: SequenceLoss, beta: float, K: int, tolerance: float
) -> GDUMeasure:
    """Free phase of ``T = len(x)`` steps, then EP's cumulative updates against ``−`` the cumulative
    K-step truncated BPTT gradients from the reached state, on the static input ``x[0]``."""
    T, u = x.shape[0], x[0]
    with torch.no_grad():
        free, r = free_phase(model, u, T)
    settled = is_settled(r, beta, K, tolerance)
    if math.isnan(r):
        return GDUMeasure(math.nan, math.nan, r, False)
    D = cumulative(ep_per_step(model, u, y, loss, free, K, T, beta))
    N = [-c for c in cumulative(bptt_per_step(model, u, y, loss, free, K, T))]
    signs = sign_agreement_by_step(N, D)
    return GDUMeasure(gdu_rmse(N, D), signs[-1], r, settled, tuple(error_by_step(N, D)), tuple(signs))


class GDU(Metric):
    """EP's per-step updates against K-step truncated BPTT's gradients on the probe batch.

    On a float64 copy of the trained model (the model is left untouched): free phase of the
    cell's ``T`` steps on the probe's static input, then for ``t < K`` the cumulative EP update
    ``D_t = Σ_{k≤t} ΔEP_θ(β, k)`` and ``N_t = −Σ_{k≤t} ∇BPTT_θ(k)`` (the code's ``DT``/``NT``
    curves: the gradient of K-step truncated BPTT from the free state, split by the step that used
    the parameters). ``β`` and ``K`` are the cell's when its method is ``ep`` (one-sided, positive
    ``β``), else this metric's ``beta``/``K``; ``tolerance`` is ``ep``'s when it is ``ep``.

    Columns: ``gdu_rmse`` (the paper's RMSE, see :func:`gdu_rmse`; lower is better, 0 is exact),
    ``gdu_sign_agreement`` (share of weights and biases where ``sign(D_{K−1}) = sign(N_{K−1})``),
    ``free_phase_residual`` (``max |s[T] − s[T−1]|`` on the probe; NaN: the state diverged),
    ``settled`` (1 when ``K r/β ≤ tolerance``, else 0, never NaN), ``unsettled_train_batches``
    (``ep`` only: share of training batches whose free phase had not settled; NaN for other
    methods), ``gdu_beta`` and ``gdu_K`` (the values used). The GDU columns are computed whether
    or not the network settled; ``settled = 0`` says not to trust them.

    Series (the report's GDU curves, over ``t = 0 .. K−1``): ``gdu_error_by_step``
    (:func:`error_by_step`: ``|N_t − D_t| / max(|N_t|, |D_t|)``, mean over components) and
    ``gdu_sign_agreement_by_step`` (:func:`sign_agreement_by_step`; its last value is
    ``gdu_sign_agreement``); absent when the free state diverged.
    """

    name = "gdu"
    tasks = frozenset({"static_classification"})
    PARAMS = (
        Param("beta", "float", 0.01, "nudging strength when the cell's method is not ep", low=1e-12),
        Param("K", "int", 10, "nudged / truncated steps when the cell's method is not ep", low=1),
        _TOLERANCE,
    )
    columns = (
        Column("gdu_rmse", False, "", "ratio", "RMSE of EP's cumulative updates vs -K-step truncated BPTT (0: exact)"),
        Column("gdu_sign_agreement", True, "", "ratio", "share of parameters where EP's update has -BPTT's sign"),
        Column("free_phase_residual", False, "", "ratio", "max |s[T] - s[T-1]| of the free phase on the probe"),
        Column("settled", True, "", "ratio", "1 if K * residual / beta <= tolerance on the probe, else 0"),
        Column("unsettled_train_batches", False, "", "ratio", "ep: share of training batches not settled"),
        Column("gdu_beta", None, "", "ratio", "the beta the GDU measure used"),
        Column("gdu_K", None, "", "count", "the K the GDU measure used"),
    )
    series = (
        Series(
            "gdu_error_by_step",
            "nudged step t",
            "|D_t - N_t| / max(|D_t|, |N_t|)",
            False,
            "relative error of EP's cumulative update D_t vs -K-step truncated BPTT's N_t, mean over parameters",
        ),
        Series(
            "gdu_sign_agreement_by_step",
            "nudged step t",
            "share with sign(D_t) = sign(N_t)",
            True,
            "share of parameter components where EP's cumulative update D_t has the sign of -BPTT's N_t",
        ),
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._measured: tuple[CellContext, GDUMeasure] | None = None

    def settings(self, method: GradientMethod) -> tuple[float, int, float]:
        """``(β, K, tolerance)``: the ``ep`` method's, else this metric's."""
        source: Mapping[str, Any] = method.params if isinstance(method, EquilibriumPropagation) else self.params
        return abs(float(source["beta"])), int(source["K"]), float(source["tolerance"])

    def measure(self, ctx: CellContext) -> GDUMeasure:
        """The GDU comparison on ``ctx``'s probe (measured once per ``ctx``: ``compute`` and
        ``compute_series`` share it)."""
        if self._measured is None or self._measured[0] is not ctx:
            if not isinstance(ctx.model, ConvergentModel):
                raise ValueError(f"gdu measures convergent models; {ctx.model.name!r} is {ctx.model.family}")
            beta, K, tolerance = self.settings(ctx.method)
            model = copy.deepcopy(ctx.model).double()
            x, y = ctx.probe
            self._measured = (ctx, measure_gdu(model, x.double(), y, ctx.loss, beta, K, tolerance))
        return self._measured[1]

    def compute(self, ctx: CellContext) -> dict[str, float]:
        beta, K, _ = self.settings(ctx.method)
        found = self.measure(ctx)
        unsettled = (
            ctx.method.settling.unsettled_fraction if isinstance(ctx.method, EquilibriumPropagation) else math.nan
        )
        return {
            "gdu_rmse": found.rmse,
            "gdu_sign_agreement": found.sign_agreement,
            "free_phase_residual": found.residual,
            "settled": 1.0 if found.settled else 0.0,
            "unsettled_train_batches": unsettled,
            "gdu_beta": beta,
            "gdu_K": float(K),
        }

    def compute_series(self, ctx: CellContext) -> dict[str, list[float]]:
        found = self.measure(ctx)
        curves = {
            "gdu_error_by_step": found.error_by_step,
            "gdu_sign_agreement_by_step": found.sign_agreement_by_step,
        }
        return {name: list(v) for name, v in curves.items() if v and all(math.isfinite(x) for x in v)}


@snnarena.hookimpl
def register_gradient_methods(register: Register) -> None:
    register(EquilibriumPropagation)


@snnarena.hookimpl
def register_metrics(register: Register) -> None:
    register(GDU)
