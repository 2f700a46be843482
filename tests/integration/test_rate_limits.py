"""Rate limits hold across threads, processes and hosts because they live in PostgreSQL."""

from __future__ import annotations

import threading
import time

import pytest
from dramatiq.rate_limits import Barrier, ConcurrentRateLimiter, WindowRateLimiter

from actors.backends.rate_limits import DatabaseRateLimiterBackend
from actors.limits import SlidingWindow
from actors.runtime import Runtime
from interlock.limits import Limit
from tests.support import events, wait_for_state

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]  # the settings fixture makes a vhost


@pytest.fixture
def runtime(settings):
    opened = Runtime.open(settings)
    yield opened
    opened.close()


def _threads(target, count: int) -> None:
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)


def test_dramatiq_concurrent_limiter_on_postgres(runtime) -> None:
    backend = DatabaseRateLimiterBackend(runtime.sessions)
    mutex = ConcurrentRateLimiter(backend, "test-concurrent", limit=2)
    inside = []
    peak = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(5):
            with mutex.acquire(raise_on_failure=False) as acquired:
                if not acquired:
                    continue
                with lock:
                    inside.append(1)
                    peak.append(len(inside))
                time.sleep(0.01)  # hold the slot briefly so that contention is real
                with lock:
                    inside.pop()

    _threads(work, 8)
    assert peak
    assert max(peak) <= 2


def test_dramatiq_window_limiter_on_postgres(runtime) -> None:
    backend = DatabaseRateLimiterBackend(runtime.sessions)
    limiter = WindowRateLimiter(backend, "test-window", limit=5, window=60)
    admitted = []

    def work() -> None:
        for _ in range(5):
            with limiter.acquire(raise_on_failure=False) as acquired:
                if acquired:
                    admitted.append(1)

    _threads(work, 6)
    assert len(admitted) == 5


def test_dramatiq_barrier_on_postgres(runtime) -> None:
    backend = DatabaseRateLimiterBackend(runtime.sessions)
    barrier = Barrier(backend, "test-barrier", ttl=60_000)
    assert barrier.create(3)
    assert not barrier.create(3)  # created once, cluster-wide
    released = []

    def party() -> None:
        released.append(barrier.wait(timeout=10_000))

    _threads(party, 3)
    assert released == [True, True, True]


def test_sliding_window_never_admits_more_than_the_limit_in_any_period(runtime) -> None:
    window = SlidingWindow(runtime.sessions)
    limit = Limit(3, 1.0)
    start = 1_000.0
    admitted = [t for t in (start + i * 0.1 for i in range(40)) if window.acquire("unit", limit, now=t)[0]]
    for t in admitted:
        assert sum(1 for u in admitted if t <= u < t + 1.0) <= 3
    assert len(admitted) >= 3 * 3  # and it keeps admitting at the limit
    admitted_now, wait, _ = window.acquire("unit", limit, now=admitted[-1] + 0.01)
    assert not admitted_now
    assert 0 < wait <= 1.0


def test_rate_limited_tasks_keep_their_retry_budget(settings, fake_llm, make_stack) -> None:
    fake_llm.fail_next(100, status=500, match="Analyze this query: budget")
    stack = make_stack(settings.replace(rate_limits="default=2/s", max_retries=3, min_backoff=0.1))
    task_ids = [stack.submit(query=f"budget {n}") for n in range(6)]
    for task_id in task_ids:
        task = wait_for_state(stack.runtime.sessions, task_id, "FAILURE", timeout=90)
        assert task.attempts == 4, task.attempts
        retries = [e for e in events(stack.runtime.sessions, task_id) if e.state == "RETRY"]
        assert len(retries) == 3
    waited = next(m for m in stack.worker_broker.middleware if type(m).__name__ == "Admission")
    assert waited.rate_limited > 0  # the limit did hold some of them back
