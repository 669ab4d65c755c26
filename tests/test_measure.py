"""Phase timing summaries: medians and interquartile ranges per phase and per step."""

from __future__ import annotations

import math

import pytest

from snnarena.measure import PHASES, PhaseClock


def clock_with(steps: list[dict[str, float]]) -> PhaseClock:
    clock = PhaseClock("cpu")
    clock.steps = [{p: s.get(p, 0.0) for p in PHASES} for s in steps]
    return clock


def test_each_phase_has_its_median_and_iqr_after_the_warmup():
    forward = [9.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # the first step is warm-up
    clock = clock_with([{"forward": f, "backward": 2 * f, "optimizer": 0.5} for f in forward])
    out = clock.summary_ms(warmup=1)
    assert out["forward_ms"] == pytest.approx(3000.0)
    # statistics.quantiles (exclusive method) of 1..5: Q1 = 1.5, Q3 = 4.5
    assert out["forward_iqr_ms"] == pytest.approx(3000.0)
    assert out["backward_iqr_ms"] == pytest.approx(6000.0)
    assert out["optimizer_iqr_ms"] == 0.0
    assert out["step_time_ms"] == pytest.approx(3.0 * 3000.0 + 500.0)
    assert out["step_time_iqr_ms"] == pytest.approx(9000.0)


def test_one_step_has_no_spread_and_none_is_nan():
    one = clock_with([{"forward": 0.002}]).summary_ms(warmup=2)
    assert one["forward_ms"] == pytest.approx(2.0) and one["forward_iqr_ms"] == 0.0
    empty = clock_with([]).summary_ms(warmup=0)
    assert set(empty) == {f"{n}{s}" for n in ("step_time", *PHASES) for s in ("_ms", "_iqr_ms")}
    assert all(math.isnan(v) for v in empty.values())
