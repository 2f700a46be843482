"""Strict sliding windows on the database: agent start limits, LLM request and token limits.

:class:`SlidingWindow` holds "at most N units in any period" for one key, cluster-wide, which
Dramatiq's own limiters cannot (its window sums fixed one-second buckets, and a bucket limiter
lets twice the limit through across a boundary); Dramatiq's ``RateLimiterBackend`` on the
database is ``actors.backends.rate_limits``. :class:`LLMLimits` counts requests and tokens per
model the way LLM providers do. The limits themselves are parsed by ``interlock.limits``.

Every operation is one short transaction that locks one row, so concurrent callers on any host
are serialised by the database.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from actors.errors import TransientError
from interlock.limits import Limit
from models.base import utcnow
from models.rate_limits import RateWindow

__all__ = ["SlidingWindow", "WindowAdmission", "LLMLimits", "window_state", "ensure_row"]


def ensure_row(session: Session, model: Any, values: dict[str, Any]) -> None:
    """Make sure the row exists so that ``FOR UPDATE`` has something to lock."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(model).values(**values).on_conflict_do_nothing(index_elements=["key"]))


class WindowAdmission(NamedTuple):
    """:meth:`SlidingWindow.acquire`'s answer: admitted now, or the seconds to wait first; ``at`` is when it asked."""

    admitted: bool
    wait: float
    at: float


class SlidingWindow:
    """At most ``limit`` units of weight in any ``period`` seconds, for one key, cluster-wide."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def acquire(self, key: str, limit: Limit, *, weight: int = 1, now: float | None = None) -> WindowAdmission:
        """Admit ``weight`` now if the window has room: ``(admitted, seconds to wait if not, time)``.

        The clock is read after the row lock is held, so admissions are logged in the order the
        database serialised them (a stale timestamp would let more through than the limit).
        """
        with self.sessions.begin() as session:
            log = self._locked_log(session, key)
            stamp_now = time.time() if now is None else now
            log = [entry for entry in log if entry[0] > stamp_now - limit.period]
            used = sum(entry[1] for entry in log)
            if used + weight <= limit.count or not log:
                log.append([stamp_now, weight])
                self._store(session, key, log)
                return WindowAdmission(True, 0.0, stamp_now)
            # Wait until enough of the oldest entries leave the window.
            excess = used + weight - limit.count
            freed = 0.0
            for stamp, amount in log:
                freed += amount
                if freed >= excess:
                    return WindowAdmission(False, max(0.001, stamp + limit.period - stamp_now), stamp_now)
            return WindowAdmission(False, limit.period, stamp_now)

    def record(self, key: str, weight: int, period: float, *, now: float | None = None) -> None:
        """Add weight after the fact (tokens are known only when the response arrives)."""
        now = time.time() if now is None else now
        with self.sessions.begin() as session:
            log = [entry for entry in self._locked_log(session, key) if entry[0] > now - period]
            log.append([now, weight])
            self._store(session, key, log)

    def usage(self, key: str, period: float) -> int:
        with self.sessions() as session:
            row = session.get(RateWindow, key)
            log = row.entries.get("log", []) if row else []
        now = time.time()
        return sum(entry[1] for entry in log if entry[0] > now - period)

    def _locked_log(self, session: Session, key: str) -> list[list[float]]:
        ensure_row(session, RateWindow, {"key": key, "entries": {"log": []}, "updated_at": utcnow()})
        row = session.execute(select(RateWindow).where(RateWindow.key == key).with_for_update()).scalar_one()
        return [list(entry) for entry in row.entries.get("log", [])]

    def _store(self, session: Session, key: str, log: list[list[float]]) -> None:
        row = session.get(RateWindow, key)
        assert row is not None
        row.entries = {"log": log}
        row.updated_at = utcnow()


def window_state(sessions: sessionmaker[Session], limits: dict[str, Limit], prefix: str) -> list[dict[str, Any]]:
    """Current use of each configured limit, for the dashboard and metrics."""
    window = SlidingWindow(sessions)
    return [
        {
            "name": name,
            "limit": limit.count,
            "period_s": limit.period,
            "used": window.usage(prefix + name, limit.period),
        }
        for name, limit in sorted(limits.items())
    ]


class LLMLimits:
    """Requests and tokens per minute per model, the way LLM providers count them."""

    def __init__(self, window: SlidingWindow, *, rpm: dict[str, Limit], tpm: dict[str, Limit]) -> None:
        self.window = window
        self.rpm = rpm
        self.tpm = tpm

    def _limit(self, table: dict[str, Limit], model: str) -> Limit | None:
        return table.get(model) or table.get("*")

    def before_call(self, model: str, *, deadline: float) -> float:
        """Block until a request may be sent; returns the seconds waited. Gives up at ``deadline``."""
        waited = 0.0
        while True:
            delay = 0.0
            tokens = self._limit(self.tpm, model)
            if tokens is not None and self.window.usage(f"llm-tpm:{model}", tokens.period) >= tokens.count:
                delay = 1.0
            requests = self._limit(self.rpm, model)
            if delay == 0.0 and requests is not None:
                admitted, delay, _ = self.window.acquire(f"llm-rpm:{model}", requests)
                if admitted:
                    return waited
            elif delay == 0.0:
                return waited
            if time.monotonic() + delay > deadline:
                raise TransientError(f"LLM rate limit for {model} leaves no time in this stage", retry_after=delay)
            time.sleep(delay)
            waited += delay

    def after_call(self, model: str, total_tokens: int) -> None:
        tokens = self._limit(self.tpm, model)
        if tokens is not None and total_tokens:
            self.window.record(f"llm-tpm:{model}", total_tokens, tokens.period)
