"""What a results column measures: its direction, unit and kind.

The host measures the columns in :data:`CORE_COLUMNS` on every cell; a metric plugin declares the
columns it adds as :attr:`snnarena.metric.Metric.columns`. The run's manifest records the
:class:`Column` of every measured column, and ``compare`` and the report read directions, units
and tolerances from there, so an external metric gets arrows, highlighting and regression checks
with no change to the host.

``kind`` decides how ``compare`` tells a real change from noise when there is no seed spread to
go by (see :mod:`snnarena.compare`): ``time`` columns jitter by several percent between identical
runs, ``memory`` and ``count`` columns are deterministic on the CPU, ``score`` columns change only
when training changes. A column that is the median of many samples within a cell (the step time)
names, as ``spread``, the column holding those samples' interquartile range; ``compare`` does not
call a change within (twice, by default) that spread significant, whatever the number of seeds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from snnarena.task import SCORES, TASK_KINDS, Score, task_of

ColumnKind = Literal["score", "time", "memory", "count", "ratio"]
COLUMN_KINDS: tuple[str, ...] = ("score", "time", "memory", "count", "ratio")


@dataclass(frozen=True)
class Column:
    """One measured column of the results table.

    ``higher_is_better``: ``True`` (accuracy), ``False`` (time, memory) or ``None`` (neither: a
    spike rate, a parameter count); ``unit`` is shown in reports (``""`` for unitless).
    ``spread``: for a column that is the median of many samples within one cell, the name of the
    column holding the interquartile range of those samples, in the same unit
    (``step_time_ms`` → ``step_time_iqr_ms``); ``None`` when there is none.
    """

    name: str
    higher_is_better: bool | None
    unit: str = ""
    kind: ColumnKind = "score"
    doc: str = ""
    spread: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in COLUMN_KINDS:
            raise ValueError(f"column {self.name!r}: kind must be one of {', '.join(COLUMN_KINDS)}, got {self.kind!r}")
        if self.higher_is_better not in (True, False, None):
            raise ValueError(f"column {self.name!r}: higher_is_better must be True, False or None")
        if self.spread is not None and (not isinstance(self.spread, str) or self.spread in ("", self.name)):
            raise ValueError(
                f"column {self.name!r}: spread must be None or the name of another column, got {self.spread!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict; ``spread`` only when there is one (as manifests had it before)."""
        data = asdict(self)
        if data["spread"] is None:
            del data["spread"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Column:
        return cls(**{k: data[k] for k in COLUMN_FIELDS if k in data})


#: The fields of a :class:`Column`, as :meth:`Column.to_dict` writes them.
COLUMN_FIELDS: tuple[str, ...] = ("name", "higher_is_better", "unit", "kind", "doc", "spread")


def score_columns(score: Score) -> tuple[Column, Column]:
    """``test_<score>`` and ``val_<score>`` of a task score (NaN on cells of tasks without it)."""
    what = f"{score.label} of the plain forward pass with the weights train.select picks"
    tasks = ", ".join(sorted(kind for kind in TASK_KINDS if score.name in task_of(kind).scores))
    scope = f" (tasks: {tasks}; NaN for the others)"
    return (
        Column(f"test_{score.name}", score.higher_is_better, "", "score", f"test {what}, read once per cell{scope}"),
        Column(f"val_{score.name}", score.higher_is_better, "", "score", f"validation {what}{scope}"),
    )


#: Columns the host measures on every ``done`` cell.
CORE_COLUMNS: tuple[Column, ...] = (
    *(column for score in SCORES for column in score_columns(score)),
    Column("train_loss", False, "", "score", "mean training loss of the last epoch"),
    Column("step_time_ms", False, "ms", "time", "median training-step time after the warm-up", "step_time_iqr_ms"),
    Column("step_time_iqr_ms", None, "ms", "time", "interquartile range of the step time"),
    Column("forward_ms", False, "ms", "time", "median forward phase of a step", "forward_iqr_ms"),
    Column("backward_ms", False, "ms", "time", "median backward phase of a step", "backward_iqr_ms"),
    Column("optimizer_ms", False, "ms", "time", "median optimizer phase of a step", "optimizer_iqr_ms"),
    Column("forward_iqr_ms", None, "ms", "time", "interquartile range of the forward phase"),
    Column("backward_iqr_ms", None, "ms", "time", "interquartile range of the backward phase"),
    Column("optimizer_iqr_ms", None, "ms", "time", "interquartile range of the optimizer phase"),
    Column("peak_activation_bytes", False, "B", "memory", "peak bytes saved for backward"),
    Column("peak_device_bytes", False, "B", "memory", "torch.cuda.max_memory_allocated over training"),
    Column("grad_cosine_bptt", True, "", "ratio", "cosine of the method's gradient with exact BPTT's (all parameters)"),
    Column(
        "grad_cosine_readout",
        True,
        "",
        "ratio",
        "cosine with BPTT's gradient over the readout's parameters (the layer producing the logits)",
    ),
    Column(
        "grad_cosine_hidden_min",
        True,
        "",
        "ratio",
        "the lowest cosine with BPTT's gradient over the non-readout parameter tensors, one by one",
    ),
    Column("grad_cosine_first_layer", True, "", "ratio", "cosine with BPTT's gradient on the first layer's weight"),
    Column("grad_norm_ratio_bptt", None, "", "ratio", "norm of the method's gradient over BPTT's"),
    Column("grad_sign_agreement_bptt", True, "", "ratio", "fraction of gradient entries with BPTT's sign"),
    Column("spike_rate", None, "", "ratio", "mean spikes per neuron per step on the test set"),
    Column("n_parameters", None, "", "count", "trainable parameters of the model"),
    Column("extra_parameters", False, "", "count", "parameters the method adds (auxiliary heads ...)"),
    Column("duration_s", None, "s", "time", "wall time of the whole cell (evaluation and fidelity included)"),
)


def columns_by_name(columns: Iterable[Column]) -> dict[str, Column]:
    """``{name: column}``; a name declared twice keeps its first declaration."""
    out: dict[str, Column] = {}
    for column in columns:
        out.setdefault(column.name, column)
    return out


def columns_from_manifest(manifest: Mapping[str, Any]) -> dict[str, Column]:
    """The columns a run's manifest records, with :data:`CORE_COLUMNS` for older manifests.

    A field an older manifest does not record for a core column (``spread``, say) is the core
    column's; a recorded field, ``None`` included, is kept as recorded.
    """
    recorded = manifest.get("columns") or {}
    out = columns_by_name(CORE_COLUMNS)
    for name, data in recorded.items():
        known = out[name].to_dict() if name in out else {}
        out[name] = Column.from_dict({**known, **data, "name": name})
    return out
