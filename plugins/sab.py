"""Sparse Attentive Backtracking (Ke et al., NeurIPS 2018): the ``sab_lstm`` model, the ``sab`` method.

**Model** ``sab_lstm``: one LSTM layer of width ``H = hidden`` with sparse attention over memories
(inputs ``x_t`` ``[B, N_in]``, flattened; ``B`` the batch)::

    ĥ[t], c[t] = LSTM(x_t; h[t−1], c[t−1])                 torch.nn.LSTM's equations, h[−1] = c[−1] = 0
    M[t] = (m_0 = 0, h[k_att − 1], h[2·k_att − 1], ...)     memories stored before step t  [|M|, B, H]
    e_i  = vᵀ tanh(W_q ĥ[t] + W_k m_i + b_k)                raw score: an MLP of [ĥ[t]; m_i], width H
    S    = the min(k_top, |M|) memories of largest e_i      per sample
    w_i  = exp(e_i) / Σ_{j∈S} exp(e_j)  (i ∈ S), 0 else      normalised over the kept scores
    a[t] = Σ_{i∈S} w_i m_i                                  attention read  [B, H]
    h[t] = ĥ[t] + a[t]                                      fed back into step t+1, stored as a memory
    o[t] = W_out [h[t]; a[t]] + b_out                        logits  [B, C]

As in the release, the memories start with the zero state and are the attention-augmented
``h[t]``, stored after every ``k_att``-th step. Deliberate departures, each for a reason:

* ``k_top`` keeps ``k_top`` memories, the paper's semantics. The release subtracts the ``k_top``-th
  largest raw weight (+1e-7) before its ReLU, so it keeps only ``k_top − 1``, and while
  ``|M| ≤ k_top`` it returns the raw weights un-normalised.
* Normalisation: the paper's ``ReLU(e_i − δ) / Σ_j ReLU(e_j − δ)`` (``δ`` the ``(k_top+1)``-th
  largest score) is undefined while ``|M| ≤ k_top``; a softmax over the kept scores is defined for
  every ``|M|`` and gives every kept memory a positive weight (so a gradient).
* Score: the release's ``wᵀ tanh([ĥ; m_i])`` splits into ``w_hᵀ tanh ĥ + w_mᵀ tanh m_i``; the
  ``ĥ`` term is the same for every memory and cancels in its sparsifier, so its choice ignores the
  current state. The hidden layer above makes the choice depend on ``ĥ[t]`` (the paper's MLP).
* The scores of all memories are computed without graph (the choice of ``S`` is piecewise
  constant); the kept memories' scores are recomputed with graph. Values and gradients equal
  scoring every memory with graph (unkept memories get a zero gradient either way), but one step's
  graph holds ``k`` memories, not ``|M|``, so BPTT's saved bytes stay linear in ``T``.

The state (:class:`SABState`) carries ``c``, ``h``, ``a``, the memories, their keys
``W_k m_i + b_k`` (detached: used only to choose ``S``) and the step count, so ``bptt``, ``tbptt``
and ``checkpointed_bptt`` train the model unchanged.

**Method** ``sab``: truncated BPTT in blocks of ``K = k_trunc`` steps (``[0, K)``, ``[K, 2K)``, ...
as ``tbptt``; the release's first block has ``K − 1`` steps), plus the attention edges. Its
gradient is autograd's through the model's graph in which the LSTM state ``(h, c)`` entering each
block is detached but the memories are not: from a step, gradient runs back through the LSTM to
the start of its block (at most ``K`` steps), and through each kept attention edge into the memory
``m_i = h[s]``, from there back to the start of ``s``'s block (and again through the edges kept in
that block). With ``K ≥ T`` it is BPTT; with the memories detached at block starts too, it would be
``tbptt`` with ``K = k_trunc``.

It stores the memories *detached* and rebuilds each block's graph on demand:

1. forward, without graph: run the blocks; keep the memories and keys, ``(h, c)`` at every block
   start, and whether each block's loss share has a non-zero gradient; the last block runs with graph;
2. backward, last block first: block ``b`` is rebuilt (from its start state, the earlier memories
   as one leaf tensor) only if its loss share has a gradient or one of its memories received one;
   ``backward`` of its loss share plus ``G`` (``dL/dm`` accumulated for its memories) adds
   ``dL/dθ`` to ``p.grad`` and the leaf's gradient to ``G`` of the earlier memories.

The released code keeps every memory *with its graph* (``h_old`` is never detached): it has
SAB's gradient but saves no memory. Here the saved-bytes peak of one batch is (``e`` bytes per
element, ``A = H``, ``M_T = 1 + ⌊T / k_att⌋`` memories, ``n = ⌈T / K⌉`` blocks, ``k = min(k_top, M_T)``)::

    peak ≤ e·B·(2H + A)·M_T                   memories, their gradient G, keys (held outside autograd)
         + e·B·2H·(n − 1)                      (h, c) at every block start but the first
         + K·(e·B·(10H + k·(H + A + 1) + C)    the graph of one block (C outputs)
              + 8·B·(k + 2))                   its int64 indices (kept memories, batch, targets)

Per step autograd keeps ``8H`` for the LSTM (gates, cells, ``h[t−1]``, ``ĥ[t]``), ``2H`` for the
readout input ``[h; a]``, ``C`` for the loss, and ``H + A + 1`` per kept memory (the memory, its
``tanh`` layer, its weight). ``bptt`` keeps all ``T`` steps, about ``T·e·B·(10H + k·(H + A + 1) +
C)``; ``sab`` grows by ``e·B·((2H + A)/k_att + 2H/K)`` per step, so its ``memory_class`` is
``O(T)`` too (the paper's ``O(T/k_att·H)`` memories), with a far smaller slope and the one-block
graph as the constant. Work: one forward step per step, plus one per step of every rebuilt block
(at most ``T − K`` more); backward: the steps of the rebuilt blocks and of the last one
(``SAB.last_stats``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

import snnarena
from snnarena.claims import Check, Claim, Conditions
from snnarena.data import DataInfo
from snnarena.loss import SequenceLoss
from snnarena.measure import PhaseClock, report_held_bytes
from snnarena.method import GradientMethod
from snnarena.model import NeuronFactory, RecurrentStage, SeqOutput, SpikingModel, StepOutput
from snnarena.params import Param
from snnarena.registry import Register
from snnarena.task import TASK_KINDS
from snnarena_plugins.models import LSTMState, LSTMUnit

# -- the model ---------------------------------------------------------------------------------


class SABState(NamedTuple):
    """The state of the ``sab_lstm`` layer after step ``t`` (``steps = t + 1``)."""

    neuron: LSTMState  # c[t] [B, H]
    output: Tensor  # h[t] [B, H], fed back into step t+1
    read: Tensor  # a[t] [B, H]
    memories: Tensor  # [M, B, H]: m_0 = 0, then h every k_att steps
    keys: Tensor  # [M, B, H]: W_k m_i + b_k, detached (chooses the kept memories only)
    steps: int


class SABStage(RecurrentStage):
    """An LSTM layer (``synapse``: gate inputs, ``recurrent``: ``R h[t−1]``) with sparse attention."""

    def __init__(self, synapse: nn.Module, recurrent: nn.Linear, k_att: int, k_top: int) -> None:
        super().__init__(synapse, LSTMUnit(), recurrent)
        hidden = recurrent.in_features
        self.k_att, self.k_top = k_att, k_top
        self.query = nn.Linear(hidden, hidden, bias=False)  # W_q
        self.key = nn.Linear(hidden, hidden)  # W_k, b_k
        self.score = nn.Linear(hidden, 1, bias=False)  # v

    def rest(self, like: Tensor) -> SABState:
        """The state before step 0 for currents ``like`` ``[B, 4H]``: zeros and the zero memory."""
        zeros = like.new_zeros(like.shape[0], like.shape[1] // 4)
        memories = zeros.unsqueeze(0)
        with torch.no_grad():
            keys = self.key(memories)
        return SABState(LSTMState(zeros), zeros, zeros, memories, keys, 0)

    def attend(self, h_hat: Tensor, memories: Tensor, keys: Tensor) -> Tensor:
        """The read ``a[t]`` ``[B, H]`` of ``memories`` ``[M, B, H]`` for the provisional state ``ĥ[t]``."""
        query = self.query(h_hat)  # [B, H]
        k = min(self.k_top, memories.shape[0])
        with torch.no_grad():
            raw = self.score(torch.tanh(query.unsqueeze(0) + keys)).squeeze(-1)  # [M, B]
            chosen = raw.topk(k, dim=0).indices  # [k, B]
        kept = memories[chosen, torch.arange(memories.shape[1], device=memories.device)]  # [k, B, H]
        scores = self.score(torch.tanh(query.unsqueeze(0) + self.key(kept))).squeeze(-1)  # [k, B]
        return (torch.softmax(scores, dim=0).unsqueeze(-1) * kept).sum(0)

    def step_current(self, feedforward: Tensor, state: Any) -> tuple[Tensor, Any]:
        """One step from the gate inputs ``W x_t + b`` ``[B, 4H]`` and a :class:`SABState` (``None``
        at rest); returns ``h[t]`` ``[B, H]`` and the new :class:`SABState`."""
        current = self.total_current(feedforward, state)
        before: SABState = self.rest(feedforward) if state is None else state
        h_hat, neuron = self.neuron.step(current, before.neuron)
        read = self.attend(h_hat, before.memories, before.keys)
        h = h_hat + read
        memories, keys, steps = before.memories, before.keys, before.steps + 1
        if steps % self.k_att == 0:
            memories = torch.cat([memories, h.unsqueeze(0)])
            with torch.no_grad():
                keys = torch.cat([keys, self.key(h).unsqueeze(0)])
        return h, SABState(neuron, h, read, memories, keys, steps)


class SABLSTM(SpikingModel):
    """SAB's attention-augmented LSTM (see the module docstring); readout ``W_out [h[t]; a[t]] + b``."""

    name = "sab_lstm"
    family = "recurrent"
    uses_neuron = False
    PARAMS = (
        Param("hidden", "int", 128, "width H of the LSTM layer (and of the attention MLP)", low=1),
        Param("k_att", "int", 2, "a memory is stored every k_att steps", low=1),
        Param(
            "k_top",
            "int",
            10,
            "memories read per step, those of largest score (>= 2: one alone has weight 1, its scorer no gradient)",
            low=2,
        ),
    )

    @classmethod
    def check_T(cls, params: Mapping[str, Any], T: int) -> str | None:
        if int(params["k_att"]) >= T:
            return (
                f"sab_lstm: k_att={params['k_att']} is not shorter than the sequence (T={T}): no stored "
                f"memory would ever be read; use k_att <= {T - 1}"
            )
        return None

    def __init__(self, info: DataInfo, make_neuron: NeuronFactory, **params: Any) -> None:
        super().__init__(info, make_neuron, **params)
        hidden = self.params["hidden"]
        gates = nn.Linear(math.prod(info.input_shape), 4 * hidden)
        recurrent = nn.Linear(hidden, 4 * hidden, bias=False)
        bound = 1.0 / math.sqrt(hidden)  # torch.nn.LSTM's initialisation
        for p in (*gates.parameters(), *recurrent.parameters()):
            nn.init.uniform_(p, -bound, bound)
        synapse = nn.Sequential(nn.Flatten(), gates) if len(info.input_shape) > 1 else gates
        self.stages.append(SABStage(synapse, recurrent, self.params["k_att"], self.params["k_top"]))
        self.readout = nn.Linear(2 * hidden, info.n_classes)

    def step(self, x: Tensor, state: list[Any]) -> StepOutput:
        h, layer = self.stages[0].step(x, state[0])
        return StepOutput(self.readout(torch.cat([h, layer.read], -1)), [layer], [h])

    def forward_seq(self, x: Tensor, state: list[Any] | None = None) -> SeqOutput:
        """``x`` ``[T, B, ...]``: the gate inputs of all ``T·B`` samples at once, then the recurrence."""
        stage = self.stages[0]
        assert isinstance(stage, SABStage)
        layer = (state or self.init_state())[0]
        steps, batch = x.shape[:2]
        feedforward = stage.synapse(x.flatten(0, 1)).unflatten(0, (steps, batch))
        hs, reads = [], []
        for f_t in feedforward.unbind(0):
            h, layer = stage.step_current(f_t, layer)
            hs.append(h)
            reads.append(layer.read)
        h_seq = torch.stack(hs)
        logits = self.readout(torch.cat([h_seq, torch.stack(reads)], -1).flatten(0, 1))
        return SeqOutput(logits.unflatten(0, (steps, batch)), [layer], [h_seq])


