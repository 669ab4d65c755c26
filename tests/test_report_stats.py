"""The report's statistics: confidence intervals, paired tests against BPTT, best marks only where
significant, ranks with ties, and the warning for fewer than three seeds."""

from __future__ import annotations

import html
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from test_report import cell, write_run

from snnarena.report import build_report
from snnarena.report.stats import (
    ci_half_width,
    compare_seeds,
    paired_t_test,
    significant_best,
    t_interval,
    t_quantile,
    tied_ranks,
    welch_t_test,
)
from snnarena.report.tables import rankings, summarise

T_975_2 = 4.302653  # Student-t 97.5 % quantile with 2 degrees of freedom, from a printed table


def test_t_interval_of_three_values_by_hand() -> None:
    # mean 0.93; deviations -0.03, -0.01, 0.04: s² = 0.0026 / 2 = 0.0013
    interval = t_interval([0.90, 0.92, 0.97])
    s = math.sqrt(0.0013)
    assert t_quantile(2) == pytest.approx(T_975_2, abs=1e-6)
    assert interval.mean == pytest.approx(0.93)
    assert interval.n == 3
    assert interval.half_width == pytest.approx(T_975_2 * s / math.sqrt(3), rel=1e-6)
    assert interval.half_width == pytest.approx(0.089567, abs=1e-6)
    assert (interval.low, interval.high) == pytest.approx((0.93 - 0.089567, 0.93 + 0.089567), abs=1e-6)


def test_one_value_has_no_interval() -> None:
    one = t_interval([0.9, math.nan])
    assert one.mean == 0.9 and one.n == 1 and math.isnan(one.half_width)
    halves = ci_half_width([0.1, 0.1, math.nan], [1, 2, 3])
    assert math.isnan(halves[0]) and math.isnan(halves[2])
    assert halves[1] == pytest.approx(scipy_stats.t.ppf(0.975, 1) * 0.1 / math.sqrt(2))


def test_paired_t_test_by_hand() -> None:
    # d = (0.02, 0.03, 0.01): mean 0.02, s_d = 0.01, t = 0.02 / (0.01/√3) = 2√3 with 2 dof;
    # for 2 dof the two-sided p is 1 − |t| / √(2 + t²) = 1 − 2√3/√14.
    result = paired_t_test([0.95, 0.97, 0.96], [0.93, 0.94, 0.95])
    assert result.test == "paired t" and result.n == 3
    assert result.difference == pytest.approx(0.02)
    assert result.p_value == pytest.approx(1 - 2 * math.sqrt(3) / math.sqrt(14), rel=1e-6)
    assert result.p_value == pytest.approx(scipy_stats.ttest_rel([0.95, 0.97, 0.96], [0.93, 0.94, 0.95]).pvalue)
    assert not result.significant(0.05) and result.significant(0.10)


def test_welch_and_degenerate_tests() -> None:
    a, b = [0.9, 0.95, 0.97, 0.91], [0.8, 0.85, 0.83]
    expected = scipy_stats.ttest_ind(a, b, equal_var=False).pvalue
    assert welch_t_test(a, b).p_value == pytest.approx(expected)
    assert welch_t_test(a, b).test == "Welch t"
    assert paired_t_test([1.0, 2.0], [0.5, 1.5]).p_value == 0.0  # a constant difference is exact
    assert paired_t_test([1.0, 2.0], [1.0, 2.0]).p_value == 1.0
    assert math.isnan(paired_t_test([1.0], [0.5]).p_value)  # one pair: no test
    assert math.isnan(welch_t_test([1.0], [0.5, 0.6]).p_value)


def test_compare_seeds_pairs_shared_seeds_and_falls_back_to_welch() -> None:
    a = pd.Series([0.95, 0.97, 0.96], index=[0, 1, 2])
    b = pd.Series([0.93, 0.94, 0.95], index=[0, 1, 2])
    assert compare_seeds(a, b).test == "paired t"
    assert compare_seeds(a, b.set_axis([3, 4, 5])).test == "Welch t"  # no seed in common


def _seeds(*values: float) -> pd.Series:
    return pd.Series(values, index=range(len(values)), dtype=float)


def _two_seeds(mean: float, std: float) -> pd.Series:
    """Two seeds with this mean and sample standard deviation."""
    return _seeds(mean + std / math.sqrt(2), mean - std / math.sqrt(2))


