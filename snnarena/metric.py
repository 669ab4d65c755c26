"""Base class of the metric plugins, measured on every finished cell.

A metric returns named numbers (one or several columns of the results table). A metric that
raises is recorded as failed in the cell's ``metric_errors`` column and its columns are NaN,
never 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from snnarena.params import Param, params_of

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
    """A per-cell measurement. ``compute`` returns ``{column: value}``."""

    name: ClassVar[str] = ""
    PARAMS: ClassVar[tuple[Param, ...]] = ()
    higher_is_better: ClassVar[bool | None] = None

    def __init__(self, **params: Any) -> None:
        """Validate ``params`` against ``PARAMS`` (raising ``ParamError``) and fill in defaults."""
        self.params = params_of(type(self)).resolve(params)

    def compute(self, ctx: CellContext) -> dict[str, float]:
        raise NotImplementedError
