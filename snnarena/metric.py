"""Base class of the metric plugins, measured on every finished cell.

A metric declares the columns it adds to the results table (:attr:`Metric.columns`, each a
:class:`~snnarena.columns.Column` with its direction, unit and kind) and :meth:`Metric.compute`
returns ``{column: value}`` for exactly those columns. A metric that raises, returns a column it
did not declare, or a value that is not a number is recorded as failed in the cell's
``metric_errors`` column and its columns are NaN, never 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from snnarena.columns import Column
from snnarena.params import Param, params_of
from snnarena.task import TASK_KINDS

if TYPE_CHECKING:
    import torch
    from torch import nn

    from snnarena.data import DataBundle
    from snnarena.loss import SequenceLoss
    from snnarena.method import GradientMethod
    from snnarena.model import SpikingModel


@dataclass
class CellContext:
    """Everything a metric may look at once a cell has trained."""

    model: SpikingModel
    prepared: nn.Module
    method: GradientMethod
    data: DataBundle
    loss: SequenceLoss
    device: torch.device
    probe: tuple[torch.Tensor, torch.Tensor]


class Metric:
    """A per-cell measurement. ``compute`` returns ``{column: value}`` for the declared columns."""

    name: ClassVar[str] = ""
    PARAMS: ClassVar[tuple[Param, ...]] = ()
    #: The columns :meth:`compute` returns, with direction, unit and kind (recorded in the manifest).
    columns: ClassVar[tuple[Column, ...]] = ()
    #: Tasks (:mod:`snnarena.task`) the metric can measure; suite validation refuses a dataset of
    #: another task, naming both plugins (e.g. a metric of class probabilities on a regression task).
    tasks: ClassVar[frozenset[str]] = frozenset(TASK_KINDS)

    def __init__(self, **params: Any) -> None:
        """Validate ``params`` against ``PARAMS`` (raising ``ParamError``) and fill in defaults."""
        self.params = params_of(type(self)).resolve(params)

    def compute(self, ctx: CellContext) -> dict[str, float]:
        """``{column: value}`` for the columns in :attr:`columns`."""
        raise NotImplementedError
