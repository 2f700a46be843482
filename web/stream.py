"""``GET /agent/stream/{task_id}``: a task's events as Server-Sent Events, from ``task_events``.

The stream polls the table (a short session per poll, so an open stream holds a thread but no
database connection), sends each event once with its ``task_events.id`` as the SSE id, and ends
after the task's terminal state event, which carries the result or the error. A client that
reconnects with ``Last-Event-ID`` continues after that event: nothing is lost, nothing repeats.
Each open stream occupies one server thread: run the API with ``INTERLOCK_API_THREADS`` at least
the number of concurrent streams (plus headroom for ordinary requests).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import falcon
from sqlalchemy.orm import Session, sessionmaker

from models.task_queries import child_tasks, get_task, task_events, task_state
from models.tasks import TERMINAL_STATES, TaskEvent

from .presenters import stream_event, task_status

__all__ = ["StreamResource", "wait_for_end", "event_stream"]

POLL_SECONDS = 0.25
HEARTBEAT_SECONDS = 15.0


def _frame(event: TaskEvent) -> bytes:
    body = json.dumps(stream_event(event), separators=(",", ":"), default=str)
    return f"id: {event.id}\nevent: {event.kind}\ndata: {body}\n\n".encode()


def _ends_stream(event: TaskEvent) -> bool:
    return event.kind == "state" and event.state in TERMINAL_STATES


def event_stream(
    sessions: sessionmaker[Session],
    task_id: str,
    *,
    after_id: int = 0,
    poll: float = POLL_SECONDS,
    heartbeat: float = HEARTBEAT_SECONDS,
) -> Iterator[bytes]:
    """SSE frames for ``task_id``'s events after ``after_id``, until its terminal state event."""
    yield f"retry: {int(poll * 4000)}\n\n".encode()
    last_sent = time.monotonic()
    while True:
        with sessions() as session:
            # The row first: if it is already terminal, its terminal event was committed with it.
            state = task_state(session, task_id)
            batch = task_events(session, task_id, after_id=after_id)
        if state is None:
            return  # deleted (retention) while we streamed
        for event in batch:
            after_id = event.id
            yield _frame(event)
            last_sent = time.monotonic()
            if _ends_stream(event):
                return
        if not batch and state in TERMINAL_STATES:
            return  # the terminal event was sent before (Last-Event-ID at or past it)
        if time.monotonic() - last_sent >= heartbeat:
            yield b": keep-alive\n\n"
            last_sent = time.monotonic()
        time.sleep(poll)


def _last_event_id(req: falcon.Request) -> int:
    raw = req.get_header("Last-Event-ID") or req.get_param("last_event_id") or "0"
    try:
        value = int(raw)
    except ValueError as exc:
        raise falcon.HTTPBadRequest(
            title="Invalid Last-Event-ID", description="Last-Event-ID must be an event id (an integer)."
        ) from exc
    return max(0, min(value, 2**63 - 1))  # event ids are 64-bit


class StreamResource:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def on_get(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> None:
        after_id = _last_event_id(req)
        with self.sessions() as session:
            if len(task_id) > 36 or get_task(session, task_id) is None:
                raise falcon.HTTPNotFound(title="Unknown task", description=f"No task has the id {task_id!r}.")
        resp.content_type = "text/event-stream"
        resp.set_header("Cache-Control", "no-cache")
        resp.set_header("X-Accel-Buffering", "no")  # nginx: pass each event through at once
        resp.stream = event_stream(self.sessions, task_id, after_id=after_id)


def wait_for_end(
    sessions: sessionmaker[Session], task_id: str, seconds: float, *, poll: float = POLL_SECONDS
) -> dict[str, Any] | None:
    """The task's status body once it ends within ``seconds``, else ``None``."""
    deadline = time.monotonic() + seconds
    while True:
        with sessions() as session:
            task = get_task(session, task_id)
            if task is not None and task.state in TERMINAL_STATES:
                return task_status(task, children=child_tasks(session, task_id))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        time.sleep(min(poll, remaining))