def test_overlapping_best_is_not_marked_and_a_clear_one_is() -> None:
    # the example: 95.3 ± 1.3 against 94.9 ± 2.2 over two seeds
    overlapping = [_two_seeds(95.3, 1.3), _two_seeds(94.9, 2.2)]
    assert significant_best(overlapping, True).tolist() == [False, False]
    clear = [_seeds(0.80, 0.81, 0.83), _seeds(0.95, 0.96, 0.97), _seeds(0.70, 0.72, 0.71)]
    assert significant_best(clear, True).tolist() == [False, True, False]
    assert significant_best(clear, False).tolist() == [False, False, True]  # lower is better
    assert significant_best(clear, True, eligible=[True, False, True]).tolist() == [True, False, False]


def test_one_seed_marks_only_exact_columns() -> None:
    one_seed = [_seeds(0.9), _seeds(0.5)]
    assert significant_best(one_seed, True).tolist() == [False, False]
    assert significant_best(one_seed, True, exact=True).tolist() == [True, False]
    assert significant_best([_seeds(1.0), _seeds(1.0)], True, exact=True).tolist() == [False, False]


def test_tied_ranks() -> None:
    # 0.94 ± 0.02 overlaps 0.95 ± 0.02; 0.80 ± 0.01 does not and has two better means
    assert tied_ranks([0.95, 0.94, 0.80], [0.02, 0.02, 0.01], True).tolist() == [1, 1, 3]
    assert tied_ranks([0.95, 0.94, 0.80], [math.nan] * 3, True).tolist() == [1, 2, 3]  # no intervals
    assert tied_ranks([3.0, 1.0, 1.5], [0.1, 0.1, 0.6], False).tolist() == [3, 1, 1]  # lower is better
    ranks = tied_ranks([0.9, math.nan], [0.1, 0.1], True)
    assert ranks[0] == 1 and math.isnan(ranks[1])


METRICS = ["test_accuracy", "step_time_ms", "peak_activation_bytes", "grad_cosine_bptt"]


def _results(accuracy: dict[str, list[float]], T: int = 8) -> pd.DataFrame:
    rows = []
    for method, values in accuracy.items():
        for seed, value in enumerate(values):
            rows.append(
                {
                    "setting": "digits · mlp",
                    "variant": method,
                    "method": method,
                    "method_label": method,
                    "params_text": "",
                    "run": "r",
                    "memory_class": "",
                    "T": T,
                    "seed": seed,
                    "status": "done",
                    "test_accuracy": value,
                    "step_time_ms": 1.0 + seed,
                    "peak_activation_bytes": 100.0 if method == "bptt" else 10.0,
                    "grad_cosine_bptt": 1.0 if method == "bptt" else 0.9,
                }
            )
    return pd.DataFrame(rows)


def test_summary_has_intervals_and_paired_p_values_against_bptt() -> None:
    results = _results({"bptt": [0.93, 0.94, 0.95], "tbptt": [0.95, 0.97, 0.96], "ottt": [0.90, 0.92, 0.97]})
    summary = summarise(results, METRICS).set_index("variant")
    assert summary.loc["ottt", "test_accuracy_ci_half"] == pytest.approx(0.089567, abs=1e-6)
    assert summary.loc["tbptt", "test_accuracy_vs_bptt_diff"] == pytest.approx(0.02)
    assert summary.loc["tbptt", "test_accuracy_vs_bptt_pairs"] == 3
    assert summary.loc["tbptt", "test_accuracy_vs_bptt_p"] == pytest.approx(1 - 2 * math.sqrt(3) / math.sqrt(14))
    assert summary.loc["tbptt", "peak_activation_bytes_vs_bptt_p"] == 0.0  # 10 B less on every seed
    assert summary.loc["tbptt", "step_time_ms_vs_bptt_p"] == 1.0  # the same time on every seed
    assert math.isnan(summary.loc["bptt", "test_accuracy_vs_bptt_p"])  # the reference itself


def test_paired_comparison_uses_only_shared_seeds() -> None:
    results = _results({"bptt": [0.93, 0.94, 0.95], "tbptt": [0.95, 0.97]})
    summary = summarise(results, METRICS).set_index("variant")
    assert summary.loc["tbptt", "test_accuracy_vs_bptt_pairs"] == 2
    assert summary.loc["tbptt", "test_accuracy_vs_bptt_diff"] == pytest.approx(0.025)


