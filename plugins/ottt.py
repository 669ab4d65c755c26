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
* the per-step loss ``L[t] = CE(o[t], y)/T`` is back-propagated at once and the one-step graph
  freed: saved memory ``O(L·B·N)``, constant in ``T``; compute ≈ BPTT plus a second synapse
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
bias_trace=false``. BatchNorm (which would mix spikes and traces) and non-affine synapses are
skipped.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

import snnarena
from snnarena.data import DataInfo
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock
from snnarena.method import GradientMethod, Update, affine_skip_reason
from snnarena.model import SpikingModel
from snnarena.neuron import detach_state
from snnarena.params import Param
from snnarena.registry import Register
from snnarena.task import TASK_KINDS


def traced_affine(module: nn.Module, s: Tensor, trace: Tensor, bias_trace: float) -> Tensor:
    """``module(s)`` forward; input gradient as ``module``; parameter gradient at ``(trace, β)``.

    ``module`` must be affine in its input, ``f(s) = A_W s + b``. The output value is ``f(s)``,
    the gradient w.r.t. ``s`` is ``A_Wᵀ δ`` and w.r.t. the parameters it is that of
    ``g = f(trace) + (β − 1) f(0)``, i.e. ``δ traceᵀ`` for weights and ``β δ`` for biases.
    Shapes: ``s``, ``trace`` ``[B, ...]``; output ``[B, ...]``.
    """
    frozen = {name: p.detach() for name, p in module.named_parameters()}
    value = functional_call(module, frozen, (s,))
    g = module(trace)
    if bias_trace != 1.0:
        g = g + (bias_trace - 1.0) * module(torch.zeros_like(s[:1]))
    return value + (g - g.detach())


class OTTT(GradientMethod[SpikingModel]):
    """Online training through time: detached membrane, presynaptic traces, per-step backward."""

    name = "ottt"
    memory_class = "O(1)"
    loss_forms = frozenset({"per_step"})
    tasks = frozenset(TASK_KINDS)  # passes t to the loss: per-step targets split exactly
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
                value = loss.step(synapse(n, h), y, T, t)
            with clock.phase("backward"):
                value.backward()
            update()
            total += float(value.detach())
        return total


@snnarena.hookimpl
def register_gradient_methods(register: Register) -> None:
    register(OTTT)
