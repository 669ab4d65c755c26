"""Base class of the metric plugins, measured on every finished cell.

A metric declares the columns it adds to the results table (:attr:`Metric.columns`, each a
:class:`~snnarena.columns.Column` with its direction, unit and kind) and :meth:`Metric.compute`
returns ``{column: value}`` for exactly those columns. A metric that raises, returns a column it
did not declare, or a value that is not a number is recorded as failed in the cell's
``metric_errors`` column and its columns are NaN, never 0.

A metric may also measure curves on the cell (a value per step, per layer ...): it declares them
as :attr:`Metric.series` (each a :class:`Series` with its axis labels and direction) and
:meth:`Metric.compute_series` returns ``{series: [value, ...]}`` for those it measured. The cell
stores them, with their declarations, in its ``metric_series`` column and the report draws each
as a figure. A series that is not declared, not a non-empty sequence of finite numbers, or already
stored by another metric fails its metric like a bad column does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from snnarena.columns import Column
from snnarena.params import Param, params_of
from snnarena.task import TASK_KINDS

if TYPE_CHECKING:
    import torch
    from torch import nn

    from snnarena.data import Bundle
    from snnarena.loss import SequenceLoss
    from snnarena.method import GradientMethod
    from snnarena.model import SpikingModel


@dataclass
class CellContext:
    """Everything a metric may look at once a cell has trained."""

    model: SpikingModel
    prepared: nn.Module
    method: GradientMethod
    data: Bundle
    loss: SequenceLoss
    device: torch.device
    probe: tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Series:
    """One curve a metric measures on a cell: ``values[i]`` at x = ``i`` (``0, 1, ...``).

    ``xlabel`` names what the index counts (``"nudged step t"``), ``ylabel`` the value;
    ``higher_is_better`` is ``True``, ``False`` or ``None`` as for a
    :class:`~snnarena.columns.Column`; ``doc`` is one line shown in the figure's caption.
    """

    name: str
    xlabel: str
    ylabel: str
    higher_is_better: bool | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a Series needs a name")
        if self.higher_is_better not in (True, False, None):
            raise ValueError(f"series {self.name!r}: higher_is_better must be True, False or None")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (how the ``metric_series`` column records them)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Series:
        return cls(**{k: data[k] for k in SERIES_FIELDS if k in data})


#: The fields of a :class:`Series`, as :meth:`Series.to_dict` writes them.
SERIES_FIELDS: tuple[str, ...] = ("name", "xlabel", "ylabel", "higher_is_better", "doc")


class Metric:
    """A per-cell measurement. ``compute`` returns ``{column: value}`` for the declared columns;
    ``compute_series`` returns ``{series: values}`` for declared series it measured."""

    name: ClassVar[str] = ""
    PARAMS: ClassVar[tuple[Param, ...]] = ()
    #: The columns :meth:`compute` returns, with direction, unit and kind (recorded in the manifest).
    columns: ClassVar[tuple[Column, ...]] = ()
    #: Tasks (:mod:`snnarena.task`) the metric can measure; suite validation refuses a dataset of
    #: another task, naming both plugins (e.g. a metric of class probabilities on a regression task).
    tasks: ClassVar[frozenset[str]] = frozenset(TASK_KINDS)
    #: The curves :meth:`compute_series` may return, with their axis labels (none by default).
    series: ClassVar[tuple[Series, ...]] = ()

    def __init__(self, **params: Any) -> None:
        """Validate ``params`` against ``PARAMS`` (raising ``ParamError``) and fill in defaults."""
        self.params = params_of(type(self)).resolve(params)

    def compute(self, ctx: CellContext) -> dict[str, float]:
        """``{column: value}`` for the columns in :attr:`columns`."""
        raise NotImplementedError

    def compute_series(self, ctx: CellContext) -> Mapping[str, Sequence[float]]:
        """``{series: [value at x = 0, 1, ...]}`` for declared :attr:`series` this cell has (default:
        none). Called on the same instance right after :meth:`compute` with the same ``ctx``, so a
        metric may reuse what ``compute`` measured."""
        return {}
