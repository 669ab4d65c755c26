"""What a dataset asks of the network: the targets' shape, the loss, and the scores.

A dataset declares its task (``Dataset.task_for(params)``, and ``DataInfo.task`` on the data it
builds). The model's outputs are always ``o [T, B, C]``; the task says what ``y`` is and how ``o``
is judged:

* ``classification`` (sequence classification): ``y [B]`` class indices; loss forms ``per_step``
  ``(1/T) Σ_t CE(o[t], y)`` and ``rate`` ``CE((1/T) Σ_t o[t], y)``; score ``accuracy`` (argmax of
  the time-averaged outputs), higher is better;
* ``per_step_classification``: ``y [T, B]`` class indices at the scored steps and
  :data:`IGNORE_INDEX` (``-100``, torch's ``cross_entropy`` default) elsewhere; loss form
  ``per_step`` only, ``L = Σ_{scored (t, b)} CE(o[t, b], y[t, b]) / N`` with ``N`` the number of
  scored entries of the whole sequence; score ``accuracy`` over the scored entries (argmax per step);
* ``per_step_regression``: ``y [T, B, D]`` floats, NaN where not scored, ``C = D`` outputs; loss
  form ``per_step`` only, ``L = Σ_{scored (t, b, d)} (o[t, b, d] − y[t, b, d])² / N`` with ``N`` the
  number of scored entries of the whole sequence; score ``mse`` over the scored entries, lower is
  better;
* ``static_classification`` (a static input ``u [B, ...]`` shown at every step, for networks that
  relax to a fixed point; ``T`` is the relaxation length): ``y [B]`` class indices, judged on the
  last step only. Loss forms ``final`` ``CE(o[T−1], y)`` and ``final_mse``
  ``(1/B) Σ_b ½ ‖o[T−1, b] − onehot(y_b)‖²`` (Equilibrium Propagation's cost); score
  ``accuracy`` of ``argmax o[T−1]``;
* ``node_classification`` (one graph, the nodes are the batch: ``B = N`` nodes): ``y [N]`` class
  indices of the split's nodes, :data:`IGNORE_INDEX` on the others; loss forms ``per_step`` and
  ``rate`` as for sequence classification, averaged over the scored nodes; score ``accuracy``
  over the scored nodes;
* ``link_prediction`` (one graph, node outputs ``o [T, N, D]``): ``y [P, 3]`` integer rows
  ``(i, j, label)`` of candidate edges, label 1 for an edge and 0 for a sampled non-edge. An
  edge's logit is the inner product of its nodes' outputs, ``z_t(i, j) = ⟨o[t, i], o[t, j]⟩``;
  loss forms ``per_step`` ``(1/T) Σ_t BCE(z_t, label)`` and ``rate`` ``BCE(⟨ō_i, ō_j⟩, label)``
  with ``ō = (1/T) Σ_t o[t]``; scores ``roc_auc`` (primary) and ``average_precision`` of
  ``⟨ō_i, ō_j⟩``, both higher is better.

Because ``N`` counts the whole sequence, a per-step loss splits exactly over any partition of the
time axis (:meth:`Task.loss` of a slice ``y[start : start + k]``): segment and step shares sum to
the loss of the sequence, which is what truncated and online methods rely on. The ``final`` forms
split too: every share but the one holding step ``T − 1`` is zero.

A task has one or more scores (:attr:`Task.scores`, the first is the one train.select and the
report's ranking use). Scores are accumulated over batches as :class:`ScoreSums`; the graph tasks
score a whole graph in one batch, so their ROC-AUC and average precision are exact.

The tasks are plain immutable objects looked up by name with :func:`task_of`; there is no registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

TaskKind = Literal[
    "classification",
    "per_step_classification",
    "per_step_regression",
    "static_classification",
    "node_classification",
    "link_prediction",
]
#: Every task kind, sequence classification (the default) first.
TASK_KINDS: tuple[TaskKind, ...] = get_args(TaskKind)
#: Tasks whose samples are sequences (or static samples encoded over ``T`` steps) in batches.
SEQUENCE_TASKS: frozenset[str] = frozenset({"classification", "per_step_classification", "per_step_regression"})
#: Tasks on one graph whose nodes are the batch.
GRAPH_TASKS: frozenset[str] = frozenset({"node_classification", "link_prediction"})
#: The target of a step (or node) that is not scored.
IGNORE_INDEX = -100


@dataclass(frozen=True)
class Score:
    """A task score: results get ``test_<name>`` and ``val_<name>`` columns."""

    name: str
    higher_is_better: bool
    #: Short label for tables (``acc``, ``mse`` ...).
    short: str
    #: Human label for reports.
    label: str
    #: Shown in percent in reports.
    percent: bool


#: Every score a task may have, in column order.
SCORES: tuple[Score, ...] = (
    Score("accuracy", True, "acc", "accuracy", True),
    Score("mse", False, "mse", "MSE", False),
    Score("roc_auc", True, "auc", "ROC-AUC", True),
    Score("average_precision", True, "ap", "average precision", True),
)
SCORE_NAMES: tuple[str, ...] = tuple(s.name for s in SCORES)


def score_of(name: str) -> Score:
    """The :class:`Score` named ``name`` (one of :data:`SCORE_NAMES`)."""
    for score in SCORES:
        if score.name == name:
            return score
    raise ValueError(f"unknown score {name!r}; known scores: {', '.join(SCORE_NAMES)}")


@dataclass(frozen=True)
class ScoreSums:
    """A score accumulated over batches: ``total / count`` (NaN when nothing was scored)."""

    total: float = 0.0
    count: int = 0

    def __add__(self, other: ScoreSums) -> ScoreSums:
        return ScoreSums(self.total + other.total, self.count + other.count)

    @property
    def value(self) -> float:
        return self.total / self.count if self.count else float("nan")


class Task:
    """A task kind: the loss forms it supports, its loss, and its scores (names and directions)."""

    kind: ClassVar[TaskKind]
    #: Loss forms a cell of this task may use.
    loss_forms: ClassVar[frozenset[str]]
    #: The task's scores, primary first (see :data:`SCORES`).
    scores: ClassVar[tuple[str, ...]]

    @property
    def score(self) -> str:
        """The primary score: what train.select and the report's ranking use."""
        return self.scores[0]

    @property
    def higher_is_better(self) -> bool:
        """The direction of the primary score."""
        return score_of(self.score).higher_is_better

    def loss(self, form: str, logits: Tensor, y: Tensor, T: int, start: int = 0) -> Tensor:
        """The share of the loss owed to the outputs ``logits [k, B, C]`` of steps
        ``start .. start+k−1`` of a ``T``-step sequence with targets ``y`` (the whole sequence's)."""
        raise NotImplementedError

    def score_sums(self, logits: Tensor, y: Tensor) -> dict[str, ScoreSums]:
        """Each score's sums over one batch of whole sequences ``logits [T, B, C]``."""
        raise NotImplementedError

    def better(self, a: float, b: float) -> bool:
        """Whether primary score ``a`` is strictly better than ``b``."""
        return a > b if self.higher_is_better else a < b

    def check_targets(self, y: Tensor, T: int) -> str | None:
        """Why ``y`` is not a target batch of this task for ``T`` steps, or ``None``."""
        raise NotImplementedError


