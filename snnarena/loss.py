"""The training objective shared by every method of a cell.

The cell's task (:mod:`snnarena.task`) owns the loss; the loss form is chosen per suite
(``train.loss``) so that all methods of a comparison optimise the same objective, and gradient
fidelity compares against BPTT of that very objective. For sequence classification (``y [B]``):

* ``per_step`` (TET-style): ``L = (1/T) Σ_t CE(o[t], y)``; it splits exactly over time steps,
  which online methods (OTTT, SLTT) need;
* ``rate``: ``L = CE((1/T) Σ_t o[t], y)``, the loss on the time-averaged logits.

Per-step tasks (``y [T, B]`` or ``y [T, B, D]``) have only the ``per_step`` form: the sum of the
scored steps' losses over the number of scored entries of the whole sequence. Static-input
classification (networks relaxing to a fixed point) is judged on the last step only: ``final``
(cross-entropy of ``o[T−1]``) and ``final_mse`` (``½‖o[T−1] − onehot(y)‖²``, batch mean). The graph
tasks use ``per_step`` and ``rate`` over node outputs (see :mod:`snnarena.task`).

``o`` are logits ``[T, B, C]``. ``y`` is always the target of the whole sequence: a segment or a
step says where it starts (``start``/``t``) and takes its share of ``y`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from torch import Tensor

from snnarena.task import Task, task_of

LossForm = Literal["per_step", "rate", "final", "final_mse"]
#: Every loss form, in the order of :data:`LossForm` (``per_step`` first: the default).
LOSS_FORMS: tuple[LossForm, ...] = get_args(LossForm)


@dataclass(frozen=True)
class SequenceLoss:
    """The loss of task ``task`` (a :data:`~snnarena.task.TaskKind`) in form ``form``.

    Raises ``ValueError`` when the task does not support the form (per-step tasks: ``per_step`` only).
    """

    form: LossForm = "per_step"
    task: str = "classification"
    _task: Task = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        task = task_of(self.task)
        if self.form not in task.loss_forms:
            raise ValueError(
                f"the {self.task} task supports train.loss in {sorted(task.loss_forms)}, not {self.form!r}"
            )
        object.__setattr__(self, "_task", task)

    @property
    def task_spec(self) -> Task:
        """The :class:`~snnarena.task.Task` object (scores, directions)."""
        return self._task

    def full(self, logits: Tensor, y: Tensor) -> Tensor:
        """The loss of a whole sequence ``[T, B, C]``."""
        return self._task.loss(self.form, logits, y, logits.shape[0])

    def segment(self, logits: Tensor, y: Tensor, T: int, start: int = 0) -> Tensor:
        """The share of the loss owed to steps ``start .. start+k−1`` (``logits [k, B, C]``) of a
        ``T``-step sequence whose targets are ``y``.

        ``per_step``: the segments' shares sum to :meth:`full`. ``rate`` (sequence classification):
        ``(k/T) CE(mean over the segment)`` — equal to :meth:`full` when the segment is the whole
        sequence, a truncated surrogate otherwise. Sequence classification ignores ``start``.
        """
        return self._task.loss(self.form, logits, y, T, start)

    def step(self, logits_t: Tensor, y: Tensor, T: int, t: int = 0) -> Tensor:
        """The share of step ``t`` (``logits_t [B, C]``); defined for every form but ``rate``."""
        if self.form == "rate":
            raise ValueError("the rate loss does not split over time steps; use train.loss = 'per_step'")
        return self._task.loss(self.form, logits_t.unsqueeze(0), y, T, t)

    @staticmethod
    def predict(logits: Tensor) -> Tensor:
        """Predicted classes ``[B]`` from logits ``[T, B, C]`` (argmax of the time average) for
        sequence classification; the task's :meth:`~snnarena.task.Task.score_sums` scores any task."""
        return logits.mean(0).argmax(-1)
