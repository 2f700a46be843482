"""The process's one watchdog thread: alarms fire in their own thread at their deadline, cancelled ones never."""

from __future__ import annotations

import threading
import time

import pytest

from actors.watchdog import arm
from testkit.waiting import wait_until


class Late(Exception):
    pass


def _spin_until_raised(seconds: float) -> float:
    """Run Python bytecode (where async exceptions land) until Late arrives; return when it did."""
    started = time.monotonic()
    with pytest.raises(Late):
        _spin(seconds)
    return time.monotonic() - started


def _spin(seconds: float) -> None:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        pass


def test_an_alarm_raises_in_the_armed_thread_at_its_deadline() -> None:
    arm(0.2, Late)
    elapsed = _spin_until_raised(10)
    assert elapsed >= 0.2


def test_a_cancelled_alarm_never_fires_and_the_others_still_do() -> None:
    cancelled = [arm(0.05, Late) for _ in range(200)]
    for alarm in cancelled:
        alarm.cancel()
    _spin(0.3)  # past every cancelled deadline: a Late that fired would land here
    arm(0.1, Late)
    _spin_until_raised(10)


def test_alarms_of_many_threads_fire_each_in_its_own_thread_in_deadline_order() -> None:
    fired: dict[int, float] = {}
    start = time.monotonic() + 0.2

    def run(k: int) -> None:
        arm(start + 0.2 * (5 - k) - time.monotonic(), Late)  # thread 4 first, thread 0 last
        _spin_until_raised(10)
        fired[k] = time.monotonic()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_until(lambda: len(fired) == 5, timeout=10, what="every thread's alarm")
    order = sorted(fired, key=lambda k: fired[k])
    assert order == [4, 3, 2, 1, 0]
