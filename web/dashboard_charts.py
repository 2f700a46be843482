"""The overview's charts (``/dashboard/api/charts``) and workers (``/dashboard/api/workers``).

Both read the database only, so every API replica draws the same picture: task counts, durations
and tokens from the tasks and their calls, queue depths from the samples workers record, workers
from their heartbeat rows. A tenant's charts cover its own tasks; queue depths and workers serve
every tenant at once, so they are for operators only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import falcon
from sqlalchemy.orm import Session, sessionmaker

from interlock.settings import Settings
from models.base import iso, utcnow
from models.dashboard_charts import (
    Window,
    active_counts,
    duration_percentiles,
    queue_depth_history,
    throughput,
    token_usage,
)
from models.workers import list_workers

from .auth import principal_of, visible_tenants
from .presenters import worker_view
from .timeline import call_cost

__all__ = ["Charts", "Workers", "chart_window"]

#: The longest range a chart may span, and the default one.
MAX_RANGE = 31 * 86400
DEFAULT_RANGE = 3600
#: Ranges of at least this many seconds count tokens per hour; shorter ones in a dozen slots.
HOURLY_FROM = 6 * 3600
#: Workers silent for longer than this are no longer listed.
WORKERS_SEEN_WITHIN = timedelta(days=1)


def _time_param(req: falcon.Request, name: str) -> datetime | None:
    raw = req.get_param(name)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise falcon.HTTPBadRequest(
            title=f"Invalid {name}", description=f"{name} must be an ISO 8601 time, such as 2026-01-31T09:30:00Z."
        ) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def chart_window(req: falcon.Request, now: datetime) -> tuple[datetime, datetime]:
    """The range asked for: ``since``/``until`` (ISO 8601), or the last ``range`` seconds before ``until``."""
    until = _time_param(req, "until") or now
    since = _time_param(req, "since")
    if since is None:
        seconds = req.get_param_as_int("range", min_value=60, max_value=MAX_RANGE) or DEFAULT_RANGE
        since = until - timedelta(seconds=seconds)
    if not since < until or (until - since).total_seconds() > MAX_RANGE:
        raise falcon.HTTPBadRequest(
            title="Invalid range", description="since must be before until, and at most 31 days before it."
        )
    return since, until


class Charts:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Tasks per minute, durations by workflow, queue depths and tokens over a range (default: the last hour)."""
        since, until = chart_window(req, utcnow())
        seconds = (until - since).total_seconds()
        window = Window(since, until, Window.ending(until, seconds=seconds).step)
        tokens_window = Window(
            since, until, 3600 if seconds >= HOURLY_FROM else Window.ending(until, seconds=seconds, points=12).step
        )
        queue_window = Window(since, until, Window.ending(until, seconds=seconds, points=240).step)
        tenants = visible_tenants(req)
        operator = principal_of(req).operator
        prices = self.settings.llm_prices
        with self.sessions() as session:
            body: dict[str, Any] = {
                "since": iso(since),
                "until": iso(until),
                "step": window.step,
                "throughput": throughput(session, window, tenants=tenants),
                "durations": duration_percentiles(session, window, tenants=tenants),
                "queues": {"step": queue_window.step, "series": queue_depth_history(session, queue_window)}
                if operator
                else None,
                "tokens": {
                    "step": tokens_window.step,
                    "slots": tokens_window.slots(),
                    "rows": [
                        {
                            **row,
                            "cost_usd": call_cost(prices, row["model"], row["prompt_tokens"], row["completion_tokens"]),
                        }
                        for row in token_usage(session, tokens_window, tenants=tenants)
                    ],
                },
                "active": active_counts(session, tenants=tenants),
                "priced": bool(prices),
            }
        resp.media = body


class Workers:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Worker processes from their heartbeats (operators only)."""
        now = utcnow()
        with self.sessions() as session:
            workers = list_workers(session, seen_since=now - WORKERS_SEEN_WITHIN)
        resp.media = {
            "now": iso(now),
            # A worker silent for three heartbeats is shown as gone.
            "heartbeat_seconds": max(0.2, self.settings.lease_seconds / 3),
            "workers": [worker_view(w) for w in workers],
        }