def saved_bytes_bound(
    T: int, batch: int, hidden: int, n_classes: int, k_att: int, k_top: int, k_trunc: int, element_size: int = 8
) -> int:
    """The bound on ``sab``'s saved-bytes peak for one batch of ``T`` steps (module docstring)."""
    H = A = hidden
    memories, blocks = 1 + T // k_att, math.ceil(T / k_trunc)
    kept = min(k_top, memories)
    floats = (2 * H + A) * memories + 2 * H * (blocks - 1)
    floats += min(k_trunc, T) * (10 * H + kept * (H + A + 1) + n_classes)
    return element_size * batch * floats + min(k_trunc, T) * 8 * batch * (kept + 2)


# -- the method --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _BlockStart:
    """Block ``[t0, t1)`` and its start: detached ``h``, ``c`` (``None``: at rest), memories before it."""

    t0: int
    t1: int
    h: Tensor | None
    c: Tensor | None
    n_memories: int


@dataclass
class SABStats:
    """What one ``accumulate_gradients`` call did (kept as ``SAB.last_stats``)."""

    T: int
    blocks: int
    memories: int = 0
    rebuilt_blocks: int = 0  # blocks run again with graph in the backward (the last one never is)
    forward_steps: int = 0  # steps run, rebuilt ones included (BPTT: T)
    backward_steps: int = 0  # steps back-propagated (BPTT: T)
    held_bytes: int = 0  # kept outside autograd: memories, keys, G, block starts


