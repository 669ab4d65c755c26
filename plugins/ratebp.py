"""``ratebp``: rate-based backpropagation (Yu, Liu, Wang, Li, Wang, NeurIPS 2024, arXiv 2410.11488).

Back-propagates through a rate-level copy of the network instead of through time.

**Phase 1** (spike forward, ``torch.no_grad``, all ``T`` steps). Per LIF/IF neuron of stage
``l`` (input current ``I[t]``, charge ``H[t] = λ V[t−1] + g I[t]`` with ``g = 1/τ`` if
``decay_input`` else 1, surrogate ``σ'``), keep running sums of

* the rate ``r = (1/T) Σ_t S[t]``;
* the eligibility ``e = (1/T) Σ_t κ[t] σ'(H[t] − V_th)``, where ``κ[t] = ∂H[t]/∂c̄`` is the
  sensitivity of the charge to a *constant* input current ``c̄``: ``κ[0] = g``,
  ``κ[t+1] = g + λ κ[t] ρ[t]`` with ``ρ = ∂V/∂H`` of the reset: soft + detached 1; soft
  ``1 − V_th σ'``; hard + detached ``1 − S``; hard ``1 − S + (V_reset − H) σ'``.

**Phase 2** (one rate-level forward of batch ``B``, not ``T·B``, with graph). From the mean
input ``c̄_0 = (1/T) Σ_t x[t]``, every stage computes ``c̄_l = synapse_l(r̂_{l−1})`` and returns
``r̂_l = r_l + e_l c̄_l − sg(e_l c̄_l)``: the value is the phase-1 rate and ``∂r̂_l/∂c̄_l = e_l``.
The logits are ``readout(r̂_L)``, equal to the time-averaged logits of the spike forward because
synapses and readout are affine; the loss is ``CE(mean_t o[t], y)`` (``loss_forms = {"rate"}``),
back-propagated once. Saved memory: ``e, r`` and one rate graph, ``O(L·B·N)``, constant in ``T``;
backward compute ``O(L)``, forward ``O(T·L)`` without graph. ``T = 1`` gives BPTT's gradient
exactly.

``step_mode``: ``"m"`` runs phase 1 layer by layer over all steps (synapse on ``[T·B, ...]``,
activations ``O(T·B·N)`` per layer, as the official ``rate_M``); ``"s"`` step by step through all
stages (activations ``O(L·B·N)``, as ``rate_S``). Both give the same gradient. Differences from
the official code (``Tab-ct/rate-based-backpropagation``): ``σ'`` is the neuron's own surrogate
(``eligibility_surrogate="sigmoid4"`` uses the official hard-coded ``α = 4`` sigmoid); ``ρ`` keeps
``V_th``, ``V_reset`` and ``detach_reset`` (the official code assumes ``V_th = 1`` and ignores
``detach_reset`` with hard reset) and ``g = 1/τ`` with ``decay_input``; rate_S feeds phase 2 the
mean input, not the last step's input; the gradient is not scaled by ``1/T`` unless
``official_grad_scale`` (the official ``CustomEvaluator`` scales it, a learning-rate factor);
BatchNorm (spike statistics as values, rate statistics as gradients in the official code) is not
implemented and skipped, as are non-LIF/IF neurons and non-affine synapses.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, NamedTuple

import torch
from torch import Tensor

import snnarena
from snnarena.claims import Check, Claim, Conditions
from snnarena.data import DataInfo
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.method import GradientMethod, Preset, affine_skip_reason
from snnarena.model import SpikingModel
from snnarena.params import Param
from snnarena.registry import Register
from snnarena_plugins.neurons import IntegrateAndFire

#: Slope of the sigmoid surrogate hard-coded in the official eligibility.
OFFICIAL_ALPHA = 4.0


class RateStats(NamedTuple):
    """Phase-1 statistics of one stage: rate ``r`` and eligibility ``e``, both ``[B, ...]``."""

    rate: Tensor
    elig: Tensor


class _Eligibility:
    """Running phase-1 sums of one LIF/IF stage (see the module docstring for the recursions)."""

    def __init__(self, neuron: IntegrateAndFire, official_surrogate: bool) -> None:
        self.neuron = neuron
        self.leak = neuron.leak
        self.gain = 1.0 / float(neuron.tau) if getattr(neuron, "decay_input", False) else 1.0  # type: ignore[attr-defined]
        self.official = official_surrogate
        self.state: Any = None
        self.kappa: Tensor | float = self.gain
        self.rate_sum: Tensor | float = 0.0
        self.elig_sum: Tensor | float = 0.0

    def derivative(self, x: Tensor) -> Tensor:
        if self.official:
            sig = torch.sigmoid(OFFICIAL_ALPHA * x)
            return OFFICIAL_ALPHA * sig * (1 - sig)
        return self.neuron.surrogate.derivative(x)

    def step(self, current: Tensor) -> Tensor:
        """One step on the input current ``[B, ...]``; returns the spikes ``[B, ...]``."""
        n = self.neuron
        if self.state is None:
            self.state = n.init_state(current)
        h = n.charge(current, self.state.v)
        spike, self.state = n.step(current, self.state)
        sg = self.derivative(h - n.v_threshold)
        self.elig_sum = self.elig_sum + self.kappa * sg
        self.rate_sum = self.rate_sum + spike
        if n.reset_mode == "soft":
            rho: Tensor | float = 1.0 if n.detach_reset else 1.0 - n.v_threshold * sg
        else:
            rho = 1.0 - spike if n.detach_reset else 1.0 - spike + (n.v_reset - h) * sg
        self.kappa = self.gain + self.leak * self.kappa * rho
        return spike

    def stats(self, T: int) -> RateStats:
        return RateStats(self.rate_sum / T, self.elig_sum / T)  # type: ignore[arg-type]


_PAPER = "Yu et al., NeurIPS 2024 (arXiv 2410.11488); research notes"
_OFFICIAL = "Tab-ct/rate-based-backpropagation"

#: ``ratebp@paper``: Yu et al.'s CIFAR setting and the official code's conventions.
PAPER = Preset(
    doc="rate-BP as in Yu et al. 2024 / Tab-ct/rate-based-backpropagation (CIFAR): LIF τ = 1.25 (decay 0.2) "
    "with soft detached reset, sigmoid(α = 4) in the eligibility, rate loss with the official 1/T "
    "gradient scale, SGD 0.1 / 0.9, wd 5e-4 on weights only, cosine annealing over the suite's budget. "
    "Not reproduced on the mlp: BatchNorm, augmentation.",
    params={"step_mode": "m", "eligibility_surrogate": "sigmoid4", "official_grad_scale": True},
    neuron={
        "name": "lif",
        "params": {"tau": 1.25, "decay_input": False, "v_threshold": 1.0, "reset": "soft", "detach_reset": True},
    },
    surrogate={"name": "sigmoid", "params": {"alpha": 4.0}},
    loss="rate",
    optimizer={
        "name": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "weight_decay_on": "weights",
        "schedule": "cosine",
    },
    sources={
        "params.step_mode": f"{_PAPER} §5(b), §12: rate_M (--step_mode m); rate_S gives the same gradient",
        "params.eligibility_surrogate": f"{_PAPER} §5(b), §12: sigmoid α = 4 hard-coded in the eligibility",
        "params.official_grad_scale": f"{_PAPER} §5(b), §12: CustomEvaluator scales the gradient by 1/T",
        "neuron.name": f"{_PAPER} §5(a): LIFLayer ({_OFFICIAL} model/layer.py)",
        "neuron.params.tau": f"{_PAPER} §5(c), §12: decay λ = 0.2, τ = 1/(1 − λ) = 1.25",
        "neuron.params.decay_input": f"{_PAPER} §5(b): κ[t+1] = 1 + λ κ[t], input gain 1 (decay_input=False)",
        "neuron.params.v_threshold": f"{_PAPER} §5(c), §12: θ = 1",
        "neuron.params.reset": f"{_PAPER} §5(c): v_reset=None (soft)",
        "neuron.params.detach_reset": f"{_PAPER} §5(c): detach_reset=True",
        "surrogate.name": f"{_PAPER} §5(b): sg_t = α σ(α(u − θ))(1 − σ(α(u − θ)))",
        "surrogate.params.alpha": f"{_PAPER} §5(b), §12: α = 4",
        "loss": f"{_PAPER} §5(b): CE of the mean output (rate)",
        "optimizer.name": f"{_PAPER} §5(c): SGD ({_OFFICIAL} experiment/cifar/config/config.py)",
        "optimizer.lr": f"{_PAPER} §5(c): lr 0.1",
        "optimizer.momentum": f"{_PAPER} §5(c): momentum 0.9",
        "optimizer.weight_decay": f"{_PAPER} §5(c): wd 5e-4 (on conv/linear weights only)",
        "optimizer.weight_decay_on": f"{_OFFICIAL}: the decay applies to conv and linear weights, not to biases "
        "or BatchNorm",
        "optimizer.schedule": f"{_PAPER} §5(c): cosine over 300 epochs (the suite's budget sets T_max)",
    },
)


_SOURCE = "Yu et al., NeurIPS 2024 (arXiv 2410.11488)"
_PAPER_SCALE = Conditions(
    "ResNet-18/19 and VGG-11/13 on CIFAR-10/100 and CIFAR10-DVS, T = 4 (10 on CIFAR10-DVS), one GPU",
    datasets=("cifar10", "cifar10_dvs"),
    models=("vgg_snn", "vgg11_ws", "preact_resnet18"),
    min_parameters=5_000_000,
    T=(4, 10),
    device="cuda",
)
PAPER_CLAIMS = (
    Claim(
        "accuracy-vs-bptt",
        "Reaches test accuracy comparable to BPTT's (within 2 points, paired by seed) under the same network.",
        f"{_SOURCE}, abstract ('comparable performance to BPTT counterparts'); the 2-point margin is ours",
        "abstract, confirmed; Tables 1-2 not verified",
        Check("difference", "test_accuracy", ">=", -0.02, reference="bptt"),
        _PAPER_SCALE,
    ),
    Claim(
        "memory-vs-bptt",
        "Saves less for the backward pass than BPTT (one rate-level graph instead of T steps).",
        f"{_SOURCE}, abstract ('reduce memory and computational demands'); complexity figure of the official code",
        "abstract, confirmed (no number)",
        Check("ratio", "peak_activation_bytes", "<", 1.0, reference="bptt"),
        _PAPER_SCALE,
    ),
    Claim(
        "backward-time-flat-in-T",
        "Its backward pass does not grow with T: slope of log backward time in log T below 0.25.",
        f"{_SOURCE}, complexity figure (backward O(L), BPTT O(LT)); official code doc/figure/fig1.png",
        "figure of the official repository, read visually",
        Check("slope", "backward_ms", "<", 0.25),
        Conditions("the paper's networks over T = 1 ... 8 (complexity figure)", T=(8,)),
    ),
)


class RateBP(GradientMethod[SpikingModel]):
    """Rate-based backpropagation: no-grad spike forward, then one rate-level backward."""

    name = "ratebp"
    memory_class = "O(1)"
    loss_forms = frozenset({"rate"})
    PRESETS = MappingProxyType({"paper": PAPER})
    CLAIMS = PAPER_CLAIMS
    PARAMS = (
        Param(
            "step_mode", "str", "m", "phase 1 layer by layer over all steps (m) or step by step (s)", choices=("m", "s")
        ),
        Param(
            "eligibility_surrogate",
            "str",
            "neuron",
            "surrogate derivative in the eligibility: the "
            "neuron's own, or the official hard-coded sigmoid with alpha 4",
            choices=("neuron", "sigmoid4"),
        ),
        Param(
            "official_grad_scale",
            "bool",
            False,
            "scale the gradient (not the loss value) by 1/T as the official CustomEvaluator does",
        ),
    )

    def skip(self, model: SpikingModel, info: DataInfo, loss: SequenceLoss) -> str | None:
        reason = super().skip(model, info, loss)
        if reason is not None:
            return reason
        reason = affine_skip_reason(
            self.name,
            model,
            readout=True,
            batch_norm="the official code normalises with spike statistics and differentiates through rate "
            "statistics; not implemented here",
        )
        if reason is not None:
            return reason
        for index, stage in enumerate(model.stages):
            if not isinstance(stage.neuron, IntegrateAndFire):
                return (
                    f"ratebp's eligibility is derived for LIF/IF neurons; stage {index} has "
                    f"{type(stage.neuron).__name__}"
                )
        return None

    def spike_phase(self, model: SpikingModel, x: Tensor) -> list[RateStats]:
        """Phase 1 without graph: rate and eligibility of every stage for ``x`` ``[T, B, ...]``."""
        T = x.shape[0]
        official = self.params["eligibility_surrogate"] == "sigmoid4"
        tracks = [_Eligibility(stage.neuron, official) for stage in model.stages]  # type: ignore[arg-type]
        with torch.no_grad():
            if self.params["step_mode"] == "m":
                h = x
                for stage, track in zip(model.stages, tracks, strict=True):
                    current = stage.synapse(h.flatten(0, 1)).unflatten(0, (T, h.shape[1]))
                    h = torch.stack([track.step(current[t]) for t in range(T)])
            else:
                for t in range(T):
                    h = x[t]
                    for stage, track in zip(model.stages, tracks, strict=True):
                        h = track.step(stage.synapse(h))
        return [track.stats(T) for track in tracks]

    def rate_phase(self, model: SpikingModel, x: Tensor, stats: list[RateStats]) -> Tensor:
        """Phase 2 with graph: rate-level logits ``[B, C]`` from the mean input and the stats."""
        h = x.mean(0).detach()
        for stage, (rate, elig) in zip(model.stages, stats, strict=True):
            drive = elig * stage.synapse(h)
            h = rate + (drive - drive.detach())
        out: Tensor = model.readout(h)
        return out

    def accumulate_gradients(
        self, model: SpikingModel, x: Tensor, y: Tensor, loss: SequenceLoss, clock: PhaseClock
    ) -> float:
        with clock.phase("forward"):
            stats = self.spike_phase(model, x)
            value = loss.full(self.rate_phase(model, x, stats).unsqueeze(0), y)
        with clock.phase("backward"):
            scale = 1.0 / x.shape[0] if self.params["official_grad_scale"] else 1.0
            (value * scale).backward()
        return float(value.detach())


@snnarena.hookimpl
def register_gradient_methods(register: Register) -> None:
    register(RateBP)
