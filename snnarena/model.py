"""Base class of the model plugins: ordered stages (synapse → neuron) and a memoryless readout.

Shapes: the input of one step is ``x_t`` ``[B, *input_shape]``; a sequence is ``x`` ``[T, B,
*input_shape]``; the readout returns logits ``[B, C]`` per step (``[T, B, C]`` for a sequence).

Stage ``l`` computes ``I_l[t] = synapse_l(S_{l-1}[t])`` and ``S_l[t], state_l[t] =
neuron_l.step(I_l[t], state_l[t-1])`` with ``S_0 = x``; the logits are ``o[t] =
readout(S_L[t])``. Because the stages and the neuron state are explicit, a gradient method can
drive the model itself (step by step, with detached or traced state) instead of calling
:meth:`SpikingModel.forward_seq`.

A :class:`RecurrentStage` (models of ``family = "recurrent"``) adds the stage's own previous
output to its synaptic input, ``I_l[t] = W_l S_{l-1}[t] + R_l S_l[t-1]`` (``S_l[-1] = 0``), and
its state is a :class:`RecurrentState` holding the neuron's state *and* ``S_l[t-1]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, cast, overload

import torch
from torch import Tensor, nn

from snnarena.graph import GraphConv
from snnarena.neuron import Neuron
from snnarena.params import Param, params_of
from snnarena.task import GRAPH_TASKS, SEQUENCE_TASKS

if TYPE_CHECKING:
    from snnarena.data import DataInfo

NeuronFactory = Callable[[], Neuron]


class StepOutput(NamedTuple):
    """One time step: logits ``[B, C]``, the new state (one entry per stage), spikes per stage."""

    logits: Tensor
    state: list[Any]
    spikes: list[Tensor]


class SeqOutput(NamedTuple):
    """A whole sequence: logits ``[T, B, C]``, the final state (one entry per stage), spikes per
    stage ``[T, B, ...]``. The fields are in :class:`StepOutput`'s order."""

    logits: Tensor
    state: list[Any]
    spikes: list[Tensor]


class Stage(nn.Module):
    """A synapse (``Linear``, ``Conv2d`` ...) followed by a neuron layer."""

    def __init__(self, synapse: nn.Module, neuron: Neuron) -> None:
        super().__init__()
        self.synapse = synapse
        self.neuron = neuron

    def step(self, x: Tensor, state: Any | None) -> tuple[Tensor, Any]:
        """``x`` ``[B, ...]`` → spikes ``[B, ...]``; ``state=None`` starts from rest."""
        current = self.synapse(x)
        if state is None:
            state = self.neuron.init_state(current)
        return self.neuron.step(current, state)

    def forward_seq(self, x: Tensor, state: Any | None = None) -> tuple[Tensor, Any]:
        """``x`` ``[T, B, ...]`` → spikes ``[T, B, ...]``; the synapse runs on all steps at once."""
        steps, batch = x.shape[:2]
        current = self.synapse(x.flatten(0, 1))
        current = current.unflatten(0, (steps, batch))
        return self.neuron.forward_seq(current, state)


class RecurrentState(NamedTuple):
    """The state of a :class:`RecurrentStage` after step ``t``: the neuron's own state (a
    ``NamedTuple`` of tensors, e.g. ``LIFState(v)``) and the stage's output ``S_l[t]`` ``[B, N]``,
    which feeds back into step ``t + 1``. :func:`~snnarena.neuron.detach_state` detaches both."""

    neuron: Any
    output: Tensor


