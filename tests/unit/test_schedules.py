"""Schedules from settings: cron and ``every Ns`` expressions, parsed to the same UTC slots everywhere."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.triggers.interval import IntervalTrigger

from interlock.cli.scheduler import job_triggers, parse_schedule
from interlock.settings import Settings, SettingsError


def test_schedules_parse_to_utc_triggers_every_scheduler_agrees_on() -> None:
    now = datetime(2026, 11, 26, 14, 59, 59, 500000, tzinfo=UTC)
    first, second = parse_schedule("every 2s"), parse_schedule("every 2s")
    assert isinstance(first, IntervalTrigger)
    # Counted from a fixed epoch, not from each scheduler's start: the same slots everywhere.
    assert first.get_next_fire_time(None, now) == second.get_next_fire_time(None, now)
    assert first.get_next_fire_time(None, now) == datetime(2026, 11, 26, 15, 0, 0, tzinfo=UTC)

    nightly = parse_schedule("0 2 * * *")
    assert nightly.get_next_fire_time(None, now) == datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
    hourly = parse_schedule("0 * * * *")
    assert hourly.get_next_fire_time(None, now) == datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
    # Cron numbers weekdays from Sunday (0 or 7); APScheduler 3 from Monday. Ours follow cron.
    sunday = parse_schedule("30 6 * * 0").get_next_fire_time(None, now)
    assert sunday.strftime("%A %H:%M") == "Sunday 06:30"
    assert parse_schedule("30 6 * * 7").get_next_fire_time(None, now) == sunday
    workdays = parse_schedule("0 9 * * 1-5")
    fire, days = now, set()
    for _ in range(7):
        fire = workdays.get_next_fire_time(None, fire + timedelta(seconds=1))
        days.add(fire.strftime("%a"))
    assert days == {"Mon", "Tue", "Wed", "Thu", "Fri"}
    assert parse_schedule("off") is None


@pytest.mark.parametrize(
    "expression", ["every 0s", "every 5 minutes", "61 * * * *", "* * *", "0 2 * * 8", "0 2 * * mon-x", ""]
)
def test_a_bad_schedule_is_a_clear_settings_error(expression: str) -> None:
    with pytest.raises(SettingsError, match="INTERLOCK_SCHEDULE_HEALTH_CHECK"):
        job_triggers(Settings.from_env({}, schedule_health_check=expression))
