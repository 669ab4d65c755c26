"""``sltt``: Spatial Learning Through Time and SLTT-K (Meng et al., ICCV 2023, arXiv 2302.14311).

BPTT's error at the membrane splits into a spatial part (from the next layer at the same step)
and a temporal part (from the same neuron at the next step). SLTT keeps only the spatial part:
the neuron state is detached before every step, ``H[t] = λ sg(V[t−1]) + I[t]``, and the per-step
loss ``L[t] = CE(o[t], y)/T`` is back-propagated right after step ``t``, so

``∇W^l ≈ Σ_t δ^l[t] S^{l−1}[t]ᵀ``   (OTTT with a trace decay of 0).

Only one step's graph is alive: saved memory ``O(L·B·N)``, constant in ``T``; backward compute
``O(T·L)``. **SLTT-K** (``k`` set): per batch ``k`` distinct steps are drawn from torch's global RNG
(``torch.randperm(T)[:k]``, as the official ``train_SLTTK.py``); the other steps run under
``torch.no_grad()`` and only the chosen ones back-propagate their loss, still divided by ``T``
(not ``k``): backward compute ``O(k·L)``, independent of ``T``. The returned loss sums all ``T``
steps. One optimizer step per batch. ``loss_lambda = λ > 0`` optimises the official loss
``((1 − λ) CE(o[t], y) + λ MSE(o[t], g))/T`` with ``g`` the constant ``loss_means`` (a regulariser)
or, with ``loss_means = null``, the one-hot label (``-mse_n_reg``): a different objective from the
suite's, while gradient fidelity still compares with BPTT on the suite's loss. BatchNorm is
applied per step, as in the official code.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

import snnarena
from snnarena.claims import Check, Claim, Conditions
from snnarena.data import DataInfo
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.method import GradientMethod, Preset
from snnarena.model import SpikingModel
from snnarena.neuron import detach_state
from snnarena.params import Param
from snnarena.registry import Register
from snnarena.task import TASK_KINDS
from snnarena_plugins.ottt import mixed_step_loss, mse_skip_reason

_PAPER = "Meng et al., ICCV 2023 (arXiv 2302.14311); research notes"
_OFFICIAL = "qymeng94/SLTT"

#: ``sltt@paper``: Meng et al.'s CIFAR-10 setting (SLTT, every step back-propagated).
PAPER = Preset(
    doc="SLTT as in Meng et al. 2023 / qymeng94/SLTT (CIFAR-10): LIF τ = 1.1 with decay_input=false and "
    "soft reset, triangle surrogate (PiecewiseQuadratic, α = 1), per-step CE + 0.05·MSE to 1.0, SGD 0.1 / 0.9, "
    "wd 5e-5, cosine annealing over the suite's budget. "
    "Not reproduced on the mlp: BatchNorm, augmentation.",
    params={"k": None, "loss_lambda": 0.05, "loss_means": 1.0},
    neuron={
        "name": "lif",
        "params": {"tau": 1.1, "decay_input": False, "v_threshold": 1.0, "reset": "soft", "detach_reset": False},
    },
    surrogate={"name": "triangle", "params": {"alpha": 1.0}},
    loss="per_step",
    optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-5, "schedule": "cosine"},
    sources={
        "params.k": f"{_PAPER} §4(b): SLTT back-propagates every step (SLTT-K only on DVS/ImageNet, §4(c))",
        "params.loss_lambda": f"{_PAPER} §4(c), §12: loss_lambda 0.05 ({_OFFICIAL} train_SLTT.py default)",
        "params.loss_means": f"{_PAPER} §4(c), §12: constant MSE target 1.0 (no -mse_n_reg on CIFAR)",
        "neuron.name": f"{_PAPER} §4(a): SLTTNeuron, a SpikingJelly LIFNode ({_OFFICIAL} modules/neuron.py)",
        "neuron.params.tau": f"{_PAPER} §4(c), §12: τ = 1.1 ({_OFFICIAL} train_SLTT.py -tau default)",
        "neuron.params.decay_input": f"{_PAPER} §4(c): decay_input=False",
        "neuron.params.v_threshold": f"{_OFFICIAL} modules/neuron.py: SLTTNeuron v_threshold=1",
        "neuron.params.reset": f"{_PAPER} §4(c): soft reset (v_reset=None)",
        "neuron.params.detach_reset": f"{_OFFICIAL} modules/neuron.py: SLTTNeuron detach_reset=False (no effect "
        "on the SLTT gradient: the membrane is detached before every step)",
        "surrogate.name": f"{_PAPER} §4(c), §12: triangle (PiecewiseQuadratic)",
        "surrogate.params.alpha": f"{_PAPER} §4(c): PiecewiseQuadratic α = 1",
        "loss": f"{_PAPER} §4(b), §4(c): per-step loss divided by T",
        "optimizer.name": f"{_PAPER} §4(c): SGD ({_OFFICIAL} train_SLTT.py -opt default)",
        "optimizer.lr": f"{_PAPER} §4(c): lr 0.1",
        "optimizer.momentum": f"{_PAPER} §4(c): momentum 0.9",
        "optimizer.weight_decay": f"{_PAPER} §4(c): CIFAR-10 wd 5e-5",
        "optimizer.schedule": f"{_PAPER} §4(c): SGD with cosine annealing (200 epochs on CIFAR-10)",
    },
)


_SLTT_SOURCE = "Meng et al., ICCV 2023 (arXiv 2302.14311)"
_SLTT_IMAGENET = Conditions(
    "NF-ResNet-34 on ImageNet, T = 6, one V100/A100 GPU (the abstract's headline)",
    datasets=("imagenet",),
    models=("nf_resnet34",),  # no such plugin yet: the ImageNet headline is always at reduced scale here
    min_parameters=20_000_000,
    T=(6,),
    device="cuda",
)
#: The paper's headline claims, checked by ``snnarena claims`` (:mod:`snnarena.claims`).
PAPER_CLAIMS = (
    Claim(
        "memory-vs-bptt",
        "Cuts the memory of training by more than 70 % against BPTT (saved-for-backward bytes below 0.30 x BPTT's).",
        f"{_SLTT_SOURCE}, abstract ('memory cost and training time are reduced by more than 70% and 50%')",
        "abstract, confirmed; table values (8.47 vs 28.41 GB on ImageNet) from secondary notes",
        Check("ratio", "peak_activation_bytes", "<", 0.30, reference="bptt"),
        _SLTT_IMAGENET,
    ),
    Claim(
        "time-vs-bptt",
        "SLTT-1 (one back-propagated step per batch) cuts training time by more than 50 % against BPTT.",
        f"{_SLTT_SOURCE}, abstract and Fig. 1 caption (the time headline is SLTT-1's: 32.03 h vs 73.8 h)",
        "abstract and Fig. 1 caption, confirmed; the hours from secondary notes",
        Check("ratio", "step_time_ms", "<", 0.50, reference="bptt"),
        _SLTT_IMAGENET,
        params={"k": 1},
    ),
    Claim(
        "accuracy-vs-bptt",
        "Keeps BPTT's accuracy (within 1 point, paired by seed): 66.19 vs 66.47 % on ImageNet.",
        f"{_SLTT_SOURCE}, efficiency table (ImageNet, NF-ResNet-34)",
        "values from secondary notes, not verified against the paper's table",
        Check("difference", "test_accuracy", ">=", -0.01, reference="bptt"),
        _SLTT_IMAGENET,
    ),
)


class SLTT(GradientMethod[SpikingModel]):
    """Spatial-only gradient at each step; SLTT-K back-propagates only ``k`` random steps."""

    name = "sltt"
    CLAIMS = PAPER_CLAIMS
    memory_class = "O(1)"
    families = frozenset({"feedforward", "residual"})
    loss_forms = frozenset({"per_step"})
    tasks = frozenset(TASK_KINDS)  # passes t to the loss: per-step targets split exactly
    PRESETS = MappingProxyType({"paper": PAPER})
    PARAMS = (
        Param(
            "k",
            "int",
            None,
            "SLTT-K: back-propagate only k randomly drawn steps per batch; null: every step (SLTT)",
            low=1,
            nullable=True,
        ),
        Param(
            "loss_lambda",
            "float",
            0.0,
            "weight λ of the official MSE term: L[t] = ((1 − λ) CE + λ MSE(o[t], g))/T",
            low=0.0,
            high=1.0,
        ),
        Param(
            "loss_means",
            "float",
            1.0,
            "MSE target g: every logit to this constant (the official regulariser); null: the one-hot label",
            nullable=True,
        ),
    )

    def skip(self, model: SpikingModel, info: DataInfo, loss: SequenceLoss) -> str | None:
        return super().skip(model, info, loss) or mse_skip_reason(self.name, self.params["loss_lambda"], loss)

    def backward_steps(self, T: int) -> set[int]:
        """The steps that back-propagate for one batch (draws from the global RNG if ``k`` is set)."""
        k = self.params["k"]
        if k is None:
            return set(range(T))
        return {int(t) for t in torch.randperm(T)[:k]}

    def accumulate_gradients(
        self, model: SpikingModel, x: Tensor, y: Tensor, loss: SequenceLoss, clock: PhaseClock
    ) -> float:
        T = x.shape[0]
        chosen = self.backward_steps(T)
        state: list[Any] = model.init_state()
        total = 0.0
        for t in range(T):
            with clock.phase("forward"), torch.set_grad_enabled(t in chosen):
                out = model.step(x[t], detach_state(state))
                lam, target = self.params["loss_lambda"], self.params["loss_means"]
                value = mixed_step_loss(loss.step(out.logits, y, T, t), out.logits, y, T, lam, target)
            if t in chosen:
                with clock.phase("backward"):
                    value.backward()
            state = out.state
            total += float(value.detach())
        return total


@snnarena.hookimpl
def register_gradient_methods(register: Register) -> None:
    register(SLTT)
