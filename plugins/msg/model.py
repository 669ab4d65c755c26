"""``msg``: the manifold spiking graph network of Sun et al. (NeurIPS 2024) on one graph.

Stage ``l = 0 … L`` (``L = layers``; stage 0 is the encoder) is a graph convolution and the suite's
neuron, ``x^l_t = Â s^{l−1}_t W_l (+ b_l)`` ``[N, d]`` (``s^{−1}_t`` = the input ``x[t]``),
``s^l_t = neuron(x^l_t)``. Beside the spikes, each stage moves a point on the manifold
(:mod:`.manifolds`): with the mean current of the first ``t + 1`` steps
``x̄^l_t = (1/(t+1)) Σ_{τ≤t} x^l_τ``, the tangent vector is ``v^l_t = step_size · x̄^l_t`` and
``z^l_t = Exp_{z^{l−1}_t}(P v^l_t)`` from ``z^{−1} = origin``. After all ``T`` steps this is the
paper's ``v^l = step · mean_t x^l_t``, ``z^l = Exp_{z^{l−1}}(v^l)``.

Outputs. The representation of the first ``t + 1`` steps is read at the origin,
``r_t = Log_0(z^L_t) W_out + b`` ``[N, C]`` (the paper's loss path, ``FC(Log_0 z^L)``), and the
output of step ``t`` is what that step adds to the running sum of outputs,
``o[t] = (t+1) r_t − t r_{t−1}``, so that ``(1/T) Σ_t o[t] = r_{T−1}``: with ``loss = "rate"``
the host's loss is exactly the paper's loss of the whole-sequence representation
(node classification ``CE(r_{T−1}, y)``; link prediction ``BCE(⟨r_i, r_j⟩)``), and accuracy,
ROC-AUC and AP score ``r_{T−1}`` too. The paper scores node classification on another path,
``FC(Σ_l v^l)``, and decodes links with a Fermi–Dirac distance (or cosine) decoder; here one path
serves both the loss and the scores. The state of a stage is :class:`MSGStageState` (the neuron's
state, ``Σ_τ x^l_τ`` and the step count); the model's state ends with the running sum of outputs,
so ``step`` and ``forward_seq`` agree and a sequence resumes from its state.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from snnarena.data import DataInfo
from snnarena.graph import GraphConv
from snnarena.model import GraphModel, NeuronFactory, SeqOutput, Stage, StepOutput
from snnarena.params import Param

from .manifolds import MANIFOLDS, Manifold, ManifoldStep, geoopt_missing


class MSGStageState(NamedTuple):
    """A stage after step ``t``: the neuron's state, ``Σ_{τ≤t} x^l_τ`` ``[N, d]`` and ``t + 1`` ``[]``."""

    neuron: Any
    current_sum: Tensor
    steps: Tensor


class OutputSum(NamedTuple):
    """``Σ_{τ≤t} o[τ] = (t+1) r_t`` ``[N, C]``: the running sum of the model's outputs."""

    total: Tensor


class StagePrefixes(NamedTuple):
    """One stage over ``T`` steps: spikes ``[T, N, d]``, ``Σ_{τ≤t} x_τ`` ``[T, N, d]``, ``t + 1`` ``[T]``."""

    spikes: Tensor
    sums: Tensor
    counts: Tensor
    state: MSGStageState


class MSGStage(Stage):
    """A graph convolution and a neuron that also keeps the running sum of its current."""

    def step(self, x: Tensor, state: MSGStageState | None) -> tuple[Tensor, MSGStageState]:
        current = self.synapse(x)
        if state is None:
            state = MSGStageState(self.neuron.init_state(current), torch.zeros_like(current), current.new_zeros(()))
        spikes, neuron_state = self.neuron.step(current, state.neuron)
        return spikes, MSGStageState(neuron_state, state.current_sum + current, state.steps + 1)

    def prefixes(self, x: Tensor, state: MSGStageState | None = None) -> StagePrefixes:
        """``x [T, N, F]`` → spikes ``[T, N, d]``, the current sums of every prefix ``[T, N, d]``,
        their step counts ``[T]`` and the final state (the synapse runs on all steps at once)."""
        steps, nodes = x.shape[:2]
        current = self.synapse(x.flatten(0, 1)).unflatten(0, (steps, nodes))
        spikes, neuron_state = self.neuron.forward_seq(current, None if state is None else state.neuron)
        base_sum = torch.zeros_like(current[0]) if state is None else state.current_sum
        base_steps = current.new_zeros(()) if state is None else state.steps
        sums = base_sum + current.cumsum(0)
        counts = base_steps + torch.arange(1, steps + 1, dtype=current.dtype, device=current.device)
        return StagePrefixes(spikes, sums, counts, MSGStageState(neuron_state, sums[-1], counts[-1]))

    def forward_seq(self, x: Tensor, state: MSGStageState | None = None) -> tuple[Tensor, MSGStageState]:
        """``x [T, N, F]`` → spikes ``[T, N, d]`` and the final state."""
        run = self.prefixes(x, state)
        return run.spikes, run.state


