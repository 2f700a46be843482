"""The soak's verdict: a series is flat unless its last quarter leaves the second quarter's band."""

from __future__ import annotations

import math

from testkit.trends import trend


def test_a_noisy_flat_series_is_flat() -> None:
    values = [100 + (5 if k % 2 else -5) for k in range(40)]
    assert trend(values).verdict == "flat"


def test_warm_up_in_the_first_quarter_is_ignored() -> None:
    values = [10.0, 50.0, 80.0, 90.0] + [100.0] * 12
    assert trend(values).verdict == "flat"


def test_a_steady_climb_is_growing() -> None:
    values = [100 + 2 * k for k in range(40)]  # +78 % from start to end
    verdict = trend(values)
    assert verdict.verdict == "growing"
    assert verdict.late > verdict.baseline
    assert verdict.change > 0.10


def test_growth_within_the_tolerance_is_flat() -> None:
    values = [100 + 0.1 * k for k in range(40)]
    assert trend(values, tolerance=0.10).verdict == "flat"


def test_the_absolute_slack_covers_small_counts() -> None:
    values = [3.0] * 20 + [4.0] * 20  # one more connection: +33 %, but within a slack of 2
    assert trend(values, slack=2).verdict == "flat"
    assert trend(values).verdict == "growing"


def test_a_falling_series_is_shrinking() -> None:
    assert trend([100.0] * 20 + [50.0] * 20).verdict == "shrinking"


def test_too_few_samples_give_no_verdict() -> None:
    assert trend([1.0, 2.0, 3.0]).verdict == "too short"
    assert trend([]).verdict == "too short"


def test_change_from_zero() -> None:
    assert trend([0.0] * 16).change == 0
    assert math.isinf(trend([0.0] * 8 + [5.0] * 8).change)