class RecurrentStage(Stage):
    """A synapse, a recurrent synapse and a neuron layer: a stage that feeds back its own output.

    Per step, with ``S_l[-1] = 0`` (the first step has no recurrent input)::

        F_l[t] = synapse(S_{l-1}[t])                 feedforward current   [B, N_in] → [B, M]
        I_l[t] = F_l[t] + recurrent(S_l[t-1])        total current         recurrent: [B, N] → [B, M]
        S_l[t], n_l[t] = neuron.step(I_l[t], n_l[t-1])                    S_l [B, N]

    For a spiking neuron ``M = N`` (one current per neuron); a unit with gates (an LSTM unit)
    may take ``M = 4N``. ``recurrent=None`` drops the ``R_l`` term (a feedforward layer with the
    recurrent state layout). The state is :class:`RecurrentState` ``(n_l[t], S_l[t])``, or
    ``None`` at rest. Methods that need the pieces of a step (e-prop's eligibility traces need
    ``S_{l-1}[t]``, ``S_l[t-1]`` and the neuron's state; SAB reads and edits ``S_l[t]``) call
    :meth:`total_current` and :meth:`step_current` instead of :meth:`step`, or detach
    ``state.output`` alone (``state._replace(output=state.output.detach())``).
    """

    def __init__(self, synapse: nn.Module, neuron: Neuron, recurrent: nn.Module | None = None) -> None:
        super().__init__(synapse, neuron)
        self.recurrent = recurrent

    def total_current(self, feedforward: Tensor, state: RecurrentState | None) -> Tensor:
        """``I_l[t] = F_l[t] + recurrent(S_l[t-1])`` for ``F_l[t]`` ``[B, M]``; ``F_l[t]`` at rest."""
        if state is None or self.recurrent is None:
            return feedforward
        return feedforward + self.recurrent(state.output)

    def step_current(self, feedforward: Tensor, state: RecurrentState | None) -> tuple[Tensor, RecurrentState]:
        """One step from the feedforward current ``F_l[t]`` ``[B, M]`` → ``S_l[t]`` and the new state."""
        current = self.total_current(feedforward, state)
        neuron_state = self.neuron.init_state(current) if state is None else state.neuron
        output, neuron_state = self.neuron.step(current, neuron_state)
        return output, RecurrentState(neuron_state, output)

    def step(self, x: Tensor, state: Any | None) -> tuple[Tensor, Any]:
        """``x`` ``[B, ...]`` → ``S_l[t]`` ``[B, N]`` and :class:`RecurrentState`."""
        return self.step_current(self.synapse(x), state)

    def forward_seq(self, x: Tensor, state: Any | None = None) -> tuple[Tensor, Any]:
        """``x`` ``[T, B, ...]`` → ``S_l`` ``[T, B, N]``: the synapse runs on all ``T·B`` samples at
        once, the recurrence loops over time (the same operations as ``T`` calls of :meth:`step`)."""
        steps, batch = x.shape[:2]
        feedforward = self.synapse(x.flatten(0, 1)).unflatten(0, (steps, batch))
        outputs = []
        for f_t in feedforward.unbind(0):  # unbind: one backward node, not one slice per step
            s, state = self.step_current(f_t, state)
            outputs.append(s)
        return torch.stack(outputs), state


class Stages(nn.ModuleList):
    """The ordered :class:`Stage` list of a model: an ``nn.ModuleList`` whose items are typed as
    stages, so ``for stage in model.stages: stage.step(...)`` type-checks in plugins too."""

    def __iter__(self) -> Iterator[Stage]:
        return cast(Iterator[Stage], super().__iter__())

    @overload
    def __getitem__(self, idx: slice) -> Stages: ...

    @overload
    def __getitem__(self, idx: int) -> Stage: ...

    def __getitem__(self, idx: int | slice) -> Stage | Stages:
        return cast("Stage | Stages", super().__getitem__(idx))