class MSG(GraphModel):
    """Manifold spiking GNN (MSG): spiking graph-convolution stages that move points on a manifold."""

    name = "msg"
    PARAMS = (
        Param("manifold", "str", "lorentz", "lorentz (hyperbolic), sphere or euclidean", choices=MANIFOLDS),
        Param("dim", "int", 32, "manifold dimension D (ambient D+1 on the hyperboloid)", low=1),
        Param("layers", "int", 1, "spiking manifold layers after the encoder layer", low=0),
        Param("step_size", "float", 0.1, "tangent vector v^l = step_size · mean_t x^l_t", low=0.0),
        Param("bias", "bool", False, "bias in the graph convolutions (the official code has none)"),
    )

    @classmethod
    def check_environment(cls) -> str | None:
        """Without geoopt (the ``graph`` extra) suite validation refuses ``msg``, naming the extra."""
        return geoopt_missing()

    def __init__(self, info: DataInfo, make_neuron: NeuronFactory, **params: Any) -> None:
        super().__init__(info, make_neuron, **params)
        p = self.params
        self.manifold = Manifold(p["manifold"])
        (width,) = info.input_shape
        d = self.manifold.ambient(int(p["dim"]))
        for _ in range(1 + int(p["layers"])):
            self.stages.append(MSGStage(GraphConv(width, d, self.graph, bias=p["bias"]), make_neuron()))
            width = d
        self.readout = nn.Linear(d, info.n_classes)
        self.step_size = float(p["step_size"])

    def manifold_macs(self, steps: int) -> float:
        """Multiply-accumulates of the manifold chain over ``steps`` steps, ``N · d`` per stage and
        step (the official code's energy convention; see :mod:`.energy`)."""
        d = self.readout.in_features
        return float(steps * len(self.stages) * self.graph.n_nodes * d)

    def init_state(self) -> list[Any]:
        """One entry per stage, then the running sum of outputs (all ``None`` at rest)."""
        return [None] * (len(self.stages) + 1)

    # -- the manifold path ------------------------------------------------------------------------------

    def represent(self, means: list[Tensor], dvm: bool = False) -> Tensor:
        """``r = Log_0(z^L) W_out + b`` ``[*, N, C]`` from the mean currents ``x̄^l`` ``[*, N, d]`` of
        every stage; ``dvm``: each ``Exp`` is a :class:`ManifoldStep` (closed-form backward)."""
        z = self.manifold.origin(means[0].numel() // means[0].shape[-1], means[0].shape[-1], means[0])
        for mean in means:
            v = self.step_size * mean.reshape(z.shape)
            z = ManifoldStep.apply(self.manifold, z, v) if dvm else self.manifold.move(z, v)
        logits = self.readout(self.manifold.log0(z))
        return logits.reshape(*means[0].shape[:-1], -1)

    @staticmethod
    def _msg_stage(stage: nn.Module) -> MSGStage:
        assert isinstance(stage, MSGStage), f"msg's stages are MSGStage, not {type(stage).__name__}"
        return stage

    def input_means(self, x: Tensor) -> list[Tensor]:
        """The time-mean input of every stage, ``[mean_t x[t], mean_t s^0_t, …, mean_t s^{L−1}_t]``
        ``[N, ·]``, step by step without gradient and without keeping any step (the DvM forward:
        spikes are constants; memory independent of ``T``)."""
        sums: list[Tensor] = []
        with torch.no_grad():
            state: list[Any] = [None] * len(self.stages)
            for t, x_t in enumerate(x.unbind(0)):
                h = x_t
                for l, stage in enumerate(self.stages):
                    if t == 0:
                        sums.append(h.clone())
                    else:
                        sums[l] += h
                    h, state[l] = stage.step(h, state[l])
        return [s / x.shape[0] for s in sums]

    def _outputs(self, r: Tensor, counts: Tensor, previous: OutputSum | None) -> tuple[Tensor, OutputSum]:
        """``o[t] = (t+1) r_t − t r_{t−1}`` for ``r [k, N, C]`` and counts ``t + 1`` ``[k]``."""
        totals = counts.reshape(-1, 1, 1) * r
        before = torch.zeros_like(r[:1]) if previous is None else previous.total.unsqueeze(0)
        return totals - torch.cat([before, totals[:-1]]), OutputSum(totals[-1])

    # -- the step / sequence contract ---------------------------------------------------------------------

    def step(self, x: Tensor, state: list[Any]) -> StepOutput:
        spikes: list[Tensor] = []
        new_state: list[Any] = []
        h = x
        for stage, s in zip(self.stages, state[:-1], strict=True):
            h, s = stage.step(h, s)
            spikes.append(h)
            new_state.append(s)
        means = [s.current_sum / s.steps for s in new_state]
        outputs, total = self._outputs(self.represent(means).unsqueeze(0), new_state[0].steps.reshape(1), state[-1])
        return StepOutput(outputs[0], [*new_state, total], spikes)

    def forward_seq(self, x: Tensor, state: list[Any] | None = None) -> SeqOutput:
        """``x [T, N, F]`` → outputs ``[T, N, C]``: every stage over all steps, then the manifold
        chain of every prefix at once (``T·N`` rows)."""
        state = self.init_state() if state is None else state
        spikes: list[Tensor] = []
        new_state: list[Any] = []
        means: list[Tensor] = []
        h = x
        for stage, s in zip(self.stages, state[:-1], strict=True):
            run = self._msg_stage(stage).prefixes(h, s)
            h = run.spikes
            means.append(run.sums / run.counts.reshape(-1, 1, 1))
            spikes.append(h)
            new_state.append(run.state)
        outputs, total = self._outputs(self.represent(means), run.counts, state[-1])
        return SeqOutput(outputs, [*new_state, total], spikes)
