"""What a dataset asks of the network: the targets' shape, the loss, and the score.

A dataset declares its task (``Dataset.task``, and ``DataInfo.task`` on the data it builds). The
model's outputs are always ``o [T, B, C]``; the task says what ``y`` is and how ``o`` is judged:

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
  better.

Because ``N`` counts the whole sequence, a per-step loss splits exactly over any partition of the
time axis (:meth:`Task.loss` of a slice ``y[start : start + k]``): segment and step shares sum to
the loss of the sequence, which is what truncated and online methods rely on.

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

TaskKind = Literal["classification", "per_step_classification", "per_step_regression"]
#: Every task kind, sequence classification (the default) first.
TASK_KINDS: tuple[TaskKind, ...] = get_args(TaskKind)
#: Every score a task may have; results have ``test_<score>`` and ``val_<score>`` for each.
SCORE_NAMES: tuple[str, ...] = ("accuracy", "mse")
#: The target of a step that is not scored in a ``per_step_classification`` task.
IGNORE_INDEX = -100


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
    """A task kind: the loss forms it supports, its loss, and its score (name and direction)."""

    kind: ClassVar[TaskKind]
    #: Loss forms a cell of this task may use.
    loss_forms: ClassVar[frozenset[str]]
    #: The score's name: results get ``test_<score>`` and ``val_<score>`` columns.
    score: ClassVar[str]
    higher_is_better: ClassVar[bool]

    def loss(self, form: str, logits: Tensor, y: Tensor, T: int, start: int = 0) -> Tensor:
        """The share of the loss owed to the outputs ``logits [k, B, C]`` of steps
        ``start .. start+k−1`` of a ``T``-step sequence with targets ``y`` (the whole sequence's)."""
        raise NotImplementedError

    def score_sums(self, logits: Tensor, y: Tensor) -> ScoreSums:
        """The score's sums over one batch of whole sequences ``logits [T, B, C]``."""
        raise NotImplementedError

    def better(self, a: float, b: float) -> bool:
        """Whether score ``a`` is strictly better than ``b``."""
        return a > b if self.higher_is_better else a < b

    def check_targets(self, y: Tensor, T: int) -> str | None:
        """Why ``y`` is not a target batch of this task for ``T`` steps, or ``None``."""
        raise NotImplementedError


class SequenceClassification(Task):
    """One class per sequence, ``y [B]``."""

    kind = "classification"
    loss_forms = frozenset({"per_step", "rate"})
    score = "accuracy"
    higher_is_better = True

    def loss(self, form: str, logits: Tensor, y: Tensor, T: int, start: int = 0) -> Tensor:
        k = logits.shape[0]
        if form == "rate":
            return F.cross_entropy(logits.mean(0), y) * (k / T)
        return F.cross_entropy(logits.flatten(0, 1), y.repeat(k)) * (k / T)

    def score_sums(self, logits: Tensor, y: Tensor) -> ScoreSums:
        return ScoreSums(float((logits.mean(0).argmax(-1) == y).sum()), len(y))

    def check_targets(self, y: Tensor, T: int) -> str | None:
        if y.dim() != 1 or y.is_floating_point():
            return f"expected class indices of shape [B], got {y.dtype} {list(y.shape)}"
        return None


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
    score = "accuracy"
    higher_is_better = True

    def loss(self, form: str, logits: Tensor, y: Tensor, T: int, start: int = 0) -> Tensor:
        part = _scored_steps(y, T, start, logits.shape[0], self.kind)
        n = int((y != IGNORE_INDEX).sum())
        total = F.cross_entropy(logits.flatten(0, 1), part.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
        return total / max(n, 1)

    def score_sums(self, logits: Tensor, y: Tensor) -> ScoreSums:
        scored = y != IGNORE_INDEX
        return ScoreSums(float((logits.argmax(-1) == y)[scored].sum()), int(scored.sum()))

    def check_targets(self, y: Tensor, T: int) -> str | None:
        if y.dim() != 2 or y.shape[0] != T or y.is_floating_point():
            return f"expected class indices of shape [T={T}, B] (-100: not scored), got {y.dtype} {list(y.shape)}"
        return None


class PerStepRegression(Task):
    """A real vector at the scored steps, ``y [T, B, D]`` with NaN elsewhere."""

    kind = "per_step_regression"
    loss_forms = frozenset({"per_step"})
    score = "mse"
    higher_is_better = False

    def loss(self, form: str, logits: Tensor, y: Tensor, T: int, start: int = 0) -> Tensor:
        part = _scored_steps(y, T, start, logits.shape[0], self.kind)
        n = int((~torch.isnan(y)).sum())
        scored = ~torch.isnan(part)
        error = torch.where(scored, logits - torch.nan_to_num(part), torch.zeros_like(logits))
        return error.pow(2).sum() / max(n, 1)

    def score_sums(self, logits: Tensor, y: Tensor) -> ScoreSums:
        scored = ~torch.isnan(y)
        return ScoreSums(float((logits - y)[scored].pow(2).sum()), int(scored.sum()))

    def check_targets(self, y: Tensor, T: int) -> str | None:
        if y.dim() != 3 or y.shape[0] != T or not y.is_floating_point():
            return f"expected float targets of shape [T={T}, B, D] (NaN: not scored), got {y.dtype} {list(y.shape)}"
        return None


_TASKS: Mapping[str, Task] = MappingProxyType(
    {task.kind: task for task in (SequenceClassification(), PerStepClassification(), PerStepRegression())}
)


def task_of(kind: str) -> Task:
    """The task named ``kind`` (one of :data:`TASK_KINDS`); ``ValueError`` naming the known ones."""
    try:
        return _TASKS[kind]
    except KeyError:
        raise ValueError(f"unknown task {kind!r}; known tasks: {', '.join(TASK_KINDS)}") from None