def _class_indices(y: Tensor, shape: str) -> str | None:
    if y.dim() != 1 or y.is_floating_point():
        return f"expected class indices of shape {shape}, got {y.dtype} {list(y.shape)}"
    return None


class SequenceClassification(Task):
    """One class per sequence, ``y [B]``."""

    kind = "classification"
    loss_forms = frozenset({"per_step", "rate"})
    scores = ("accuracy",)

    def loss(self, form: str, logits: Tensor, y: Tensor, T: int, start: int = 0) -> Tensor:
        k = logits.shape[0]
        if form == "rate":
            return F.cross_entropy(logits.mean(0), y) * (k / T)
        return F.cross_entropy(logits.flatten(0, 1), y.repeat(k)) * (k / T)

    def score_sums(self, logits: Tensor, y: Tensor) -> dict[str, ScoreSums]:
        return {"accuracy": ScoreSums(float((logits.mean(0).argmax(-1) == y).sum()), len(y))}

    def check_targets(self, y: Tensor, T: int) -> str | None:
        return _class_indices(y, "[B]")


def _scored_steps(y: Tensor, T: int, start: int, k: int, what: str) -> Tensor:
    """``y[start : start + k]``, checking that ``y`` covers the ``T`` steps."""
    if y.shape[0] != T:
        raise ValueError(f"{what} targets have {y.shape[0]} steps, expected T={T}")
    if start < 0 or start + k > T:
        raise ValueError(f"steps {start}..{start + k - 1} are outside a {T}-step sequence")
    return y[start : start + k]