class SpikingModel(nn.Module):
    """A model built from a neuron factory. Subclasses fill :attr:`stages` and :attr:`readout`.

    ``family`` tells gradient methods what dynamics to expect: ``"feedforward"`` (stages depend on
    time only through their own neuron state), ``"recurrent"`` (stages are
    :class:`RecurrentStage`, or others whose state carries what their recurrence needs),
    ``"convergent"`` (:class:`ConvergentModel`) or ``"graph"`` (:class:`GraphModel`). A method
    trains only the families in its ``families``; a model takes only the tasks in its ``tasks``
    (suite validation refuses a dataset of another task, naming both plugins).
    """

    name: ClassVar[str] = ""
    PARAMS: ClassVar[tuple[Param, ...]] = ()
    family: ClassVar[str] = "feedforward"
    #: Tasks (:mod:`snnarena.task`) whose data the model takes: sequences, and static samples
    #: shown at every step (``static_classification``).
    tasks: ClassVar[frozenset[str]] = SEQUENCE_TASKS | {"static_classification"}
    #: ``False`` for models that build no neuron from the suite's ``neuron`` entry (``lstm``): an
    #: explicit neuron for them is a suite error, and ``make_neuron`` is never called.
    uses_neuron: ClassVar[bool] = True

    def __init__(self, info: DataInfo, make_neuron: NeuronFactory, **params: Any) -> None:
        super().__init__()
        self.info = info
        self.params = params_of(type(self)).resolve(params)
        self.stages = Stages()
        self.readout: nn.Module = nn.Identity()

    @classmethod
    def skip(cls, info: DataInfo) -> str | None:
        """A reason this model cannot take the data (wrong input rank ...), or ``None``."""
        return None

    @classmethod
    def check_environment(cls) -> str | None:
        """Why this model cannot run on this machine (an optional dependency missing ...), or
        ``None`` (the default). Suite validation calls it for every model a suite names and refuses
        the suite with the reason, before anything trains."""
        return None

    @classmethod
    def check_T(cls, params: Mapping[str, Any], T: int) -> str | None:
        """Why this model cannot run ``T`` steps with resolved ``params`` (a memory interval longer
        than the sequence ...), or ``None`` (the default). Suite validation calls it for every
        model variant and ``T`` and refuses the suite with the reason, naming the parameter."""
        return None

    def init_state(self) -> list[Any]:
        """The state at rest: one entry per stage (``None`` until the first step sizes it)."""
        return [None] * len(self.stages)

    def step(self, x: Tensor, state: list[Any]) -> StepOutput:
        """One time step through every stage and the readout."""
        spikes: list[Tensor] = []
        new_state: list[Any] = []
        h = x
        for stage, s in zip(self.stages, state, strict=True):
            h, s = stage.step(h, s)
            spikes.append(h)
            new_state.append(s)
        return StepOutput(self.readout(h), new_state, spikes)

    def forward_seq(self, x: Tensor, state: list[Any] | None = None) -> SeqOutput:
        """``x`` ``[T, B, ...]`` → logits ``[T, B, C]``, layer by layer (multi-step mode)."""
        state = self.init_state() if state is None else state
        spikes: list[Tensor] = []
        new_state: list[Any] = []
        h = x
        for stage, s in zip(self.stages, state, strict=True):
            h, s = stage.forward_seq(h, s)
            spikes.append(h)
            new_state.append(s)
        steps, batch = h.shape[:2]
        logits = self.readout(h.flatten(0, 1)).unflatten(0, (steps, batch))
        return SeqOutput(logits, new_state, spikes)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_seq(x).logits

    def has_batch_norm(self) -> bool:
        return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.modules())

    def neuron_count(self) -> int:
        """Neurons per sample, summed over stages (needs one forward to know conv sizes)."""
        param = next(self.parameters())
        with torch.no_grad():
            x = torch.zeros(1, *self.info.input_shape, dtype=param.dtype, device=param.device)
            out = self.step(x, self.init_state())
        return sum(s[0].numel() for s in out.spikes)


