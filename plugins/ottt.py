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
from snnarena.method import GradientMethod
from snnarena.model import SpikingModel, non_affine_layers
from snnarena.neuron import detach_state
from snnarena.params import Param
from snnarena.registry import Register

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


class OTTT(GradientMethod):
    """Online training through time: detached membrane, presynaptic traces, per-step backward."""

    name = "ottt"
    memory_class = "O(1)"
    loss_forms = frozenset({"per_step"})
    PARAMS = (
        Param("mode", "str", "A", "A: one optimizer step per batch (summed gradients); O: one per time step",
              choices=("A", "O")),
        Param("trace_decay", "float", None, "decay of every presynaptic trace; null: the postsynaptic "
              "stage's own leak 1 − 1/τ (1 for IF)", low=0.0, high=1.0, nullable=True),
        Param("input_trace", "bool", True, "trace the raw input x of the first stage (the official code "
              "uses x itself: false)"),
        Param("readout_trace", "bool", False, "readout weights use a trace of S_L (official: true) instead "
              "of S_L itself, which is exact for a memoryless readout"),
        Param("bias_trace", "bool", True, "bias gradients use β[t] = λβ[t−1] + 1 (exact); false: the plain "
              "per-step bias gradient of the official code"),
    )

    def skip(self, model: SpikingModel, info: DataInfo, loss: SequenceLoss) -> str | None:
        reason = super().skip(model, info, loss)
        if reason is not None:
            return reason
        if model.has_batch_norm():
            return (
                "ottt does not support BatchNorm layers (not affine per sample: the trace pass would be "
                "normalised with the traces' own batch statistics; the paper uses weight standardisation)"
            )
        for index, stage in enumerate(model.stages):
            bad = non_affine_layers(stage.synapse)
            if bad:
                return f"ottt needs affine synapses to trace; stage {index} has {', '.join(bad)}"
            if self.params["trace_decay"] is None and stage.neuron.leak is None:
                return (
                    f"ottt cannot read the leak of stage {index}'s neuron "
                    f"({type(stage.neuron).__name__}); set trace_decay"
                )
        if self.params["readout_trace"] and non_affine_layers(model.readout):
            return f"ottt needs an affine readout to trace it; it has {', '.join(non_affine_layers(model.readout))}"
        return None

    def _decays(self, model: SpikingModel) -> tuple[list[float], float]:
        """Trace decay of each stage's input and of the readout's input."""
        fixed = self.params["trace_decay"]
        stages = [fixed if fixed is not None else st.neuron.leak for st in model.stages]
        readout = fixed if fixed is not None else stages[-1]
        return [float(d) for d in stages], float(readout)  # type: ignore[arg-type]

    def _run(
        self,
        model: SpikingModel,
        x: Tensor,
        y: Tensor,
        loss: SequenceLoss,
        clock: PhaseClock,
        optimizer: torch.optim.Optimizer | None,
    ) -> float:
        """All ``T`` steps with a backward each; ``optimizer`` given: step it after each one."""
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
                traces[l] = h.detach() if prev is None else decays[l] * prev + h.detach()
                betas[l] = decays[l] * betas[l] + 1.0
            beta = betas[l] if self.params["bias_trace"] else 1.0
            return traced_affine(modules[l], h, traces[l], beta)  # type: ignore[arg-type]

        for t in range(T):
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
            with clock.phase("forward"):
                h = x[t]
                for l, stage in enumerate(model.stages):
                    current = synapse(l, h)
                    st = stage.neuron.init_state(current) if state[l] is None else detach_state(state[l])
                    h, state[l] = stage.neuron.step(current, st)
                value = loss.step(synapse(n, h), y, T)
            with clock.phase("backward"):
                value.backward()
            if optimizer is not None:
                with clock.phase("optimizer"):
                    optimizer.step()
            total += float(value.detach())
        return total

    def accumulate_gradients(
        self, model: nn.Module, x: Tensor, y: Tensor, loss: SequenceLoss, clock: PhaseClock
    ) -> float:
        return self._run(model, x, y, loss, clock, optimizer=None)  # type: ignore[arg-type]

    def train_step(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        loss: SequenceLoss,
        optimizer: torch.optim.Optimizer,
        clock: PhaseClock,
    ) -> float:
        if self.params["mode"] == "A":
            return super().train_step(model, x, y, loss, optimizer, clock)
        return self._run(model, x, y, loss, clock, optimizer=optimizer)  # type: ignore[arg-type]


@snnarena.hookimpl
def register_gradient_methods(register: Register) -> None:
    register(OTTT)