class PerStepClassification(Task):
    """A class at the scored steps, ``y [T, B]`` with :data:`IGNORE_INDEX` elsewhere."""

    kind = "per_step_classification"
    loss_forms = frozenset({"per_step"})
    scores = ("accuracy",)

    def loss(self, form: str, logits: Tensor, y: Tensor, T: int, start: int = 0) -> Tensor:
        part = _scored_steps(y, T, start, logits.shape[0], self.kind)
        n = int((y != IGNORE_INDEX).sum())
        total = F.cross_entropy(logits.flatten(0, 1), part.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
        return total / max(n, 1)

    def score_sums(self, logits: Tensor, y: Tensor) -> dict[str, ScoreSums]:
        scored = y != IGNORE_INDEX
        return {"accuracy": ScoreSums(float((logits.argmax(-1) == y)[scored].sum()), int(scored.sum()))}

    def check_targets(self, y: Tensor, T: int) -> str | None:
        if y.dim() != 2 or y.shape[0] != T or y.is_floating_point():
            return f"expected class indices of shape [T={T}, B] (-100: not scored), got {y.dtype} {list(y.shape)}"
        return None


class PerStepRegression(Task):
    """A real vector at the scored steps, ``y [T, B, D]`` with NaN elsewhere."""

    kind = "per_step_regression"
    loss_forms = frozenset({"per_step"})
    scores = ("mse",)

    def loss(self, form: str, logits: Tensor, y: Tensor, T: int, start: int = 0) -> Tensor:
        part = _scored_steps(y, T, start, logits.shape[0], self.kind)
        n = int((~torch.isnan(y)).sum())
        scored = ~torch.isnan(part)
        error = torch.where(scored, logits - torch.nan_to_num(part), torch.zeros_like(logits))
        return error.pow(2).sum() / max(n, 1)

    def score_sums(self, logits: Tensor, y: Tensor) -> dict[str, ScoreSums]:
        scored = ~torch.isnan(y)
        return {"mse": ScoreSums(float((logits - y)[scored].pow(2).sum()), int(scored.sum()))}

    def check_targets(self, y: Tensor, T: int) -> str | None:
        if y.dim() != 3 or y.shape[0] != T or not y.is_floating_point():
            return f"expected float targets of shape [T={T}, B, D] (NaN: not scored), got {y.dtype} {list(y.shape)}"
        return None


class StaticClassification(Task):
    """One class per static sample, ``y [B]``, judged on the last of the ``T`` relaxation steps."""

    kind = "static_classification"
    loss_forms = frozenset({"final", "final_mse"})
    scores = ("accuracy",)

    def loss(self, form: str, logits: Tensor, y: Tensor, T: int, start: int = 0) -> Tensor:
        k = logits.shape[0]
        if start < 0 or start + k > T:
            raise ValueError(f"steps {start}..{start + k - 1} are outside a {T}-step relaxation")
        if start + k < T:
            return logits.sum() * 0.0  # no share: keeps the graph so backward() runs
        last = logits[-1]
        if form == "final_mse":
            target = F.one_hot(y, last.shape[-1]).to(last.dtype)
            return 0.5 * (last - target).pow(2).sum() / len(y)
        return F.cross_entropy(last, y)

    def score_sums(self, logits: Tensor, y: Tensor) -> dict[str, ScoreSums]:
        return {"accuracy": ScoreSums(float((logits[-1].argmax(-1) == y).sum()), len(y))}

    def check_targets(self, y: Tensor, T: int) -> str | None:
        return _class_indices(y, "[B]")


class NodeClassification(Task):
    """A class per node of one graph, ``y [N]`` with :data:`IGNORE_INDEX` on nodes not scored."""

    kind = "node_classification"
    loss_forms = frozenset({"per_step", "rate"})
    scores = ("accuracy",)

    def loss(self, form: str, logits: Tensor, y: Tensor, T: int, start: int = 0) -> Tensor:
        k = logits.shape[0]
        n = max(int((y != IGNORE_INDEX).sum()), 1)
        if form == "rate":
            return F.cross_entropy(logits.mean(0), y, ignore_index=IGNORE_INDEX, reduction="sum") / n * (k / T)
        total = F.cross_entropy(logits.flatten(0, 1), y.repeat(k), ignore_index=IGNORE_INDEX, reduction="sum")
        return total / (n * T)

    def score_sums(self, logits: Tensor, y: Tensor) -> dict[str, ScoreSums]:
        scored = y != IGNORE_INDEX
        hits = (logits.mean(0).argmax(-1) == y)[scored]
        return {"accuracy": ScoreSums(float(hits.sum()), int(scored.sum()))}

    def check_targets(self, y: Tensor, T: int) -> str | None:
        return _class_indices(y, "[N] (-100: node not scored)")


def edge_logits(outputs: Tensor, pairs: Tensor) -> Tensor:
    """``⟨o[..., i, :], o[..., j, :]⟩`` for node outputs ``o [..., N, D]`` and ``pairs [P, 2]``
    → ``[..., P]``."""
    return (outputs[..., pairs[:, 0], :] * outputs[..., pairs[:, 1], :]).sum(-1)


def roc_auc(scores: Tensor, labels: Tensor) -> float:
    """The area under the ROC curve of ``scores [P]`` for binary ``labels [P]``: the probability
    that a positive outranks a negative, ties counting one half (Mann–Whitney U / (n₊ n₋));
    NaN when a class is missing."""
    positive = labels.bool()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(scores.double())
    sorted_scores = scores.double()[order]
    ranks = torch.empty_like(sorted_scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts + 1  # the first rank of each run of ties
    mean_rank = first.double() + (counts.double() - 1) / 2
    ranks[order] = mean_rank[inverse]
    u = float(ranks[positive].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def average_precision(scores: Tensor, labels: Tensor) -> float:
    """Average precision of ``scores [P]`` for binary ``labels [P]``: ``Σ_k (R_k − R_{k−1}) P_k``
    over the distinct score thresholds, highest first (scikit-learn's definition: tied scores form
    one threshold); NaN without positives."""
    positive = labels.bool()
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float("nan")
    order = torch.argsort(scores.double(), descending=True, stable=True)
    hits = positive[order].double()
    sorted_scores = scores.double()[order]
    last_of_run = torch.ones(len(scores), dtype=torch.bool)
    last_of_run[:-1] = sorted_scores[1:] != sorted_scores[:-1]
    true_pos = torch.cumsum(hits, 0)[last_of_run]
    seen = (torch.arange(1, len(scores) + 1, dtype=torch.float64))[last_of_run]
    precision = true_pos / seen
    recall_step = torch.diff(true_pos, prepend=torch.zeros(1, dtype=torch.float64)) / n_pos
    return float((recall_step * precision).sum())


class LinkPrediction(Task):
    """Edges of one graph, ``y [P, 3]`` rows ``(i, j, label)``; node outputs ``o [T, N, D]``."""

    kind = "link_prediction"
    loss_forms = frozenset({"per_step", "rate"})
    scores = ("roc_auc", "average_precision")

    def loss(self, form: str, logits: Tensor, y: Tensor, T: int, start: int = 0) -> Tensor:
        k = logits.shape[0]
        labels = y[:, 2].to(logits.dtype)
        if form == "rate":
            z = edge_logits(logits.mean(0), y[:, :2])
            return F.binary_cross_entropy_with_logits(z, labels) * (k / T)
        z = edge_logits(logits, y[:, :2])  # [k, P]
        return F.binary_cross_entropy_with_logits(z, labels.expand_as(z), reduction="sum") / (len(y) * T)

    def score_sums(self, logits: Tensor, y: Tensor) -> dict[str, ScoreSums]:
        z = edge_logits(logits.mean(0), y[:, :2])
        labels = y[:, 2]
        n = len(y)
        return {
            "roc_auc": ScoreSums(roc_auc(z, labels) * n, n),
            "average_precision": ScoreSums(average_precision(z, labels) * n, n),
        }

    def check_targets(self, y: Tensor, T: int) -> str | None:
        if y.dim() != 2 or y.shape[1] != 3 or y.is_floating_point():
            return f"expected integer rows (i, j, label) of shape [P, 3], got {y.dtype} {list(y.shape)}"
        if len(y) and not bool(((y[:, 2] == 0) | (y[:, 2] == 1)).all()):
            return "edge labels (column 2) must be 0 or 1"
        return None


_TASKS: Mapping[str, Task] = MappingProxyType(
    {
        task.kind: task
        for task in (
            SequenceClassification(),
            PerStepClassification(),
            PerStepRegression(),
            StaticClassification(),
            NodeClassification(),
            LinkPrediction(),
        )
    }
)


def task_of(kind: str) -> Task:
    """The task named ``kind`` (one of :data:`TASK_KINDS`); ``ValueError`` naming the known ones."""
    try:
        return _TASKS[kind]
    except KeyError:
        raise ValueError(f"unknown task {kind!r}; known tasks: {', '.join(TASK_KINDS)}") from None
