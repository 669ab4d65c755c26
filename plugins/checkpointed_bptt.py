"""``checkpointed_bptt``: exact BPTT under a memory budget (Gruslys et al., NeurIPS 2016).

The model is driven through its transition ``model.step(x_t, h_t) → (o_t, h_{t+1})`` (``x_t``
``[B, ...]``, logits ``o_t`` ``[B, C]``, ``h`` the state of every stage), a *unit* of ``segment``
consecutive steps at a time: the plan below is over ``U = ⌈T/segment⌉`` units (the last may be
shorter), and each unit runs as one ``model.forward_seq(x[a:b], h_a)`` from its carried state
(``step`` for a one-step unit), so a fused multi-step model (:mod:`snnarena.multistep`) runs a unit
as one call per layer and back-propagates it as one node. ``segment = 1`` (the default) is the
paper's per-step plan; a larger unit trades one unit's graph memory for far fewer calls (at
``T = 1000`` the per-step plan is Python-bound). Instead of keeping all ``T`` steps of graph (BPTT,
memory ``O(T)``), the executor keeps at most ``m`` *slots* of checkpoints and recomputes the rest;
the gradient is BPTT's exactly (float round-off).

**Memory unit.** One slot holds one hidden state ``h`` (all stages; ``b_h`` bytes for the batch).
Storing a hidden state costs 1 slot. Storing a unit's *internal state* — the graph of unit ``u``
run with autograd (its saved activations, ``b_a`` bytes), its input state (the leaf receiving
``dL/dh``) and its output state — costs ``α = 2 + ⌈(b_a + b_o)/b_h⌉`` slots (``b_o``: the
unit's logits). The budget ``m`` counts every held slot, including the one holding the start of
the sequence; the one unit being back-propagated at a time (its graph and loss, input and output
states) comes on top, so saved activations plus stored states stay within ``m·b_h`` plus one unit.
``b_h``, ``b_a`` and ``b_o`` are measured on the batch by a probe (step 0 from rest without graph,
then one unit with graph under a ``SavedTensorMeter``, reported as ``probe_steps``, not part of the
count) when the policy (ism, msm) or a byte budget needs them: ``budget_bytes`` becomes
``m = ⌊budget_bytes / b_h⌋`` slots (so it depends on the batch size), and must hold at least one
state. Without a budget ``m = ⌈√U⌉`` slots.

**Cost.** ``C(t, m)`` = the fewest forward unit executions (with or without graph) that
back-propagate a segment of ``t`` units whose start state is held, within ``m`` slots (below,
"step" means unit):

* leaf (every policy): run ``t − 1`` steps without graph, the last one with graph,
  back-propagate it, then solve the first ``t − 1`` steps: ``t + C(t − 1, m)``;
  with ``m = 1`` this is all one can do: ``C(t, 1) = t(t+1)/2``;
* HSM split at ``1 ≤ y < t``: run ``y`` steps, store ``h_y`` (right part's start), solve the
  right part with ``m − 1`` slots, then the left part with ``m``: ``y + C(t−y, m−1) + C(y, m)``;
* ISM split at ``1 ≤ y < t``: run ``y − 1`` steps, run step ``y`` with graph and keep it (α
  slots), solve the right part with ``m − α``, back-propagate the kept step (no recomputation),
  then the first ``y − 1`` steps: ``y + C(t−y, m−α) + C(y−1, m)``; needs ``m − α ≥ 1``;
* ``C(0, m) = 0``, ``C(1, m) = 1``. Policy ``hsm`` uses leaf + HSM splits, ``ism`` leaf + ISM
  splits, ``msm`` all of them. :func:`cost_table` is the dynamic program, :func:`forward_cost`
  reads ``C(T, m)`` off it and the executor follows the argmin choices, so the executed unit
  count (``last_stats.forward_units``) equals ``forward_cost(U, m, policy, α)``, and the time steps
  run (``last_forward_steps``) are ``segment`` times that when ``segment`` divides ``T``. Budgets beyond what
  helps are capped (``m ≤ T`` for HSM, ``m ≤ 1 + α(T−1)`` = store everything for ISM/MSM; both
  exact) and the table is limited to :data:`DP_MAX_SLOTS` rows. ISM with ``m ≤ α`` can only use
  leaves (``t(t+1)/2``). The table costs ``O(m·T²)`` integer operations (about a second for
  ``T = 1000``, ``m = 100``) and is cached per policy and α.

``policy="sqrt"`` is the √T baseline (Chen et al. 2016): hidden states every
``k = ⌈√T⌉`` steps, then each segment is recomputed with graph and back-propagated as a whole,
last segment first: ``2T − (length of the last segment)`` step executions, ``⌈T/k⌉`` states plus
``k`` steps of graph; it takes no budget.

**Backward.** Segments are back-propagated last step first, carrying ``g = dL/dh`` backward:
``torch.autograd.backward([objective, *h_out], [1, *g])`` on one unit (or one √T segment) at a
time fills ``p.grad`` and the input leaf's ``.grad`` (the next ``g``). ``per_step``:
the objective of steps ``a .. b−1`` is ``loss.segment`` (``Σ_t CE(o_t, y)/T``). ``rate``: ``L = CE(ō, y)`` with
``ō = (1/T) Σ_t o_t`` so ``dL/do_t = (1/T)·∇_ō CE(ō, y)`` is the same for every step; ``ō`` is
known when the first step is back-propagated (step ``T − 1``: every earlier step has run by then)
and the objective of step ``t`` is ``⟨o_t, dL/do_t⟩``.

Pitfalls handled: the step must be a pure function of ``(x_t, h_t)`` (the built-in neurons are);
BatchNorm would update its running statistics on every recomputation, so such models are skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

import snnarena
from snnarena.claims import Check, Claim, Conditions
from snnarena.data import DataInfo
from snnarena.loss import LOSS_FORMS, SequenceLoss
from snnarena.measure import PhaseClock, SavedTensorMeter, report_held_bytes
from snnarena.method import GradientMethod
from snnarena.model import SeqOutput, SpikingModel
from snnarena.neuron import detach_state
from snnarena.params import Param
from snnarena.registry import Register
from snnarena.task import TASK_KINDS

POLICIES: tuple[str, ...] = ("hsm", "ism", "msm", "sqrt")
#: Most slot rows the dynamic program computes (budgets above are capped to it).
DP_MAX_SLOTS = 256
#: Cost of an infeasible (t, m) cell in :func:`cost_table`.
INFEASIBLE = 2**60

LEAF, HIDDEN, INTERNAL = 0, 1, 2


# -- the dynamic program ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Tables:
    cost: np.ndarray  # [m+1, T+1] C(t, m)
    kind: np.ndarray  # [m+1, T+1] LEAF / HIDDEN / INTERNAL
    split: np.ndarray  # [m+1, T+1] y


def _check_policy(policy: str, alpha: int) -> None:
    if policy not in ("hsm", "ism", "msm"):
        raise ValueError(f"policy: expected one of 'hsm', 'ism', 'msm' for the dynamic program, got {policy!r}")
    if alpha < 1:
        raise ValueError(f"alpha: expected an integer >= 1, got {alpha}")


def _solve(T: int, m: int, policy: str, alpha: int) -> _Tables:
    """Fill ``C(t, mm)`` for ``t <= T``, ``mm <= m`` row-block by row-block over ``t``."""
    cost = np.full((m + 1, T + 1), INFEASIBLE, dtype=np.int64)
    kind = np.zeros((m + 1, T + 1), dtype=np.int8)
    split = np.zeros((m + 1, T + 1), dtype=np.int64)
    cost[1:, 0] = 0
    for t in range(1, T + 1):
        best = np.full(m + 1, INFEASIBLE, dtype=np.int64)
        best[1:] = t + cost[1:, t - 1]  # leaf
        best_kind = np.full(m + 1, LEAF, dtype=np.int8)
        best_y = np.full(m + 1, t, dtype=np.int64)
        ys = np.arange(1, t)
        if t > 1 and policy in ("hsm", "msm") and m >= 2:
            # rows mm = 2..m: y + C(t−y, mm−1) + C(y, mm)
            cand = ys[None, :] + cost[1:m, t - 1 : 0 : -1] + cost[2 : m + 1, 1:t]
            j = cand.argmin(axis=1)
            value = cand[np.arange(m - 1), j]
            better = value < best[2:]
            best[2:] = np.where(better, value, best[2:])
            best_kind[2:] = np.where(better, HIDDEN, best_kind[2:])
            best_y[2:] = np.where(better, ys[j], best_y[2:])
        if t > 1 and policy in ("ism", "msm") and m >= alpha + 1:
            # rows mm = α+1..m: y + C(t−y, mm−α) + C(y−1, mm)
            cand = ys[None, :] + cost[1 : m + 1 - alpha, t - 1 : 0 : -1] + cost[alpha + 1 : m + 1, 0 : t - 1]
            j = cand.argmin(axis=1)
            value = cand[np.arange(m - alpha), j]
            better = value < best[alpha + 1 :]
            best[alpha + 1 :] = np.where(better, value, best[alpha + 1 :])
            best_kind[alpha + 1 :] = np.where(better, INTERNAL, best_kind[alpha + 1 :])
            best_y[alpha + 1 :] = np.where(better, ys[j], best_y[alpha + 1 :])
        cost[:, t] = np.minimum(best, INFEASIBLE)
        kind[:, t] = best_kind
        split[:, t] = best_y
    for array in (cost, kind, split):
        array.flags.writeable = False
    return _Tables(cost, kind, split)


_CACHE: dict[tuple[str, int], _Tables] = {}


def _tables(T: int, m: int, policy: str, alpha: int) -> _Tables:
    """Cached tables covering ``(T, m)``: rows and columns do not depend on the table's size."""
    alpha = alpha if policy != "hsm" else 1
    cached = _CACHE.get((policy, alpha))
    if cached is not None:
        rows, cols = cached.cost.shape
        if rows > m and cols > T:
            return cached
        T, m = max(T, cols - 1), max(m, rows - 1)
    tables = _solve(T, m, policy, alpha)
    _CACHE[(policy, alpha)] = tables
    return tables


