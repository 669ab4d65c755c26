"""Statistics over seeds for the report: confidence intervals, tests between two method variants,
the "best" marks and ranks with ties.

A cell's seed fixes its initial weights and its data order, so two variants' cells with the same
setting, ``T`` and seed *pair up*. With ``n`` the number of seeds with a finite value:

* **Confidence interval** (:func:`t_interval`, :func:`ci_half_width`): 95 % Student-t,
  ``mean ± t_{0.975, n−1} · s / √n`` with ``s`` the sample standard deviation (``n − 1`` in its
  denominator). With ``n < 2`` there is no interval (NaN).
* **Paired t-test** (:func:`paired_t_test`), used when the two variants share at least two seeds:
  ``d_i = a_i − b_i`` over the ``m`` shared seeds, ``t = mean(d) / (s_d / √m)`` with ``m − 1``
  degrees of freedom, two-sided p-value.
* **Welch's t-test** (:func:`welch_t_test`), used otherwise when both have at least two seeds:
  ``t = (mean_a − mean_b) / √(s_a²/n_a + s_b²/n_b)`` with the Welch–Satterthwaite degrees of
  freedom, two-sided p-value.
* With no spread at all (``s_d = 0``, or ``s_a = s_b = 0``) the difference is exact: ``p = 0``
  when it is non-zero and ``p = 1`` when it is zero. Fewer seeds than a test needs: ``p`` is NaN.
* **Best mark** (:func:`significant_best`): the variant with the best mean is marked only when it is
  better than the runner-up (the second-best mean) with ``p < α``, ``α = 0.05`` (:data:`ALPHA`), by
  the paired test when they share two seeds and Welch's otherwise. A column whose values do not
  depend on the seed (``exact``: memory and counts) is marked on a strict difference of means, even
  with one seed; any other column with fewer than two seeds per side is never marked.
* **Ranks with ties** (:func:`tied_ranks`): a variant whose interval ``[mean ± half-width]`` overlaps
  the interval of the variant with the best mean shares its rank 1; every other variant gets
  ``1 +`` the number of variants with a strictly better mean (standard competition ranking). A
  variant without an interval (one seed) counts as the point ``[mean, mean]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import stats as _scipy_stats

#: Coverage of the confidence intervals the report shows.
CONFIDENCE = 0.95
#: Significance level of the best marks (two-sided tests).
ALPHA = 0.05
#: Below this many seeds the report warns that intervals and significance are not meaningful.
MIN_SEEDS = 3

TestName = Literal["paired t", "Welch t", "exact", "none"]


def t_quantile(dof: float, confidence: float = CONFIDENCE) -> float:
    """``t_{(1 + confidence)/2, dof}``: the two-sided Student-t critical value (NaN for ``dof < 1``)."""
    if not dof >= 1:
        return math.nan
    return float(_scipy_stats.t.ppf(0.5 + confidence / 2, dof))


def ci_half_width(std: ArrayLike, n: ArrayLike, confidence: float = CONFIDENCE) -> NDArray[np.float64]:
    """Element-wise ``t_{(1 + confidence)/2, n−1} · std / √n``; NaN where ``n < 2`` or ``std`` is not finite."""
    s = np.asarray(std, dtype=float)
    count = np.asarray(n, dtype=float)
    ok = np.isfinite(s) & np.isfinite(count) & (count >= 2)
    out = np.full(np.broadcast(s, count).shape, math.nan)
    safe = np.where(ok, count, 2.0)
    quantile = _scipy_stats.t.ppf(0.5 + confidence / 2, safe - 1)
    np.copyto(out, quantile * s / np.sqrt(safe), where=ok)
    return out


@dataclass(frozen=True)
class Interval:
    """``mean ± half_width`` over ``n`` values; ``half_width`` is NaN when ``n < 2``."""

    mean: float
    half_width: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def _finite(values: ArrayLike) -> NDArray[np.float64]:
    array = np.asarray(values, dtype=float).ravel()
    return array[np.isfinite(array)]


def t_interval(values: ArrayLike, confidence: float = CONFIDENCE) -> Interval:
    """The Student-t confidence interval of the mean of the finite ``values``."""
    x = _finite(values)
    if len(x) == 0:
        return Interval(math.nan, math.nan, 0)
    std = float(np.std(x, ddof=1)) if len(x) > 1 else math.nan
    return Interval(float(np.mean(x)), float(ci_half_width(std, len(x), confidence)), len(x))


@dataclass(frozen=True)
class TestResult:
    """A two-sided test of ``a`` against ``b``: ``difference`` is ``mean(a) − mean(b)`` (the mean
    of the paired differences for the paired test); ``n`` the pairs, or the values of both sides."""

    test: TestName
    difference: float
    p_value: float
    n: int

    def significant(self, alpha: float = ALPHA) -> bool:
        return bool(self.p_value < alpha)


def _two_sided(t: float, dof: float) -> float:
    return float(2 * _scipy_stats.t.sf(abs(t), dof))


def _exact(difference: float, n: int) -> TestResult:
    return TestResult("exact", difference, 0.0 if difference != 0 else 1.0, n)


def paired_t_test(a: ArrayLike, b: ArrayLike) -> TestResult:
    """Paired t-test of equal-length ``a`` and ``b`` (pairs with a non-finite side are dropped)."""
    x, y = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired_t_test needs as many values on each side, got {len(x)} and {len(y)}")
    d = (x - y)[np.isfinite(x) & np.isfinite(y)]
    m = len(d)
    if m < 2:
        return TestResult("none", float(d.mean()) if m else math.nan, math.nan, m)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0:
        return _exact(mean, m)
    return TestResult("paired t", mean, _two_sided(mean / (sd / math.sqrt(m)), m - 1), m)


def welch_t_test(a: ArrayLike, b: ArrayLike) -> TestResult:
    """Welch's unequal-variance t-test of the finite values of ``a`` and ``b``."""
    x, y = _finite(a), _finite(b)
    na, nb = len(x), len(y)
    difference = float(x.mean() - y.mean()) if na and nb else math.nan
    if na < 2 or nb < 2:
        return TestResult("none", difference, math.nan, na + nb)
    va, vb = float(x.var(ddof=1)) / na, float(y.var(ddof=1)) / nb
    if va + vb == 0:
        return _exact(difference, na + nb)
    dof = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    return TestResult("Welch t", difference, _two_sided(difference / math.sqrt(va + vb), dof), na + nb)


