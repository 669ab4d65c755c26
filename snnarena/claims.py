"""Papers' headline claims as data, and their verdicts on a run's results.

A plugin class (a gradient method, a model or a neuron) declares its paper's claims as
``CLAIMS``, a tuple of :class:`Claim`: a one-line statement in the plugin's own words, its
source (paper, section or table), how sure the number is (``evidence``: read in the paper's text,
its official code, or a secondary summary), the :class:`Conditions` under which the paper
states it, and a measurable :class:`Check`:

* ``ratio``: the subject's ``metric`` over the reference's (same run, setting, ``T``, loss and
  optimizer settings, as the report pairs a method with BPTT), one ratio per shared seed;
* ``difference``: the subject's ``metric`` minus the reference's, one difference per shared seed;
* ``threshold``: the subject's ``metric`` itself, one value per seed;
* ``growth``: the subject's ``metric`` at its largest ``T`` over its value at its smallest ``T``,
  one ratio per seed ("does not grow with ``T``" is ``growth <= 1.1``);
* ``slope``: the least-squares slope of ``log(metric)`` against ``log(T)`` (``log=False``: of
  ``metric`` against ``T``) over every (seed, ``T``) point.

``ratio``, ``difference`` and ``threshold`` are read at one ``T``: the one closest to the
paper's (``Conditions.T``), else the largest the run has.

**Verdicts** (:func:`decide`). The measured quantity gets a 95 % Student-t interval over seeds
(:func:`snnarena.report.stats.t_interval`; for ``slope``, the slope's own interval with
``n − 2`` degrees of freedom). The claim *holds* when the whole interval satisfies
``value <op> threshold``, *does not hold* when the whole interval violates it, and is
*inconclusive* when the interval straddles the threshold — more seeds are needed to tell. A value
without an interval (one seed) decides alone only when the metric does not depend on the seed
(memory and count columns, and ratios of them); otherwise it is inconclusive. A claim is *not
testable here* when the run has no finished cell of the subject, no reference cell to pair with,
no value of the metric (no GPU for ``peak_device_bytes``, a metric plugin not in the suite), or
fewer than two ``T`` for ``growth``/``slope``; the reason says which.

**Reduced scale.** Every verdict also lists how the evaluated cells differ from the paper's
conditions (dataset, model, parameter count, ``T``, device); a claim evaluated on an MLP on
digits instead of the paper's VGG on CIFAR-10 says so, and is never silently passed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

CheckKind = Literal["ratio", "difference", "threshold", "growth", "slope"]
CHECK_KINDS: tuple[str, ...] = ("ratio", "difference", "threshold", "growth", "slope")
Op = Literal["<", "<=", ">", ">="]
OPS: tuple[str, ...] = ("<", "<=", ">", ">=")
SubjectKind = Literal["method", "model", "neuron"]
Verdict = Literal["holds", "does not hold", "inconclusive", "not testable here"]
HOLDS: Verdict = "holds"
FAILS: Verdict = "does not hold"
INCONCLUSIVE: Verdict = "inconclusive"
UNTESTABLE: Verdict = "not testable here"
#: Checks that compare the subject with a reference in the same run.
PAIRED_KINDS: tuple[str, ...] = ("ratio", "difference")


@dataclass(frozen=True)
class Conditions:
    """Where the paper states a claim. Empty fields mean "any".

    ``setting`` says it in words (``"NF-ResNet-34 on ImageNet, T = 6, one V100/A100 GPU"``);
    ``datasets`` and ``models`` are the plugin names that stand for the paper's data and network;
    ``min_parameters`` the size below which a network is a reduced version of the paper's;
    ``T`` the paper's numbers of time steps; ``device`` ``"cuda"`` when the paper measured on a GPU.
    """

    setting: str
    datasets: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    min_parameters: int | None = None
    T: tuple[int, ...] = ()
    device: Literal["any", "cuda"] = "any"


@dataclass(frozen=True)
class Check:
    """A measurable test of a claim (see the module docstring for the kinds).

    ``reference`` (``ratio``/``difference``) names the plugin of the same kind as the subject to
    compare with (``"bptt"``), ``reference_params`` the parameters its cells must have.
    The claim holds when ``value <op> threshold``.
    """

    kind: CheckKind
    metric: str
    op: Op
    threshold: float
    reference: str = ""
    reference_params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    log: bool = True

    def __post_init__(self) -> None:
        if self.kind not in CHECK_KINDS:
            raise ValueError(f"check kind must be one of {', '.join(CHECK_KINDS)}, got {self.kind!r}")
        if self.op not in OPS:
            raise ValueError(f"check op must be one of {', '.join(OPS)}, got {self.op!r}")
        if (self.kind in PAIRED_KINDS) != bool(self.reference):
            raise ValueError(f"a {self.kind} check {'needs' if self.kind in PAIRED_KINDS else 'takes no'} reference")
        if not math.isfinite(self.threshold):
            raise ValueError(f"check threshold must be finite, got {self.threshold}")

    def describe(self) -> str:
        """``step_time_ms ratio to bptt < 0.5``."""
        what = {
            "ratio": f"{self.metric} / {self.reference}'s",
            "difference": f"{self.metric} − {self.reference}'s",
            "threshold": self.metric,
            "growth": f"{self.metric} at the largest T / at the smallest T",
            "slope": f"slope of {'log ' if self.log else ''}{self.metric} in {'log ' if self.log else ''}T",
        }[self.kind]
        return f"{what} {self.op} {self.threshold:g}"


@dataclass(frozen=True)
class Claim:
    """One headline claim of a plugin's paper.

    ``params``: the subject's parameters the claim is about (``{"k": 1}``: SLTT-1); only cells
    with these values are evaluated. ``evidence``: how the number was verified (``"abstract,
    confirmed"``, ``"recalled, unverified"`` ...).
    """

    name: str
    statement: str
    source: str
    evidence: str
    check: Check
    conditions: Conditions
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


def claims_of(cls: type) -> tuple[Claim, ...]:
    """The claims a plugin class declares (``CLAIMS``; none when it has no such attribute)."""
    declared = getattr(cls, "CLAIMS", ())
    return tuple(declared)


def claim_lines(cls: type) -> list[str]:
    """What ``snnarena list -v`` shows of a plugin class's claims, one item per line."""
    lines: list[str] = []
    for claim in claims_of(cls):
        lines.append(f"claim {claim.name}: {claim.statement}")
        lines.append(f"  source: {claim.source} ({claim.evidence})")
        lines.append(f"  check: {claim.check.describe()}" + params_text(claim.params))
        lines.append(f"  paper's conditions: {claim.conditions.setting}")
    return lines


def params_text(params: Mapping[str, Any]) -> str:
    """`` (cells with k=1)``: the subject parameters a claim is about (``""`` for none)."""
    return f" (cells with {', '.join(f'{k}={v}' for k, v in params.items())})" if params else ""


# -- results -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Measured:
    """The measured quantity of a check: ``mean`` with its interval ``[low, high]`` (both NaN
    when there is none), over ``n`` seeds (or points, for a slope), and whether it depends on the seed."""

    mean: float
    low: float
    high: float
    n: int
    exact: bool


@dataclass(frozen=True)
class ClaimResult:
    """The verdict of one claim on one group of cells (a subject variant in one setting)."""

    plugin: str
    kind: SubjectKind
    claim: Claim
    verdict: Verdict
    measured: Measured | None = None
    #: The cells' variant of the plugin (``sltt[k=1]``) and their setting (``digits · mlp``).
    label: str = ""
    context: str = ""
    T: str = ""
    reason: str = ""
    reduced: tuple[str, ...] = ()

    @property
    def at_reduced_scale(self) -> bool:
        return bool(self.reduced)

    def verdict_text(self) -> str:
        """``holds (at reduced scale)``, ``not testable here (no GPU ...)``."""
        if self.verdict == UNTESTABLE:
            return f"{self.verdict} ({self.reason})" if self.reason else self.verdict
        return f"{self.verdict} (at reduced scale)" if self.reduced else self.verdict

    def value_text(self) -> str:
        """``0.31 [0.29, 0.33]``, or the value alone without an interval; ``""`` when untested."""
        m = self.measured
        if m is None or not math.isfinite(m.mean):
            return ""
        if not (math.isfinite(m.low) and math.isfinite(m.high)) or m.low == m.high:
            return f"{m.mean:.4g}"
        return f"{m.mean:.4g} [{m.low:.4g}, {m.high:.4g}]"

    def to_dict(self) -> dict[str, Any]:
        m = self.measured
        return {
            "plugin": self.plugin,
            "kind": self.kind,
            "variant": self.label,
            "claim": self.claim.name,
            "statement": self.claim.statement,
            "source": self.claim.source,
            "evidence": self.claim.evidence,
            "check": self.claim.check.describe(),
            "paper_conditions": self.claim.conditions.setting,
            "context": self.context,
            "T": self.T,
            "value": None if m is None or not math.isfinite(m.mean) else m.mean,
            "ci_low": None if m is None or not math.isfinite(m.low) else m.low,
            "ci_high": None if m is None or not math.isfinite(m.high) else m.high,
            "n": 0 if m is None else m.n,
            "verdict": self.verdict,
            "reason": self.reason,
            "at_reduced_scale": self.at_reduced_scale,
            "differences_from_paper": list(self.reduced),
        }
