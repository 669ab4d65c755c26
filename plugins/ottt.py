"""``ottt``: Online Training Through Time (Xiao et al., NeurIPS 2022, arXiv 2210.04195).

Every step ``t`` of stage ``l`` (input ``s = S_{l−1}[t]`` ``[B, ...]``, ``S_0 = x``):

* the membrane is detached before the step, ``H[t] = λ sg(V[t−1]) + I[t]``: no gradient
  crosses time;
* a presynaptic trace without gradient, ``â[t] = λ_l â[t−1] + s[t]`` (``â[−1] = 0``), and for
  the bias (a weight on the constant input 1) ``β[t] = λ_l β[t−1] + 1``;
* the synapse ``f(s) = A_W s + b`` (any affine module: Linear, Conv, AvgPool, Flatten ...)
  forwards ``f(s)``, passes the spatial error ``A_Wᵀ δ`` to ``s``, and gives the weights the
  gradient of ``f`` at the traced point ``(â, β)``: ``g = f(â) + (β − 1) f(0)``,
  ``out = f_sg(W)(s) + g − sg(g)`` ⇒ ``∇W = Σ_t δ[t] â[t]ᵀ``, ``∇b = Σ_t β[t] δ[t]``;
* the per-step loss ``L[t] = CE(o[t], y)/T`` (with ``loss_lambda = λ > 0`` the paper's
  ``((1 − λ) CE(o[t], y) + λ MSE(o[t], onehot y))/T``, a different objective from the suite's:
  gradient fidelity still compares with BPTT on the suite's loss) is back-propagated at once and
  the one-step graph freed: saved memory ``O(L·B·N)``, constant in ``T``; compute ≈ BPTT plus a second synapse
  pass (the trace pass) per stage.

``mode="A"`` sums the ``T`` gradients and steps the optimizer once per batch (OTTT_A);
``mode="O"`` steps it after every time step (OTTT_O); ``accumulate_gradients`` always gives the
A-mode gradient.

Trace conventions (all defaults make the one-hidden-layer case *exact*, research notes V2):
the trace of a stage's input decays with that stage's (postsynaptic) leak ``λ_l = 1 − 1/τ_l``
(1 for IF) unless ``trace_decay`` fixes one value for all; ``input_trace`` traces the raw
input ``x`` too; the memoryless readout uses the plain spikes ``S_L[t]`` (its postsynaptic leak is
0) unless ``readout_trace``, which traces them with ``trace_decay`` or the last stage's own leak;
``bias_trace`` uses ``β[t]`` for biases. With one hidden layer, soft reset, ``detach_reset`` and
the defaults, OTTT equals BPTT exactly; with ``λ = 0`` it equals BPTT for any depth. The official
code (``pkuxmq/OTTT-SNN``) corresponds to ``input_trace=false, readout_trace=true,
bias_trace=false``; the ``paper`` preset (:data:`PRESETS`) runs those conventions with the
paper's neuron, surrogate and optimizer. BatchNorm (which would mix spikes and traces) and
non-affine synapses are skipped.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

import snnarena
from snnarena.claims import Check, Claim, Conditions
from snnarena.data import DataInfo
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.method import GradientMethod, Preset, Update, affine_skip_reason
from snnarena.model import SpikingModel
from snnarena.multistep import SpikeLinear
from snnarena.neuron import detach_state
from snnarena.params import Param
from snnarena.registry import Register
from snnarena.task import TASK_KINDS


class _TracedLinear(torch.autograd.Function):
    """``y = s Wᵀ + b`` forward; backward ``∂s = δ W``, ``∂W = δᵀ trace``, ``∂b = β Σ_B δ``.

    One matmul forward (the generic path also runs ``f(trace)`` forward, only for its gradient).
    Shapes: ``s``, ``trace`` ``[B, N_in]``, ``W`` ``[N_out, N_in]``, ``b`` ``[N_out]`` or ``None``.
    """

    @staticmethod
    def forward(ctx: Any, s: Tensor, trace: Tensor, weight: Tensor, bias: Tensor | None, beta: float) -> Tensor:
        ctx.save_for_backward(trace, weight)
        ctx.beta = beta
        ctx.has_bias = bias is not None
        return F.linear(s, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, Tensor | None, Tensor | None, None]:
        trace, weight = ctx.saved_tensors
        grad_s = grad @ weight if ctx.needs_input_grad[0] else None
        grad_w = grad.T @ trace if ctx.needs_input_grad[2] else None
        grad_b = None
        if ctx.has_bias and ctx.needs_input_grad[3]:
            grad_b = grad.sum(0)
            if ctx.beta != 1.0:
                grad_b = ctx.beta * grad_b
        return grad_s, None, grad_w, grad_b, None


def traced_affine(module: nn.Module, s: Tensor, trace: Tensor, bias_trace: float) -> Tensor:
    """``module(s)`` forward; input gradient as ``module``; parameter gradient at ``(trace, β)``.

    ``module`` must be affine in its input, ``f(s) = A_W s + b``. The output value is ``f(s)``,
    the gradient w.r.t. ``s`` is ``A_Wᵀ δ`` and w.r.t. the parameters it is that of
    ``g = f(trace) + (β − 1) f(0)``, i.e. ``δ traceᵀ`` for weights and ``β δ`` for biases.
    Shapes: ``s``, ``trace`` ``[B, ...]``; output ``[B, ...]``. A plain ``nn.Linear`` on ``[B, N]``
    takes a one-matmul path (:class:`_TracedLinear`); other modules run ``f`` at ``s`` and at ``trace``.
    """
    if type(module) in (nn.Linear, SpikeLinear) and s.dim() == 2:
        out: Tensor = _TracedLinear.apply(s, trace, module.weight, module.bias, bias_trace)
        return out
    frozen = {name: p.detach() for name, p in module.named_parameters()}
    value = functional_call(module, frozen, (s,))
    g = module(trace)
    if bias_trace != 1.0:
        g = g + (bias_trace - 1.0) * module(torch.zeros_like(s[:1]))
    return value + (g - g.detach())


_PAPER = "Xiao et al., NeurIPS 2022 (arXiv 2210.04195); research notes"
_OFFICIAL = "pkuxmq/OTTT-SNN"

#: ``ottt@paper``: Xiao et al.'s CIFAR setting (OTTT_A) and the official code's trace conventions.
PAPER = Preset(
    doc="OTTT_A as in Xiao et al. 2022 / pkuxmq/OTTT-SNN (CIFAR): official trace conventions "
    "(raw input for the first layer, traced readout, plain bias gradient), LIF τ = 2 with "
    "decay_input=false, soft detached reset, sigmoid(α = 4), per-step CE + 0.05·MSE to one-hot, SGD 0.1 / 0.9, "
    "cosine annealing over the suite's budget, scaled weight standardisation (the mlp's weight_standardization). "
    "Not reproduced on the mlp: Scale(2.74) (vgg11_ws folds it in), augmentation.",
    params={
        "mode": "A",
        "trace_decay": None,
        "input_trace": False,
        "readout_trace": True,
        "bias_trace": False,
        "loss_lambda": 0.05,
    },
    neuron={
        "name": "lif",
        "params": {
            "tau": 2.0,
            "decay_input": False,
            "v_threshold": 1.0,
            "reset": "soft",
            "detach_reset": True,
        },
    },
    surrogate={"name": "sigmoid", "params": {"alpha": 4.0}},
    loss="per_step",
    optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0, "schedule": "cosine"},
    model={"weight_standardization": True},
    sources={
        "model.weight_standardization": f"{_PAPER} §3(c): scaled weight-standardised layers "
        f"({_OFFICIAL} models/spiking_vgg.py ScaledWSConv2d); models without the parameter are refused",
        "params.mode": f"{_PAPER} §3(b), §3(d): OTTT_A, one optimizer step per batch (Table 1)",
        "params.trace_decay": f"{_PAPER} §3(b), §3(f): the trace decays with λ = 1 − 1/τ "
        "(uniform τ: the stage's own leak)",
        "params.input_trace": f"{_PAPER} §3(f), §3(e)2: the first layer takes the raw input "
        f"({_OFFICIAL} models/spiking_vgg.py, first layer not wrapped)",
        "params.readout_trace": f"{_PAPER} §3(f): the classifier weights are updated with the trace "
        f"({_OFFICIAL} WrapedSNNOp)",
        "params.loss_lambda": f"{_PAPER} §3(b), §3(c), §12: loss_lambda = 0.05 (CIFAR)",
        "params.bias_trace": f"{_PAPER} §3(b): ∇W = Σ_t δ[t] â[t]ᵀ; biases get the plain per-step "
        f"gradient ({_OFFICIAL} Replace)",
        "neuron.name": f"{_PAPER} §3(b): LIF (OnlineLIFNode, {_OFFICIAL} modules/neuron.py)",
        "neuron.params.tau": f"{_PAPER} §3(c), §12: τ = 2",
        "neuron.params.decay_input": f"{_PAPER} §3(b): u[t] = λ sg(u[t−1]) + W s[t] (decay_input=False)",
        "neuron.params.v_threshold": f"{_PAPER} §3(c): V_th = 1",
        "neuron.params.reset": f"{_PAPER} §3(c): soft reset (v_reset=None)",
        "neuron.params.detach_reset": f"{_PAPER} §3(c): detach_reset=True",
        "surrogate.name": f"{_PAPER} §3(c): surrogate Sigmoid(alpha=4)",
        "surrogate.params.alpha": f"{_PAPER} §3(c): alpha = 4",
        "loss": f"{_PAPER} §3(b), §3(f): instantaneous loss L[t]/T (per step)",
        "optimizer.name": f"{_PAPER} §3(c): CIFAR, SGD ({_OFFICIAL} train_cifar.py)",
        "optimizer.lr": f"{_PAPER} §3(c): CIFAR, lr 0.1",
        "optimizer.momentum": f"{_PAPER} §3(c): CIFAR, momentum 0.9",
        "optimizer.weight_decay": f"{_PAPER} §3(c): CIFAR, wd 0",
        "optimizer.schedule": f"{_PAPER} §3(c): cosine annealing, T_max = 300 epochs (the suite's budget sets T_max)",
    },
)


def mixed_step_loss(share: Tensor, logits_t: Tensor, y: Tensor, T: int, lam: float, target: float | None) -> Tensor:
    """The per-step loss of OTTT's and SLTT's papers, ``(1 − λ) share + λ MSE(o[t], g) / T``.

    ``share`` is the suite loss's share of step ``t`` (``CE(o[t], y)/T``), ``logits_t`` ``[B, C]``,
    ``y`` ``[B]`` class labels; the MSE is averaged over ``B·C`` (``nn.MSELoss``) against
    ``g = onehot(y)`` (``target=None``) or the constant ``target``. ``λ = 0`` returns ``share``.
    """
    if lam == 0.0:
        return share
    if target is None:
        goal = F.one_hot(y, logits_t.shape[-1]).to(logits_t.dtype)
    else:
        goal = torch.full_like(logits_t, target)
    return (1.0 - lam) * share + lam * F.mse_loss(logits_t, goal) / T


#: Tasks whose targets are one class label per sequence, ``y [B]``: what the MSE term needs.
MSE_TASKS = frozenset({"classification", "static_classification"})


def mse_skip_reason(method: str, lam: float, loss: SequenceLoss) -> str | None:
    """Why ``loss_lambda = lam`` cannot be used with ``loss`` (the MSE term needs labels ``y [B]``)."""
    if lam > 0.0 and loss.task not in MSE_TASKS:
        return (
            f"{method}: loss_lambda > 0 mixes in an MSE to per-sequence class targets, which the "
            f"{loss.task} task does not have; set loss_lambda = 0"
        )
    return None


_OTTT_SOURCE = "Xiao et al., NeurIPS 2022 (arXiv 2210.04195)"
#: The paper's headline claims, checked by ``snnarena claims`` (:mod:`snnarena.claims`).
PAPER_CLAIMS = (
    Claim(
        "memory-flat-in-T",
        "Its training memory does not grow with T: at most 10 % more saved bytes at the largest T than at the "
        "smallest.",
        f"{_OTTT_SOURCE}, abstract ('constant training memory costs agnostic to time steps') and memory figure",
        "abstract, confirmed",
        Check("growth", "peak_activation_bytes", "<=", 1.1),
        Conditions("VGG (sWS) on CIFAR-10, T = 2 ... 30 (memory figure), one GPU", models=("vgg11_ws",), T=(30,)),
    ),
    Claim(
        "accuracy-vs-bptt",
        "Reaches BPTT's accuracy in the same setting (within 1 point, paired by seed): 93.52 vs about 92.8 % on "
        "CIFAR-10.",
        f"{_OTTT_SOURCE}, Table 1 (OTTT_A vs BPTT, VGG sWS, T = 6)",
        "OTTT values corroborated by later papers; the BPTT row is recalled, not verified",
        Check("difference", "test_accuracy", ">=", -0.01, reference="bptt"),
        Conditions(
            "VGG (sWS) on CIFAR-10, T = 6, 300 epochs, one GPU",
            datasets=("cifar10",),
            models=("vgg11_ws",),
            min_parameters=5_000_000,
            T=(6,),
            device="cuda",
        ),
        params={"mode": "A"},
    ),
)


class OTTT(GradientMethod[SpikingModel]):
    """Online training through time: detached membrane, presynaptic traces, per-step backward."""

    name = "ottt"
    CLAIMS = PAPER_CLAIMS
    memory_class = "O(1)"
    loss_forms = frozenset({"per_step"})
    tasks = frozenset(TASK_KINDS)  # passes t to the loss: per-step targets split exactly
    PRESETS = MappingProxyType({"paper": PAPER})
    PARAMS = (
        Param(
            "mode",
            "str",
            "A",
            "A: one optimizer step per batch (summed gradients); O: one per time step",
            choices=("A", "O"),
        ),
        Param(
            "trace_decay",
            "float",
            None,
            "decay of every presynaptic trace; null: the postsynaptic stage's own leak 1 − 1/τ (1 for IF)",
            low=0.0,
            high=1.0,
            nullable=True,
        ),
        Param(
            "input_trace",
            "bool",
            True,
            "trace the raw input x of the first stage (the official code uses x itself: false)",
        ),
        Param(
            "readout_trace",
            "bool",
            False,
            "readout weights use a trace of S_L (official: true) instead "
            "of S_L itself, which is exact for a memoryless readout",
        ),
        Param(
            "loss_lambda",
            "float",
            0.0,
            "weight λ of the paper's MSE term: L[t] = ((1 − λ) CE + λ MSE(o[t], onehot y))/T; "
            "λ > 0 changes the objective, fidelity still compares with BPTT on the suite's loss",
            low=0.0,
            high=1.0,
        ),
        Param(
            "bias_trace",
            "bool",
            True,
            "bias gradients use β[t] = λβ[t−1] + 1 (exact); false: the plain "
            "per-step bias gradient of the official code",
        ),
    )

    def skip(self, model: SpikingModel, info: DataInfo, loss: SequenceLoss) -> str | None:
        reason = super().skip(model, info, loss)
        if reason is not None:
            return reason
        reason = mse_skip_reason(self.name, self.params["loss_lambda"], loss)
        if reason is not None:
            return reason
        reason = affine_skip_reason(
            self.name,
            model,
            readout=self.params["readout_trace"],
            batch_norm="not affine per sample: the trace pass would be normalised with the traces' own batch "
            "statistics; the paper uses weight standardisation",
        )
        if reason is not None:
            return reason
        for index, stage in enumerate(model.stages):
            if self.params["trace_decay"] is None and stage.neuron.leak is None:
                return (
                    f"ottt cannot read the leak of stage {index}'s neuron "
                    f"({type(stage.neuron).__name__}); set trace_decay"
                )
        return None

    def _decays(self, model: SpikingModel) -> tuple[list[float], float]:
        """Trace decay of each stage's input and of the readout's input."""
        fixed = self.params["trace_decay"]
        stages: list[float] = []
        for index, stage in enumerate(model.stages):
            leak = fixed if fixed is not None else stage.neuron.leak
            if leak is None:
                raise ValueError(f"ottt: stage {index}'s neuron has no leak to decay its trace with; set trace_decay")
            stages.append(float(leak))
        return stages, float(fixed) if fixed is not None else stages[-1]

    @property
    def updates_within_batch(self) -> bool:
        return self.params["mode"] == "O"

    def unroll(
        self, model: SpikingModel, x: Tensor, y: Tensor, loss: SequenceLoss, clock: PhaseClock, update: Update
    ) -> float:
        """All ``T`` steps with a backward each, and an ``update()`` after each one."""
        T, n = x.shape[0], len(model.stages)
        stage_decays, readout_decay = self._decays(model)
        # entry l describes the input of synapse l (l = n: the readout's input)
        modules = [stage.synapse for stage in model.stages] + [model.readout]
        decays = stage_decays + [readout_decay]
        traced = [self.params["input_trace"]] + [True] * (n - 1) + [self.params["readout_trace"]]
        traces: list[Tensor | None] = [None] * (n + 1)
        betas = [0.0] * (n + 1)
        state: list[Any] = model.init_state()
        total = 0.0

        def synapse(l: int, h: Tensor) -> Tensor:
            if not traced[l]:
                return modules[l](h)
            with torch.no_grad():
                prev = traces[l]
                trace = h.detach() if prev is None else decays[l] * prev + h.detach()
                traces[l] = trace
                betas[l] = decays[l] * betas[l] + 1.0
            beta = betas[l] if self.params["bias_trace"] else 1.0
            return traced_affine(modules[l], h, trace, beta)

        for t in range(T):
            with clock.phase("forward"):
                h = x[t]
                for l, stage in enumerate(model.stages):
                    current = synapse(l, h)
                    st = stage.neuron.init_state(current) if state[l] is None else detach_state(state[l])
                    h, state[l] = stage.neuron.step(current, st)
                logits = synapse(n, h)
                value = mixed_step_loss(loss.step(logits, y, T, t), logits, y, T, self.params["loss_lambda"], None)
            with clock.phase("backward"):
                value.backward()
            update()
            total += float(value.detach())
        return total


@snnarena.hookimpl
def register_gradient_methods(register: Register) -> None:
    register(OTTT)
