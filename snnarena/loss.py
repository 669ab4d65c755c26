"""The training objective shared by every method of a cell.

Two forms, chosen per suite (``train.loss``) so that all methods of a comparison optimise the
same objective, and gradient fidelity compares against BPTT of that very objective:

* ``per_step`` (TET-style): ``L = (1/T) Σ_t CE(o[t], y)``; it splits exactly over time steps,
  which online methods (OTTT, SLTT) need;
* ``rate``: ``L = CE((1/T) Σ_t o[t], y)``, the loss on the time-averaged logits.

``o`` are logits ``[T, B, C]``, ``y`` class indices ``[B]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch.nn.functional as F
from torch import Tensor

LossForm = Literal["per_step", "rate"]
#: Every loss form, in the order of :data:`LossForm` (``per_step`` first: the default).
LOSS_FORMS: tuple[LossForm, ...] = get_args(LossForm)


@dataclass(frozen=True)
class SequenceLoss:
    """Cross-entropy over a sequence of logits in one of the two forms above."""

    form: LossForm = "per_step"

    def full(self, logits: Tensor, y: Tensor) -> Tensor:
        """The loss of a whole sequence ``[T, B, C]``."""
        if self.form == "rate":
            return F.cross_entropy(logits.mean(0), y)
        steps = logits.shape[0]
        return F.cross_entropy(logits.flatten(0, 1), y.repeat(steps))

    def segment(self, logits: Tensor, y: Tensor, T: int) -> Tensor:
        """The share of the loss owed to a segment ``[k, B, C]`` of a ``T``-step sequence.

        ``per_step``: ``(1/T) Σ_{t in segment} CE(o[t], y)`` — the segments' shares sum to
        :meth:`full`. ``rate``: ``(k/T) CE(mean over the segment)`` — equal to :meth:`full` when
        the segment is the whole sequence, a truncated surrogate otherwise.
        """
        k = logits.shape[0]
        if self.form == "rate":
            return F.cross_entropy(logits.mean(0), y) * (k / T)
        return F.cross_entropy(logits.flatten(0, 1), y.repeat(k)) * (k / T)

    def step(self, logits_t: Tensor, y: Tensor, T: int) -> Tensor:
        """The share of step ``t`` (``[B, C]``); only defined for the ``per_step`` form."""
        if self.form != "per_step":
            raise ValueError("the rate loss does not split over time steps; use train.loss = 'per_step'")
        return F.cross_entropy(logits_t, y) / T

    @staticmethod
    def predict(logits: Tensor) -> Tensor:
        """Predicted classes ``[B]`` from logits ``[T, B, C]`` (argmax of the time average)."""
        return logits.mean(0).argmax(-1)