@dataclass
class _Forward:
    """The gradient-free pass over all blocks but the last."""

    starts: list[_BlockStart] = field(default_factory=list)
    has_loss: list[bool] = field(default_factory=list)  # per block: its loss share has a gradient
    state: SABState | None = None  # at the start of the last block
    value: float = 0.0


@dataclass(frozen=True)
class _Graph:
    """A block run with graph: logits ``[t1 − t0, B, C]``, the leaf holding the memories before
    it (``None`` for the first block), the memories at its end (from row ``block.n_memories`` on: its own)."""

    block: _BlockStart
    logits: Tensor
    leaf: Tensor | None
    memories: Tensor


def _nbytes(*tensors: Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


_SOURCE = "Ke et al., NeurIPS 2018 (arXiv 1809.03702)"
_LONG_TERM = Conditions(
    "LSTM (hidden 128) on copying with T = 100-300 and adding with T = 200-400; k_trunc, k_top and k_att per task",
    datasets=("copy", "adding"),
    models=("sab_lstm",),
    T=(100, 200, 300),
)
#: The paper's headline claim: SAB matches or beats BPTT and truncated BPTT on long-term dependencies.
PAPER_CLAIMS = (
    Claim(
        "matches-bptt",
        "On tasks with long-term dependencies, SAB's test accuracy matches or beats full BPTT's (within 1 point).",
        f"{_SOURCE}, abstract ('matches or outperforms regular BPTT and truncated BPTT')",
        "abstract, confirmed (qualitative; the 1-point margin is ours; the copy/adding tables are not verified)",
        Check("difference", "test_accuracy", ">=", -0.01, reference="bptt"),
        _LONG_TERM,
    ),
    Claim(
        "matches-tbptt",
        "On tasks with long-term dependencies, SAB's test accuracy matches or beats truncated BPTT's (within 1 point).",
        f"{_SOURCE}, abstract ('matches or outperforms regular BPTT and truncated BPTT')",
        "abstract, confirmed (qualitative; the 1-point margin is ours)",
        Check("difference", "test_accuracy", ">=", -0.01, reference="tbptt"),
        _LONG_TERM,
    ),
)


class SAB(GradientMethod[SpikingModel]):
    """Truncated BPTT in blocks of ``k_trunc`` steps plus gradients through the kept attention edges."""

    name = "sab"
    memory_class = "O(T)"  # the memories grow like T/k_att; the graph is one block (module docstring)
    families = frozenset({"recurrent"})
    loss_forms = frozenset({"per_step"})  # each block back-propagates its own share of the loss
    CLAIMS = PAPER_CLAIMS
    tasks = frozenset(TASK_KINDS)  # passes start to loss.segment
    PARAMS = (Param("k_trunc", "int", 10, "steps of local backpropagation (the block length)", low=1),)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.last_stats: SABStats | None = None

    def skip(self, model: SpikingModel, info: DataInfo, loss: SequenceLoss) -> str | None:
        reason = super().skip(model, info, loss)
        if reason is None and not isinstance(model, SABLSTM):
            return f"sab trains the sab_lstm model only (it rebuilds its memories); {model.name!r} is another model"
        return reason

    def accumulate_gradients(
        self, model: SpikingModel, x: Tensor, y: Tensor, loss: SequenceLoss, clock: PhaseClock
    ) -> float:
        T, K = x.shape[0], self.params["k_trunc"]
        stats = SABStats(T, math.ceil(T / K))
        with clock.phase("forward"):
            run = _forward(model, x, y, loss, K)
            if run.state is None:  # a single block: plain BPTT
                bank = keys = x.new_zeros(0)
            else:
                bank, keys = run.state.memories, run.state.keys
            last = _graph(model, x, run.starts[-1], _state_at(run.starts[-1], bank, keys))
        stats.forward_steps = T
        G = torch.zeros_like(bank)  # dL/dm accumulated for the memories before the last block
        held = _nbytes(bank, G, keys) + sum(_nbytes(s.h, s.c) for s in run.starts)
        report_held_bytes(held)
        try:
            with clock.phase("backward"):
                received = torch.zeros(G.shape[0], dtype=torch.bool, device=G.device)
                value = _backprop(last, loss, y, T, G, received)
                stats.backward_steps = last.block.t1 - last.block.t0
                for b in range(len(run.starts) - 2, -1, -1):
                    block = run.starts[b]
                    own = received[block.n_memories : run.starts[b + 1].n_memories]
                    if run.has_loss[b] or bool(own.any()):
                        _backprop(_graph(model, x, block, _state_at(block, bank, keys)), loss, y, T, G, received)
                        stats.rebuilt_blocks += 1
                        stats.forward_steps += block.t1 - block.t0
                        stats.backward_steps += block.t1 - block.t0
        finally:
            report_held_bytes(-held)
        stats.memories, stats.held_bytes = last.memories.shape[0], held
        self.last_stats = stats
        return run.value + value


def _forward(model: SpikingModel, x: Tensor, y: Tensor, loss: SequenceLoss, K: int) -> _Forward:
    """Run every block but the last without graph, recording where each starts and whether its loss
    share has a gradient; ``state`` is where the last block starts."""
    run, T = _Forward(), x.shape[0]
    for t0 in range(0, T, K):
        t1 = min(t0 + K, T)
        state = run.state
        if state is None:  # at rest: the zero memory m_0, a constant, is already there
            run.starts.append(_BlockStart(t0, t1, None, None, 1))
        else:
            run.starts.append(_BlockStart(t0, t1, state.output.detach(), state.neuron.c.detach(), len(state.memories)))
        if t1 == T:
            break
        with torch.no_grad():
            out = model.forward_seq(x[t0:t1], [state])
        run.state = out.state[0]
        value, has_loss = _loss_share(out.logits, loss, y, T, t0)
        run.value += value
        run.has_loss.append(has_loss)
    return run


def _loss_share(logits: Tensor, loss: SequenceLoss, y: Tensor, T: int, t0: int) -> tuple[float, bool]:
    """A block's share of the loss (``logits`` ``[k, B, C]``) and whether its gradient is non-zero."""
    with torch.enable_grad():
        leaf = logits.detach().requires_grad_(True)
        value = loss.segment(leaf, y, T, t0)
        (grad,) = torch.autograd.grad(value, leaf)
    return float(value.detach()), bool((grad != 0).any())


def _state_at(block: _BlockStart, memories: Tensor, keys: Tensor) -> SABState | None:
    """The state entering ``block`` (``None``: at rest): its ``(h, c)``, the memories before it as a
    leaf that collects their gradient, their keys (the previous step's read is not needed)."""
    if block.h is None or block.c is None:
        return None
    leaf = memories[: block.n_memories].detach().requires_grad_(True)
    return SABState(LSTMState(block.c), block.h, torch.zeros_like(block.h), leaf, keys[: block.n_memories], block.t0)


def _graph(model: SpikingModel, x: Tensor, block: _BlockStart, state: SABState | None) -> _Graph:
    """``block`` run with graph from ``state`` (``None``: at rest)."""
    with torch.enable_grad():
        out = model.forward_seq(x[block.t0 : block.t1], [state])
    leaf = state.memories if state is not None else None
    return _Graph(block, out.logits, leaf, out.state[0].memories)


def _backprop(graph: _Graph, loss: SequenceLoss, y: Tensor, T: int, G: Tensor, received: Tensor) -> float:
    """Back-propagate a block's loss share and ``G`` of its own memories; add the gradient reaching
    the earlier memories to ``G``, marking those it reaches in ``received``."""
    first = graph.block.n_memories
    objective = loss.segment(graph.logits, y, T, graph.block.t0)
    tensors, grads = [objective], [torch.ones_like(objective)]
    end = min(len(graph.memories), len(G))
    own = graph.memories[first:end]
    if own.requires_grad and bool(received[first:end].any()):
        tensors.append(own)
        grads.append(G[first:end])
    torch.autograd.backward(tensors, grads)
    if graph.leaf is not None and graph.leaf.grad is not None:
        G[:first] += graph.leaf.grad
        received[:first] |= (graph.leaf.grad != 0).flatten(1).any(1)
        graph.leaf.grad = None  # now in G
    return float(objective.detach())


@snnarena.hookimpl
def register_models(register: Register) -> None:
    register(SABLSTM)


@snnarena.hookimpl
def register_gradient_methods(register: Register) -> None:
    register(SAB)
