"""Is a series flat or growing? The verdict of ``bench soak`` on each sampled series.

It lives in ``testkit`` (not ``bench``) so the unit tests can check it without the bench extra.
The first quarter of a run is warm-up (imports, pools filling, caches): the second quarter's mean
is the baseline and the last quarter's mean is compared to it, with a relative tolerance and an
absolute slack for small counts (connections going from 3 to 4 is not a leak).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Trend", "trend"]


@dataclass(frozen=True)
class Trend:
    """The verdict on one series, with the two means it compares."""

    verdict: str  # "flat", "growing", "shrinking" or "too short"
    baseline: float  # mean of the second quarter
    late: float  # mean of the last quarter

    @property
    def change(self) -> float:
        """Relative change of the late mean over the baseline (0 when the baseline is 0 and nothing changed)."""
        if self.baseline == 0:
            return 0.0 if self.late == 0 else float("inf")
        return (self.late - self.baseline) / abs(self.baseline)


def trend(values: Sequence[float], *, tolerance: float = 0.10, slack: float = 0.0) -> Trend:
    """Compare the last quarter's mean to the second quarter's: growing past ``tolerance`` (relative to
    the baseline) and ``slack`` (absolute) is "growing", falling past both is "shrinking"."""
    if len(values) < 8:
        mean = statistics.fmean(values) if values else 0.0
        return Trend("too short", mean, mean)
    quarter = len(values) // 4
    baseline = statistics.fmean(values[quarter : 2 * quarter])
    late = statistics.fmean(values[len(values) - quarter :])
    allowed = max(tolerance * abs(baseline), slack)
    if late - baseline > allowed:
        return Trend("growing", baseline, late)
    if baseline - late > allowed:
        return Trend("shrinking", baseline, late)
    return Trend("flat", baseline, late)