def test_rankings_tie_overlapping_intervals() -> None:
    results = _results({"bptt": [0.93, 0.95, 0.97], "tbptt": [0.92, 0.94, 0.96], "ottt": [0.50, 0.51, 0.52]})
    ranks = rankings(summarise(results, METRICS)).set_index("variant")
    assert ranks.loc["bptt", "task score"] == 1 and ranks.loc["tbptt", "task score"] == 1
    assert ranks.loc["ottt", "task score"] == 3


def _page(tmp_path: Path, name: str, accuracy: dict[str, list[float]]) -> str:
    records = [
        cell(name, method, 8, seed=seed, test_accuracy=value)
        for method, values in accuracy.items()
        for seed, value in enumerate(values)
    ]
    return html.unescape(build_report([write_run(tmp_path, name, records)], tmp_path / "out").read_text("utf-8"))


def _accuracy_cells(page: str) -> dict[str, str]:
    """The accuracy cell of each row of the first results table (``*`` appended when marked best)."""
    table = re.search(r'id="setting-1".*?</table>', page, flags=re.S)
    assert table is not None
    out = {}
    for row in re.findall(r"<tr><td>(.*?)</tr>", table.group(0), flags=re.S):
        cells = re.findall(r"<td( class=\"[^\"]*\")?>([^<]*)</td>", "<td>" + row)
        method, accuracy = cells[0][1], cells[4]
        out[method] = accuracy[1] + ("*" if "best" in accuracy[0] else "")
    return out


def test_two_overlapping_seeds_get_no_best_mark_and_a_warning(tmp_path: Path) -> None:
    a, b = _two_seeds(0.953, 0.013), _two_seeds(0.949, 0.022)
    page = _page(tmp_path, "twoSeeds", {"bptt": b.tolist(), "tbptt": a.tolist()})
    shown = _accuracy_cells(page)
    half = scipy_stats.t.ppf(0.975, 1) * 1.3 / math.sqrt(2)
    assert shown["tbptt"] == f"95.3 ± {half:.1f}"  # mean ± t-interval half-width, not marked
    overview = re.search(r'id="overview".*?</section>', page, flags=re.S)
    assert overview is not None
    assert "2 seeds: intervals and significance are not meaningful below 3." in overview.group(0)
    assert "95 % Student-t confidence interval" in page and "α = 0.05" in page


def test_clearly_separated_methods_get_a_best_mark_and_no_warning(tmp_path: Path) -> None:
    page = _page(tmp_path, "threeSeeds", {"bptt": [0.80, 0.81, 0.83], "tbptt": [0.95, 0.96, 0.97]})
    shown = _accuracy_cells(page)
    assert shown["tbptt"].endswith("*") and not shown["bptt"].endswith("*")
    assert "not meaningful below 3" not in page
    interval = t_interval([95.0, 96.0, 97.0])
    assert shown["tbptt"] == f"96.0 ± {interval.half_width:.1f}*"


def test_one_seed_report_marks_no_score(tmp_path: Path) -> None:
    page = _page(tmp_path, "oneSeed", {"bptt": [0.80], "tbptt": [0.95]})
    assert not any(v.endswith("*") for v in _accuracy_cells(page).values())
    assert "1 seed: intervals and significance are not meaningful below 3." in page
    assert np.isfinite(t_quantile(1))


def test_hidden_layer_cosine_is_shown_when_recorded(tmp_path: Path) -> None:
    records = [
        cell("hidden", m, 8, seed=s, grad_cosine_hidden_min=0.5 + 0.1 * s) for m in ("bptt", "tbptt") for s in (0, 1)
    ]
    page = build_report([write_run(tmp_path, "hidden", records)], tmp_path / "out").read_text("utf-8")
    table = re.search(r'id="setting-1".*?</table>', page, flags=re.S)
    assert table is not None and "hidden grad cosine (min)" in table.group(0)
    older = _page(tmp_path, "older", {"bptt": [0.8], "tbptt": [0.9]})  # runs before the column: no such column
    assert "hidden grad cosine (min)" not in older