def cost_table(T: int, m: int, policy: str = "hsm", alpha: int = 1) -> np.ndarray:
    """The DP table ``C[mm, t]`` (forward step executions) for ``t <= T`` and ``mm <= m`` slots.

    Row 0 (no slot to hold the start) is :data:`INFEASIBLE`; ``alpha`` is the slot cost of an
    internal state (ignored by ``hsm``). Not capped: ``m`` must be ``<= DP_MAX_SLOTS``.
    """
    _check_policy(policy, alpha)
    if T < 0 or not 1 <= m <= DP_MAX_SLOTS:
        raise ValueError(f"m: expected an integer in [1, {DP_MAX_SLOTS}] (and T >= 0), got T={T}, m={m}")
    return _tables(T, m, policy, alpha).cost[: m + 1, : T + 1].copy()


def effective_slots(T: int, m: int, policy: str = "hsm", alpha: int = 1) -> int:
    """The budget the executor plans with: ``m`` capped where more slots cannot help (see module doc)."""
    _check_policy(policy, alpha)
    if m < 1:
        raise ValueError(f"m: expected an integer >= 1 slot, got {m}")
    full = max(T, 1) if policy == "hsm" else 1 + alpha * max(T - 1, 0)
    return min(m, full, DP_MAX_SLOTS)


