"""Dramatiq's rate-limiter backend on the database.

:class:`DatabaseRateLimiterBackend` implements Dramatiq's ``RateLimiterBackend``, so Dramatiq's
own ``ConcurrentRateLimiter``, ``WindowRateLimiter``, ``BucketRateLimiter`` and ``Barrier`` work
across every worker process and host, without Redis or Memcached. Interlock's own strict sliding
windows (agent start limits, LLM limits) are ``actors.limits``.

Every operation is one short transaction that locks one row, so concurrent callers on any host
are serialised by the database.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import timedelta

from dramatiq.rate_limits import RateLimiterBackend
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from actors.limits import ensure_row
from models.base import as_utc, utcnow
from models.rate_limits import RateLimitCounter

__all__ = ["DatabaseRateLimiterBackend"]


class DatabaseRateLimiterBackend(RateLimiterBackend):
    """Dramatiq's rate-limiter backend interface on the ``rate_limit_counters`` table."""

    def __init__(self, sessions: sessionmaker[Session], *, poll_interval: float = 0.05) -> None:
        self.sessions = sessions
        self.poll_interval = poll_interval

    def _update(self, key: str, ttl: int, change: Callable[[int | None], int | None]) -> bool:
        with self.sessions.begin() as session:
            if session.get_bind().dialect.name == "postgresql":
                # The window's buckets ("<name>@<second>") are summed without row locks: serialise
                # the callers of one limiter, or two buckets could each admit past the maximum.
                base = key.rpartition("@")[0] or key
                session.execute(select(func.pg_advisory_xact_lock(func.hashtext(base))))
            now = utcnow()  # read under the lock
            ensure_row(session, RateLimitCounter, {"key": key, "value": 0, "expires_at": now})
            row = session.execute(select(RateLimitCounter).where(RateLimitCounter.key == key).with_for_update())
            counter = row.scalar_one()
            current = counter.value if (as_utc(counter.expires_at) or now) > now else None
            new = change(current)
            if new is None:
                return False
            counter.value = new
            counter.expires_at = now + timedelta(milliseconds=ttl)
            return True

    def add(self, key: str, value: int, ttl: int) -> bool:
        return self._update(key, ttl, lambda current: value if current is None else None)

    def incr(self, key: str, amount: int, maximum: int, ttl: int) -> bool:
        return self._update(key, ttl, lambda c: (c or 0) + amount if (c or 0) + amount <= maximum else None)

    def decr(self, key: str, amount: int, minimum: int, ttl: int) -> bool:
        return self._update(key, ttl, lambda c: (c or 0) - amount if (c or 0) - amount >= minimum else None)

    def incr_and_sum(self, key: str, keys: Callable[[], Iterable[str]], amount: int, maximum: int, ttl: int) -> bool:
        with self.sessions.begin() as session:
            if session.get_bind().dialect.name == "postgresql":
                # The window's buckets ("<name>@<second>") are summed without row locks: serialise
                # the callers of one limiter, or two buckets could each admit past the maximum.
                base = key.rpartition("@")[0] or key
                session.execute(select(func.pg_advisory_xact_lock(func.hashtext(base))))
            now = utcnow()  # read under the lock
            ensure_row(session, RateLimitCounter, {"key": key, "value": 0, "expires_at": now})
            counter = session.execute(
                select(RateLimitCounter).where(RateLimitCounter.key == key).with_for_update()
            ).scalar_one()
            current = counter.value if (as_utc(counter.expires_at) or now) > now else 0
            if current + amount > maximum:
                return False
            others = [k for k in keys() if k != key]
            total = session.scalar(
                select(func.coalesce(func.sum(RateLimitCounter.value), 0)).where(
                    RateLimitCounter.key.in_(others), RateLimitCounter.expires_at > now
                )
            )
            if current + amount + int(total or 0) > maximum:
                return False
            counter.value = current + amount
            counter.expires_at = now + timedelta(milliseconds=ttl)
            return True

    def wait(self, key: str, timeout: int) -> bool:
        deadline = time.monotonic() + timeout / 1000
        while True:
            with self.sessions() as session:
                row = session.get(RateLimitCounter, key)
                if row is not None and (as_utc(row.expires_at) or utcnow()) > utcnow():
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(self.poll_interval)

    def wait_notify(self, key: str, ttl: int) -> None:
        self._update(key, ttl, lambda current: 1)