def compare_seeds(a: pd.Series, b: pd.Series) -> TestResult:
    """Test ``a`` against ``b``, two variants' values indexed by seed: paired on their shared seeds
    when there are at least two (with finite values on both sides), Welch's test otherwise."""
    a, b = a[np.isfinite(a.to_numpy(float))], b[np.isfinite(b.to_numpy(float))]
    shared = a.index.intersection(b.index)
    if len(shared) >= 2:
        return paired_t_test(a.loc[shared].to_numpy(float), b.loc[shared].to_numpy(float))
    return welch_t_test(a.to_numpy(float), b.to_numpy(float))


def _mean(values: pd.Series) -> float:
    x = _finite(values.to_numpy(float))
    return float(x.mean()) if len(x) else math.nan


def significant_best(
    samples: Sequence[pd.Series],
    higher_is_better: bool,
    eligible: ArrayLike | None = None,
    exact: bool = False,
    alpha: float = ALPHA,
) -> NDArray[np.bool_]:
    """Which of the variants (``samples``: each one's values indexed by seed) to mark as best:
    at most one, the best mean among the ``eligible``, when it beats the runner-up significantly
    (see the module docstring; ``exact``: the values do not depend on the seed)."""
    means = np.array([_mean(s) for s in samples], dtype=float)
    ok = np.isfinite(means) & (np.ones(len(means), dtype=bool) if eligible is None else np.asarray(eligible, bool))
    flags = np.zeros(len(means), dtype=bool)
    if ok.sum() < 2:
        return flags
    candidates = np.flatnonzero(ok)
    order = candidates[np.argsort(-means[candidates] if higher_is_better else means[candidates], kind="stable")]
    best, runner_up = int(order[0]), int(order[1])
    if means[best] == means[runner_up]:
        return flags
    if exact:
        flags[best] = True
        return flags
    result = compare_seeds(samples[best], samples[runner_up])
    favours_best = (result.difference > 0) == higher_is_better and result.difference != 0
    flags[best] = result.significant(alpha) and favours_best
    return flags


def tied_ranks(means: ArrayLike, half_widths: ArrayLike, higher_is_better: bool) -> NDArray[np.float64]:
    """Ranks (1 = best; NaN for a NaN mean) where the variants whose interval overlaps the best
    mean's interval share rank 1 (see the module docstring)."""
    m = np.asarray(means, dtype=float)
    h = np.nan_to_num(np.asarray(half_widths, dtype=float), nan=0.0)
    ranks = np.full(len(m), math.nan)
    ok = np.isfinite(m)
    if not ok.any():
        return ranks
    score = m if higher_is_better else -m  # larger is better
    for i in np.flatnonzero(ok):
        ranks[i] = 1 + int((score[ok] > score[i]).sum())
    best = int(np.flatnonzero(ok)[np.argmax(score[ok])])
    overlaps = ok & (m - h <= m[best] + h[best]) & (m + h >= m[best] - h[best])
    ranks[overlaps] = 1
    return ranks