def forward_cost(T: int, m: int, policy: str = "hsm", alpha: int = 1) -> int:
    """``C(T, m)``: the forward step executions of the optimal ``policy`` with ``m`` slots."""
    mm = effective_slots(T, m, policy, alpha)
    return int(_tables(T, mm, policy, alpha).cost[mm, T])


def sqrt_segment(T: int) -> int:
    """Segment length ``k = ⌈√T⌉`` of the √T baseline."""
    return max(1, math.ceil(math.sqrt(T)))


def sqrt_cost(T: int) -> int:
    """Step executions of the √T baseline: ``T − len(last segment)`` first-pass steps plus ``T``."""
    if T == 0:
        return 0
    k = sqrt_segment(T)
    last_start = ((T - 1) // k) * k
    return last_start + T


# -- state helpers -----------------------------------------------------------------------------


def _leaves(state: Any) -> list[Tensor]:
    """The tensors of a nested state (list / tuple / NamedTuple / None) in a fixed order."""
    if isinstance(state, Tensor):
        return [state]
    if isinstance(state, (list, tuple)):
        return [t for s in state for t in _leaves(s)]
    return []


def _as_leaf(state: Any) -> Any:
    """The state with every floating tensor replaced by a detached leaf that requires grad."""
    if isinstance(state, Tensor):
        leaf = state.detach()
        return leaf.requires_grad_(True) if leaf.is_floating_point() else leaf
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(_as_leaf(s) for s in state))
    if isinstance(state, (list, tuple)):
        return type(state)(_as_leaf(s) for s in state)
    return state


