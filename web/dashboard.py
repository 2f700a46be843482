"""The dashboard at ``/``: one page (``web/static``) and the JSON it reads, all from the database and the broker.

Nothing is kept in the API process, so the page is the same behind any replica and after restarts.
The page follows a running task with ``/agent/stream``; lists and charts are refreshed by polling.
Tasks, events, tokens and charts are the caller's tenant's; what describes every tenant at once
(queue depths and their history, workers, circuit breakers, the broker's UI) is for operators only.

The task list pages by keyset (``cursor``: the last row's creation time and id), so every page
costs one index walk whatever the number of tasks. A task's page is ``web.dashboard_task``; the
charts and workers are ``web.dashboard_charts``.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import dramatiq
import falcon
from sqlalchemy.orm import Session, sessionmaker

from actors.catalogue import WorkflowSpec
from actors.queues import queue_depths
from interlock.settings import Settings
from models.base import as_utc
from models.breakers import breaker_view, list_breakers
from models.dashboard_charts import active_counts
from models.events import list_events
from models.task_queries import TaskFilter, list_tasks, task_events, tenants_in_use
from models.tasks import TaskState

from .auth import principal_of, visible_tenants
from .pages import CSP_NONCE, protect_page
from .presenters import event_summary, task_event, task_row
from .static_files import STATIC_DIR

__all__ = ["DashboardPage", "TaskList", "TaskEvents", "Overview", "encode_cursor", "decode_cursor"]

logger = logging.getLogger(__name__)

PAGE = STATIC_DIR / "dashboard.html"
#: Rows per page of the task list, and the most a caller may ask for.
PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
STATES = frozenset(state.value for state in TaskState)


class DashboardPage:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The dashboard (a page for browsers)."""
        resp.content_type = falcon.MEDIA_HTML
        token = str(getattr(req.context, "csrf_token", ""))  # set by web.auth for a cookie session
        nonce = protect_page(resp)
        resp.data = (
            PAGE.read_bytes().replace(b"__CSRF_TOKEN__", token.encode()).replace(CSP_NONCE.encode(), nonce.encode())
        )


def encode_cursor(created_at: datetime, task_id: str) -> str:
    """Where the next page starts: after the task created at ``created_at`` with id ``task_id``."""
    moment = as_utc(created_at)
    assert moment is not None
    return base64.urlsafe_b64encode(f"{moment.isoformat()}|{task_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, task_id = text.split("|", 1)
        created = datetime.fromisoformat(moment)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise falcon.HTTPBadRequest(
            title="Invalid cursor", description="cursor must be the `next` value of a previous page."
        ) from exc
    return (created if created.tzinfo else created.replace(tzinfo=UTC)), task_id


def _text_param(req: falcon.Request, name: str, *, longest: int) -> str | None:
    value = (req.get_param(name) or "").strip()
    if len(value) > longest or "\x00" in value:
        raise falcon.HTTPBadRequest(
            title=f"Invalid {name}", description=f"{name} must be at most {longest} characters of text."
        )
    return value or None


class TaskList:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """A page of tasks, newest first, filtered; ``next`` is the cursor of the following page."""
        limit = req.get_param_as_int("limit", min_value=1, max_value=MAX_PAGE_SIZE) or PAGE_SIZE
        states = [s.strip().upper() for v in req.get_param_as_list("state") or [] for s in v.split(",") if s.strip()]
        unknown = sorted(set(states) - STATES)
        if unknown:
            raise falcon.HTTPBadRequest(
                title="Invalid state",
                description=f"Unknown state {', '.join(unknown)}; one of {', '.join(sorted(STATES))}.",
            )
        where = TaskFilter(
            tenants=visible_tenants(req),
            states=states,
            workflow=_text_param(req, "workflow", longest=64),
            tenant=_text_param(req, "tenant", longest=64),
            text=_text_param(req, "q", longest=200),
            children=bool(req.get_param_as_bool("children")),
        )
        cursor = req.get_param("cursor")
        before = decode_cursor(cursor) if cursor else None
        with self.sessions() as session:
            rows = list_tasks(session, where, before=before, limit=limit + 1)
        page = rows[:limit]
        last = page[-1][0] if page else None
        resp.media = {
            "tasks": [task_row(task, query) for task, query in page],
            "next": encode_cursor(last.created_at, last.id) if last is not None and len(rows) > limit else None,
        }


class TaskEvents:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def on_get(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        """The task's event log after ``after``."""
        after = req.get_param_as_int("after", min_value=0, max_value=2**63 - 1) or 0
        with self.sessions() as session:
            resp.media = {"events": [task_event(e) for e in task_events(session, task_id, after_id=after)]}


class Overview:
    """Tasks waiting and running, queues (with dead letters), limits, breakers, recent events, filters."""

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
        self.workflows = sorted(catalogue)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """What the dashboard's overview shows besides its charts."""
        principal = principal_of(req)
        operator = principal.operator
        queues: list[dict[str, Any]] | None = None
        if operator:
            try:
                queues = queue_depths(self.broker, self.queues)
            except Exception:  # a framework boundary: the page still shows what the database knows
                logger.exception("queue depths unavailable")
        tenants = visible_tenants(req)
        with self.sessions() as session:
            breakers = [breaker_view(b) for b in list_breakers(session)] if operator else None
            events = [event_summary(e) for e in list_events(session, limit=20, tenants=tenants)]
            active = active_counts(session, tenants=tenants)
            # What the list can be filtered by: asked for once, when the page loads.
            filters = None
            if req.get_param_as_bool("filters"):
                tenant_names = tenants_in_use(session) if tenants is None else sorted(tenants)
                filters = {"workflows": self.workflows, "tenants": tenant_names, "states": sorted(STATES)}
        limits = {name: f"{limit.count}/{limit.period:g}s" for name, limit in self.settings.rate_limits.items()}
        resp.media = {
            "operator": operator,  # false: queues, breakers and broker_ui are withheld (null)
            "scopes": sorted(principal.scopes),
            "active": active,
            "queues": queues,
            "rate_limits": limits,
            "breakers": breakers,
            "events": events,
            "broker_ui": self.settings.rabbitmq_ui if self.settings.uses_rabbitmq and operator else None,
            "filters": filters,  # with ?filters=true
        }