class ConvergentModel(SpikingModel):
    """A network that relaxes to a fixed point under a static input (``family = "convergent"``).

    The input ``x`` ``[B, ...]`` is the same at every step (static data arrive as ``[T, B, ...]``
    broadcast views, so ``step(x[t], state)`` works as for any model, and ``T`` is the relaxation
    length). The state is a list of layer states ``s = [s_1, ..., s_L]``, each ``[B, n_l]`` (hidden
    layers from the input side, the output layer ``s_L`` last); ``None`` entries are at rest (zeros).

    * :meth:`dynamics` is one relaxation step ``s[t+1] = F(x, s[t])``; the logits of a step are the
      output layer's new state, ``o[t] = s_L[t+1]`` ``[B, C]``;
    * :meth:`phi` is the primitive function ``Φ(x, s) [B]`` of the dynamics: in the prototypical
      setting (Ernoult et al., 2019) ``F = ∂Φ/∂s`` up to the model's activation and leak, which the
      subclass states. Equilibrium Propagation needs only ``Φ``: from the free fixed point ``s*``
      and the nudged state ``s^β`` its update is ``Δθ = (1/β)(∂Φ/∂θ(x, s^β) − ∂Φ/∂θ(x, s*))``,
      averaged over the batch;
    * :meth:`relax` runs the dynamics for ``steps`` steps, adding ``nudge(s_L[t])`` ``[B, C]`` to the
      output layer's update when given. With ``nudge(o) = −β ∂ℓ/∂o`` (``β(onehot(y) − o)`` for the
      ``final_mse`` cost) it is EP's nudged phase.

    Because :meth:`step` is one free step, ``bptt``, ``tbptt`` and ``checkpointed_bptt`` train
    convergent models unchanged. Convergent models have no spiking stages (``stages`` is empty,
    ``spikes`` lists nothing) and take only ``static_classification`` data.
    """

    family = "convergent"
    uses_neuron = False
    tasks = frozenset({"static_classification"})

    @classmethod
    def skip(cls, info: DataInfo) -> str | None:
        if info.task != "static_classification":
            return f"{cls.name or cls.__name__} relaxes under a static input; the data's task is {info.task}"
        return None

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """``(n_1, ..., n_L)``: the width of every layer state, the output layer (``C``) last."""
        raise NotImplementedError

    def init_state(self) -> list[Any]:
        """The state at rest: one ``None`` (zeros) per layer."""
        return [None] * len(self.layer_sizes)

    def rest(self, x: Tensor, state: list[Any]) -> list[Tensor]:
        """``state`` with every ``None`` replaced by zeros ``[B, n_l]`` of ``x``'s dtype and device."""
        return [x.new_zeros(x.shape[0], n) if s is None else s for s, n in zip(state, self.layer_sizes, strict=True)]

    def dynamics(self, x: Tensor, state: list[Tensor]) -> list[Tensor]:
        """One free relaxation step ``s[t+1] = F(x, s[t])`` from a state without ``None`` entries."""
        raise NotImplementedError

    def phi(self, x: Tensor, state: list[Tensor]) -> Tensor:
        """The primitive function ``Φ(x, s)`` ``[B]`` (see the class docstring)."""
        raise NotImplementedError

    def step(self, x: Tensor, state: list[Any]) -> StepOutput:
        new_state = self.dynamics(x, self.rest(x, state))
        return StepOutput(new_state[-1], new_state, [])

    def relax(
        self,
        x: Tensor,
        steps: int,
        state: list[Any] | None = None,
        nudge: Callable[[Tensor], Tensor] | None = None,
    ) -> list[Tensor]:
        """The state after ``steps`` steps from ``state`` (default: at rest), ``x`` ``[B, ...]``;
        ``nudge(s_L[t])`` is added to the output layer's update when given."""
        s = self.rest(x, self.init_state() if state is None else state)
        for _ in range(steps):
            new = self.dynamics(x, s)
            if nudge is not None:
                new[-1] = new[-1] + nudge(s[-1])
            s = new
        return s

    def forward_seq(self, x: Tensor, state: list[Any] | None = None) -> SeqOutput:
        """``x`` ``[T, B, ...]`` → the output layer over the ``T`` steps ``[T, B, C]``."""
        state = self.init_state() if state is None else state
        logits = []
        for x_t in x.unbind(0):
            out = self.step(x_t, state)
            logits.append(out.logits)
            state = out.state
        return SeqOutput(torch.stack(logits), state, [])

    def neuron_count(self) -> int:
        """Units per sample (every layer state), for the footprint metrics."""
        return sum(self.layer_sizes)


class GraphModel(SpikingModel):
    """A network over the nodes of one graph (``family = "graph"``): the batch is the ``N`` nodes.

    The graph is fixed for a cell and read from ``info.graph`` (:class:`snnarena.graph.Graph`:
    ``edge_index [2, E]``, ``n_nodes``) when the model is built; a step takes the node features
    (or spikes) ``x[t]`` ``[N, F]`` and gives node outputs ``[N, C]``. Synapses that mix nodes
    (:class:`snnarena.graph.GraphConv`: ``Â h W``) are affine in their input, so the stages keep
    the feedforward contract and ``bptt``, ``tbptt`` and ``checkpointed_bptt`` train graph models
    unchanged. Graph models take only the graph tasks (``node_classification``, ``link_prediction``).
    """

    family = "graph"
    tasks = GRAPH_TASKS

    def __init__(self, info: DataInfo, make_neuron: NeuronFactory, **params: Any) -> None:
        super().__init__(info, make_neuron, **params)
        if info.graph is None:
            raise ValueError(f"{self.name or type(self).__name__} needs graph data (DataInfo.graph), got none")
        self.graph = info.graph

    @classmethod
    def skip(cls, info: DataInfo) -> str | None:
        if info.graph is None:
            return f"{cls.name or cls.__name__} runs on graph data; the data's task is {info.task}"
        return None

    def neuron_count(self) -> int:
        """Neurons per node, summed over stages (one step on zero features of every node)."""
        param = next(self.parameters())
        with torch.no_grad():
            x = torch.zeros(self.graph.n_nodes, *self.info.input_shape, dtype=param.dtype, device=param.device)
            out = self.step(x, self.init_state())
        return sum(s[0].numel() for s in out.spikes)


#: Modules whose output is an affine function of their input (for fixed parameters).
AFFINE_MODULES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    nn.Sequential,
    GraphConv,
)


def non_affine_layers(module: nn.Module) -> list[str]:
    """Names of the sub-modules of ``module`` that are not known to be affine in their input."""
    return [
        f"{name or '<root>'}: {type(m).__name__}"
        for name, m in module.named_modules()
        if not isinstance(m, AFFINE_MODULES)
    ]