def _nbytes(tensors: list[Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(frozen=True)
class StepSizes:
    """Measured sizes for one batch: a hidden state, one step's saved activations, its logits."""

    state_bytes: int
    step_saved_bytes: int
    logits_bytes: int

    @property
    def alpha(self) -> int:
        """Slots an internal state costs: activations + logits, input state, output state."""
        return 2 + math.ceil((self.step_saved_bytes + self.logits_bytes) / max(self.state_bytes, 1))

    @property
    def step_bytes(self) -> int:
        """Bytes of the one step being back-propagated (activations, logits, input and output)."""
        return self.step_saved_bytes + self.logits_bytes + 2 * self.state_bytes


def measure_step(model: SpikingModel, x: Tensor, steps: int = 1) -> StepSizes:
    """Probe one unit of ``steps`` time steps (``x`` ``[T, B, ...]``): ``x[0]`` from rest without
    graph, then the next ``steps`` steps (``x[1 : 1+steps]``; ``x[0:1]`` when ``T = 1``) as one
    ``forward_seq`` with graph under a meter. ``step_saved_bytes`` and ``logits_bytes`` are the unit's."""
    exclude = list(model.parameters()) + [x]
    with torch.no_grad():
        state = model.forward_seq(x[:1], model.init_state()).state
    t = 1 if x.shape[0] > 1 else 0
    leaf = _as_leaf(state)
    with SavedTensorMeter(exclude=exclude + _leaves(leaf)) as meter, torch.enable_grad():
        out = model.forward_seq(x[t : t + steps], leaf)
    saved = meter.peak_bytes
    return StepSizes(_nbytes(_leaves(out.state)), saved, _nbytes([out.logits]))


def unit_bounds(T: int, steps: int) -> list[int]:
    """Start of every DP unit and ``T``: ``[0, k, 2k, ..., T]`` (the last unit may be shorter)."""
    return [*range(0, T, steps), T]


# -- the executor ------------------------------------------------------------------------------


@dataclass
class _Graph:
    """Time steps ``t0 .. t0+k−1`` run with autograd (one ``forward_seq``) from the leaves ``inputs``;
    ``logits`` ``[k, B, C]``. ``inputs`` and ``outputs`` list the state tensors in the same order
    (:func:`_leaves`)."""

    t0: int
    inputs: list[Tensor]
    outputs: list[Tensor]
    state: Any
    logits: Tensor


@dataclass
class ExecutionStats:
    """What one ``accumulate_gradients`` call did (kept as ``method.last_stats``).

    The plan counts *units* of ``segment`` time steps (``units = ⌈T/segment⌉``): ``predicted_units``
    is ``C(units, slots)``, ``forward_units`` the units executed, ``forward_steps`` the time steps
    they cover (equal to the units for ``segment = 1``)."""

    policy: str
    T: int
    slots: int
    alpha: int
    predicted_units: int
    segment: int = 1
    forward_units: int = 0
    forward_steps: int = 0
    probe_steps: int = 0
    peak_slots: int = 0
    peak_state_bytes: int = 0
    live_state_bytes: int = 0
    sizes: StepSizes | None = None


class _Executor:
    """Runs one batch under a plan; see the module docstring for the algorithm.

    Positions are unit indices: unit ``u`` is time steps ``bounds[u] .. bounds[u+1]−1``. Each unit
    runs as one ``model.forward_seq`` from the carried state (the model contract: ``forward_seq``
    resumes from a state exactly as ``step`` would; a one-step unit calls ``step``), without graph
    when advancing, with graph when it is back-propagated. Advancing unit by unit keeps the
    transient activations of a no-graph run within one unit's.
    """

    def __init__(
        self,
        model: SpikingModel,
        x: Tensor,
        y: Tensor,
        loss: SequenceLoss,
        stats: ExecutionStats,
        bounds: list[int],
    ) -> None:
        self.model, self.x, self.y, self.loss, self.stats = model, x, y, loss, stats
        self.T = x.shape[0]
        self.bounds = bounds
        self.logit_sum: Tensor | None = None
        self.next_unseen = 0  # first time step whose logits are not in ``logit_sum`` yet
        self.grad_logits: Tensor | None = None
        self.value = 0.0
        self.in_use = 0

    # bookkeeping
    def _alloc(self, slots: int, nbytes: int) -> None:
        report_held_bytes(nbytes)  # stored states count towards the cell's activation memory
        self.in_use += slots
        self.stats.live_state_bytes += nbytes
        self.stats.peak_slots = max(self.stats.peak_slots, self.in_use)
        self.stats.peak_state_bytes = max(self.stats.peak_state_bytes, self.stats.live_state_bytes)

    def _free(self, slots: int, nbytes: int) -> None:
        report_held_bytes(-nbytes)
        self.in_use -= slots
        self.stats.live_state_bytes -= nbytes

    def _run(self, state: Any, u: int, n: int) -> SeqOutput:
        """Units ``u .. u+n−1`` as one ``forward_seq`` (graph as the caller's grad mode says)."""
        a, b = self.bounds[u], self.bounds[u + n]
        if b - a == 1:  # one step: ``step`` (the same values) without the sequence path's overhead
            one = self.model.step(self.x[a], state)
            out = SeqOutput(one.logits.unsqueeze(0), one.state, one.spikes)
        else:
            out = self.model.forward_seq(self.x[a:b], state)
        self.stats.forward_units += n
        self.stats.forward_steps += b - a
        if a <= self.next_unseen < b:  # the first pass runs in order: add the logits of new steps
            new = out.logits[self.next_unseen - a :].detach().sum(0)
            self.logit_sum = new if self.logit_sum is None else self.logit_sum + new
            self.next_unseen = b
        return out

    # running units
    def advance(self, state: Any, u: int, n: int) -> Any:
        """Run units ``u .. u+n−1`` without graph; returns the state at the start of unit ``u+n``."""
        with torch.no_grad():
            for i in range(u, u + n):
                state = self._run(state, i, 1).state
        return state

    def run_graph(self, state: Any, u: int, n: int) -> _Graph:
        """Run units ``u .. u+n−1`` with graph from a leaf copy of ``state``."""
        leaf = _as_leaf(state)
        with torch.enable_grad():
            out = self._run(leaf, u, n)
        return _Graph(self.bounds[u], _leaves(leaf), _leaves(out.state), out.state, out.logits)

    def backprop(self, graph: _Graph, grad_out: list[Tensor | None] | None) -> list[Tensor | None]:
        """Back-propagate ``graph`` given ``dL/dh`` at its end; returns ``dL/dh`` at its start."""
        if self.grad_logits is None and self.loss.form == "rate":
            self._rate_gradient()
        if self.loss.form == "rate":
            assert self.grad_logits is not None
            objective = (graph.logits * self.grad_logits).sum()
        else:
            objective = self.loss.segment(graph.logits, self.y, self.T, graph.t0)
            self.value += float(objective.detach())
        tensors, grads = [objective], [torch.ones_like(objective)]
        for out, g in zip(graph.outputs, grad_out or [], strict=False):
            if g is not None and out.requires_grad:
                tensors.append(out)
                grads.append(g)
        if any(t.requires_grad for t in tensors):
            torch.autograd.backward(tensors, grads)
        return [leaf.grad if leaf.requires_grad else None for leaf in graph.inputs]

    def _rate_gradient(self) -> None:
        """``dL/do_t = (1/T) ∇_ō CE(ō, y)`` once every step's logits are known."""
        if self.next_unseen != self.T or self.logit_sum is None:
            raise RuntimeError(f"rate loss: only {self.next_unseen} of {self.T} steps ran before the first backward")
        with torch.enable_grad():
            mean = (self.logit_sum / self.T).requires_grad_(True)
            value = self.loss.full(mean.unsqueeze(0), self.y)
            (grad,) = torch.autograd.grad(value, mean)
        self.grad_logits = grad / self.T
        self.value = float(value.detach())

    # plans
    def run_dp(self, tables: _Tables, m: int, alpha: int, clock: PhaseClock) -> float:
        units = len(self.bounds) - 1
        stack: list[tuple[Any, ...]] = [("seg", self.model.init_state(), 0, units, m)]
        self._alloc(1, 0)  # the start of the sequence (the rest state)
        grad: list[Tensor | None] | None = None
        with clock.phase("forward"):
            grad = self._drain(stack, tables, alpha, grad, until_backward=True)
        with clock.phase("backward"):
            self._drain(stack, tables, alpha, grad, until_backward=False)
        self._free(1, 0)
        return self.value

    def _drain(
        self,
        stack: list[tuple[Any, ...]],
        tables: _Tables,
        alpha: int,
        grad: list[Tensor | None] | None,
        until_backward: bool,
    ) -> list[Tensor | None] | None:
        while stack:
            if until_backward and stack[-1][0] == "bwd":
                return grad
            task = stack.pop()
            if task[0] == "free":
                self._free(task[1], task[2])
                continue
            if task[0] == "bwd":
                _, graph, slots, nbytes = task
                grad = self.backprop(graph, grad)
                self._free(slots, nbytes)
                continue
            _, state, t0, t1, mm = task
            t = t1 - t0
            if t == 0:
                continue
            kind, y = int(tables.kind[mm, t]), int(tables.split[mm, t])
            if kind == HIDDEN:
                s_y = self.advance(state, t0, y)
                nbytes = _nbytes(_leaves(s_y))
                self._alloc(1, nbytes)
                stack.append(("seg", state, t0, t0 + y, mm))
                stack.append(("free", 1, nbytes))
                stack.append(("seg", s_y, t0 + y, t1, mm - 1))
            elif kind == INTERNAL:
                before = self.advance(state, t0, y - 1)
                graph = self.run_graph(before, t0 + y - 1, 1)
                nbytes = _nbytes(graph.inputs) + _nbytes(graph.outputs)
                self._alloc(alpha, nbytes)
                stack.append(("seg", state, t0, t0 + y - 1, mm))
                stack.append(("bwd", graph, alpha, nbytes))
                stack.append(("seg", detach_state(graph.state), t0 + y, t1, mm - alpha))
            else:  # leaf: the last step of the segment, back-propagated at once
                before = self.advance(state, t0, t - 1)
                graph = self.run_graph(before, t1 - 1, 1)
                stack.append(("seg", state, t0, t1 - 1, mm))
                stack.append(("bwd", graph, 0, 0))
        return grad

    def run_sqrt(self, clock: PhaseClock) -> float:
        """The √T baseline over units of ``k = ⌈√T⌉`` steps (``bounds``): a state at every unit's start,
        then each unit recomputed with graph and back-propagated, last unit first."""
        units = len(self.bounds) - 1
        with clock.phase("forward"):
            states = [self.model.init_state()]
            self._alloc(1, 0)
            for u in range(units - 1):
                states.append(self.advance(states[-1], u, 1))
                self._alloc(1, _nbytes(_leaves(states[-1])))
            graph = self.run_graph(states[-1], units - 1, 1)
        grad: list[Tensor | None] | None = None
        with clock.phase("backward"):
            for u in range(units - 1, -1, -1):
                if u < units - 1:
                    graph = self.run_graph(states[u], u, 1)
                grad = self.backprop(graph, grad)
                del graph
                self._free(1, _nbytes(_leaves(states[u])))
                states.pop()
        return self.value


# -- the method ----------------------------------------------------------------------------------


_GRUSLYS_SOURCE = "Gruslys et al., NeurIPS 2016 (arXiv 1606.03401)"
_GRUSLYS_T1000 = Conditions(
    "an RNN over sequences of length 1000, memory budget and alpha not stated in the abstract",
    T=(1000,),
)
#: The paper's headline claims, checked by ``snnarena claims`` (:mod:`snnarena.claims`).
PAPER_CLAIMS = (
    Claim(
        "memory-vs-bptt",
        "At T = 1000 it saves 95 % of BPTT's memory (saved bytes at most 0.05 x BPTT's).",
        f"{_GRUSLYS_SOURCE}, abstract ('saves 95% of memory usage while using only one third more time')",
        "abstract, confirmed",
        Check("ratio", "peak_activation_bytes", "<=", 0.05, reference="bptt"),
        _GRUSLYS_T1000,
    ),
    Claim(
        "time-vs-bptt",
        "... for about one third more time per iteration than BPTT (step time at most 1.34 x BPTT's).",
        f"{_GRUSLYS_SOURCE}, abstract",
        "abstract, confirmed",
        Check("ratio", "step_time_ms", "<=", 1.34, reference="bptt"),
        _GRUSLYS_T1000,
    ),
)


class CheckpointedBPTT(GradientMethod[SpikingModel]):
    """Exact BPTT within a memory budget: DP checkpointing (HSM/ISM/MSM) or √T checkpoints."""

    name = "checkpointed_bptt"
    CLAIMS = PAPER_CLAIMS
    memory_class = "budget"
    families = frozenset({"feedforward", "residual", "recurrent", "convergent", "graph"})
    loss_forms = frozenset(LOSS_FORMS)
    tasks = frozenset(TASK_KINDS)  # passes start/t to the loss: per-step targets split exactly
    PARAMS = (
        Param(
            "policy",
            "str",
            "hsm",
            "hsm: store hidden states; ism: store steps' internal states; "
            "msm: mix both; sqrt: a hidden state every ceil(sqrt(T)) steps",
            choices=POLICIES,
        ),
        Param(
            "budget_slots",
            "int",
            None,
            "memory budget in slots of one hidden state "
            "(default ceil(sqrt(T)); at most one of budget_slots/budget_bytes)",
            low=1,
            nullable=True,
        ),
        Param(
            "budget_bytes",
            "int",
            None,
            "memory budget in bytes, converted to floor(bytes / bytes of one hidden state of the batch) slots",
            low=1,
            nullable=True,
        ),
        Param(
            "segment",
            "int",
            1,
            "time steps per unit of the plan: each unit runs as one forward_seq and is back-propagated "
            "at once (1: the paper's per-step plan; more: fewer, larger calls for one unit's graph memory)",
            low=1,
        ),
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        slots, nbytes = self.params["budget_slots"], self.params["budget_bytes"]
        if slots is not None and nbytes is not None:
            raise ValueError(
                f"budget_slots, budget_bytes: give at most one memory budget, got budget_slots={slots} "
                f"and budget_bytes={nbytes}"
            )
        if self.params["policy"] == "sqrt" and (slots is not None or nbytes is not None):
            raise ValueError(
                "budget_slots/budget_bytes: policy 'sqrt' fixes its memory (ceil(T/k) states plus k "
                "steps, k = ceil(sqrt(T))); leave both null or use policy hsm/ism/msm"
            )
        if self.params["policy"] == "sqrt" and self.params["segment"] != 1:
            raise ValueError(
                f"segment: policy 'sqrt' fixes its segments (k = ceil(sqrt(T)) steps), got segment="
                f"{self.params['segment']}; leave it at 1 or use policy hsm/ism/msm"
            )
        #: Statistics of the last ``accumulate_gradients`` call.
        self.last_stats: ExecutionStats | None = None

    @property
    def last_forward_steps(self) -> int:
        """Time steps the last batch ran forward, with or without graph (probe steps excluded)."""
        if self.last_stats is None:
            raise RuntimeError("no batch has been processed yet")
        return self.last_stats.forward_steps

    def skip(self, model: SpikingModel, info: DataInfo, loss: SequenceLoss) -> str | None:
        reason = super().skip(model, info, loss)
        if reason is None and model.has_batch_norm():
            return (
                "checkpointed_bptt recomputes time steps, and BatchNorm layers would update their "
                "running statistics on every recomputation"
            )
        return reason

    def plan(self, model: SpikingModel, x: Tensor) -> tuple[ExecutionStats, list[int], _Tables | None]:
        """The slot budget, α, unit bounds (:func:`unit_bounds`) and predicted cost for batch ``x``
        ``[T, B, ...]``."""
        policy, T = self.params["policy"], x.shape[0]
        if policy == "sqrt":
            bounds = unit_bounds(T, sqrt_segment(T))  # the first pass runs all units but the last
            return ExecutionStats(policy, T, 0, 1, max(2 * len(bounds) - 3, 0), sqrt_segment(T)), bounds, None
        segment = min(self.params["segment"], max(T, 1))
        bounds = unit_bounds(T, segment)
        units = len(bounds) - 1
        sizes = None
        if policy != "hsm" or self.params["budget_bytes"] is not None:
            sizes = measure_step(model, x, segment)
        alpha = sizes.alpha if sizes is not None and policy != "hsm" else 1
        if self.params["budget_bytes"] is not None:
            assert sizes is not None
            budget = self.params["budget_bytes"]
            if budget < sizes.state_bytes:
                raise ValueError(
                    f"budget_bytes: expected an integer >= {sizes.state_bytes} (one stored hidden state "
                    f"of this model and batch), got {budget}"
                )
            m = budget // max(sizes.state_bytes, 1)
        elif self.params["budget_slots"] is not None:
            m = self.params["budget_slots"]
        else:
            m = sqrt_segment(units)
        mm = effective_slots(units, m, policy, alpha)
        tables = _tables(units, mm, policy, alpha)
        stats = ExecutionStats(policy, T, mm, alpha, int(tables.cost[mm, units]), segment, sizes=sizes)
        stats.probe_steps = 0 if sizes is None else 1 + min(segment, T - 1 if T > 1 else 1)
        return stats, bounds, tables

    def accumulate_gradients(
        self, model: SpikingModel, x: Tensor, y: Tensor, loss: SequenceLoss, clock: PhaseClock
    ) -> float:
        with clock.phase("forward"):
            stats, bounds, tables = self.plan(model, x)
        self.last_stats = stats  # live while the batch runs (stored-state bytes, step count)
        executor = _Executor(model, x, y, loss, stats, bounds)
        if tables is None:
            return executor.run_sqrt(clock)
        return executor.run_dp(tables, stats.slots, stats.alpha, clock)


@snnarena.hookimpl
def register_gradient_methods(register: Register) -> None:
    register(CheckpointedBPTT)
