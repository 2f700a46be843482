"""``POST /events`` publishes an event; ``GET /events?type=&since=&limit=`` lists them, newest first."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import falcon

from actors.errors import InvalidInput
from actors.events.bus import EventBus
from actors.events.topics import check_event_type
from models.events import list_events

from .auth import tenant_of, visible_tenants
from .presenters import event_view
from .schemas import EVENT_REQUEST
from .validation import validate

__all__ = ["EventsResource", "parse_since"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def parse_since(value: str) -> datetime:
    """An ISO 8601 time; without a zone it is UTC. A ``+`` decoded to a space by the query string is put back."""
    for candidate in (value, value.replace(" ", "+")):
        try:
            parsed = datetime.fromisoformat(candidate)
        except ValueError:
            continue
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    raise falcon.HTTPBadRequest(
        title="Invalid parameter",
        description=f"since={value!r} is not an ISO 8601 time, e.g. 2026-11-26T14:00:00Z.",
    )


class EventsResource:
    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    @validate(req_schema=EVENT_REQUEST)
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body: dict[str, Any] = req.get_media()
        event_id, task_ids = self.bus.publish(
            body["event_type"], body.get("data") or {}, source="api", tenant=tenant_of(req)
        )
        resp.status = falcon.HTTP_202
        resp.media = {"event_id": event_id, "task_ids": task_ids}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        event_type = req.get_param("type") or None
        if event_type is not None:
            try:
                check_event_type(event_type)
            except InvalidInput as exc:
                raise falcon.HTTPBadRequest(title="Invalid parameter", description=str(exc)) from None
        since_param = req.get_param("since")
        since = parse_since(since_param) if since_param else None
        limit = req.get_param_as_int("limit", min_value=1, max_value=MAX_LIMIT, default=DEFAULT_LIMIT)
        with self.bus.sessions() as session:
            events = [
                event_view(e)
                for e in list_events(
                    session, event_type=event_type, since=since, limit=limit, tenants=visible_tenants(req)
                )
            ]
        resp.media = {"events": events, "count": len(events), "limit": limit}
