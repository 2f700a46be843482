"""The dashboard at ``/``: one static page and the JSON it reads, all from the database and the broker.

Nothing is kept in the API process, so the page is the same behind any replica and after restarts.
The page follows a task's progress with ``/agent/stream``; lists are refreshed by polling.
Tasks and events are the caller's tenant's; what describes every tenant at once (queue depths,
circuit breakers of the hosts tools call, the broker's UI) is shown to operators only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dramatiq
import falcon
from sqlalchemy.orm import Session, sessionmaker

from actors.catalogue import WorkflowSpec
from actors.queues import queue_depths
from interlock.settings import Settings
from models.breakers import breaker_view, list_breakers
from models.events import list_events
from models.task_queries import recent_tasks, task_events

from .auth import principal_of, visible_tenants
from .pages import CSP_NONCE, protect_page
from .presenters import event_summary, task_event, task_status

__all__ = ["DashboardPage", "RecentTasks", "TaskEvents", "Overview"]

logger = logging.getLogger(__name__)

PAGE = Path(__file__).resolve().parent / "static" / "dashboard.html"


class DashboardPage:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        token = str(getattr(req.context, "csrf_token", ""))  # set by web.auth for a cookie session
        nonce = protect_page(resp)
        resp.data = (
            PAGE.read_bytes().replace(b"__CSRF_TOKEN__", token.encode()).replace(CSP_NONCE.encode(), nonce.encode())
        )


class RecentTasks:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit = min(req.get_param_as_int("limit", min_value=1) or 50, 500)
        children = bool(req.get_param_as_bool("children"))
        with self.sessions() as session:
            tasks = recent_tasks(session, limit=limit, tenants=visible_tenants(req), children=children)
            resp.media = {"tasks": [task_status(task) for task in tasks]}


class TaskEvents:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def on_get(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        after = req.get_param_as_int("after", min_value=0, max_value=2**63 - 1) or 0
        with self.sessions() as session:
            resp.media = {"events": [task_event(e) for e in task_events(session, task_id, after_id=after)]}


class Overview:
    """Queues (with dead letters), rate limits, circuit breakers, recent events, the broker UI link."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        broker: dramatiq.Broker,
        catalogue: Mapping[str, WorkflowSpec],
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.broker = broker
        self.queues = sorted({spec.queue for spec in catalogue.values()})

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        operator = principal_of(req).operator
        queues: list[dict[str, Any]] | None = None
        if operator:
            try:
                queues = queue_depths(self.broker, self.queues)
            except Exception:  # a framework boundary: the page still shows what the database knows
                logger.exception("queue depths unavailable")
        with self.sessions() as session:
            breakers = [breaker_view(b) for b in list_breakers(session)] if operator else None
            events = [event_summary(e) for e in list_events(session, limit=20, tenants=visible_tenants(req))]
        limits = {name: f"{limit.count}/{limit.period:g}s" for name, limit in self.settings.rate_limits.items()}
        resp.media = {
            "operator": operator,  # false: queues, breakers and broker_ui are withheld (null)
            "queues": queues,
            "rate_limits": limits,
            "breakers": breakers,
            "events": events,
            "broker_ui": self.settings.rabbitmq_ui if self.settings.uses_rabbitmq and operator else None,
        }
