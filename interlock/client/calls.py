"""What each API call sends, which failures may be retried, and how an answer becomes a value or an error.

Shared by :class:`~interlock.client.Client` and :class:`~interlock.client.AsyncClient`: the two
differ only in how they wait (a blocking socket or asyncio), so everything else is decided here
once, without I/O, the way httpx2 itself shares its request models between its two clients.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import httpx2

from .errors import InvalidResponse, TaskCancelled, TaskFailed, api_error, retry_after_seconds
from .models import TaskEvent

__all__ = [
    "Call",
    "RetryPolicy",
    "submit",
    "status",
    "result",
    "stream",
    "cancel",
    "history",
    "resume",
    "dead_letters",
    "replay",
    "replay_queue",
    "purge",
    "purge_queue",
    "read_json",
    "parse",
    "outcome",
    "read_event",
    "check_stream",
    "shown_url",
    "stream_timeout",
    "ended_early",
    "MAX_WAIT",
    "STREAM_READ_TIMEOUT",
]

T = TypeVar("T")

#: The longest ``?wait=`` the API takes; a longer ``result(timeout=...)`` asks again.
MAX_WAIT = 30.0
#: The API sends a keep-alive every 15 s on a quiet stream: this much silence is a dead connection.
STREAM_READ_TIMEOUT = 45.0


@dataclass(frozen=True)
class Call:
    """One request: its method, path (quoted), query, JSON body and extra headers."""

    method: str
    path: str
    params: Mapping[str, str] | None = None
    json: Mapping[str, Any] | None = None
    headers: Mapping[str, str] | None = None
    #: Sending it again after a dropped connection or a 502/503/504 does no harm.
    idempotent: bool = False


def _path(prefix: str, ident: str) -> str:
    return f"{prefix}/{quote(ident, safe='')}"


def submit(
    query: str,
    *,
    context: Mapping[str, Any] | None,
    workflow: str | None,
    priority: int | str | None,
    idempotency_key: str | None,
) -> Call:
    """``POST /agent/execute``: safe to send again only with an ``Idempotency-Key`` (the API answers the first task)."""
    body: dict[str, Any] = {"query": query}
    if context is not None:
        body["context"] = dict(context)
    if workflow is not None:
        body["workflow"] = workflow
    if priority is not None:
        body["priority"] = priority
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
    return Call("POST", "/agent/execute", json=body, headers=headers, idempotent=idempotency_key is not None)


def status(task_id: str) -> Call:
    return Call("GET", _path("/agent/status", task_id), idempotent=True)


def result(task_id: str, wait: float | None) -> Call:
    """``GET /agent/result/{id}?wait=N``: answers when the task ends or after N seconds, whichever is first."""
    params = {"wait": f"{wait:.3f}"} if wait else None
    return Call("GET", _path("/agent/result", task_id), params=params, idempotent=True)


def stream(task_id: str, after: int) -> Call:
    # JSON too: an error answer (Falcon's ``{title, description}``) comes only to a client that accepts it.
    headers = {"Accept": "text/event-stream, application/json;q=0.9", "Last-Event-ID": str(after)}
    return Call("GET", _path("/agent/stream", task_id), headers=headers, idempotent=True)


def cancel(task_id: str) -> Call:
    return Call("POST", _path("/agent/cancel", task_id))


def history(workflow_id: str) -> Call:
    return Call("GET", _path("/agent/history", workflow_id), idempotent=True)


def resume(workflow_id: str) -> Call:
    return Call("POST", _path("/agent/resume", workflow_id))


def dead_letters(queue: str | None) -> Call:
    return Call("GET", "/dlq", params={"queue": queue} if queue else None, idempotent=True)


def replay(task_id: str) -> Call:
    return Call("POST", _path("/dlq", task_id) + "/replay")


def replay_queue(queue: str) -> Call:
    return Call("POST", "/dlq/replay", params={"queue": queue})


def purge(task_id: str) -> Call:
    return Call("DELETE", _path("/dlq", task_id), idempotent=True)


def purge_queue(queue: str) -> Call:
    return Call("DELETE", "/dlq", params={"queue": queue}, idempotent=True)


#: Failures before anything reached the API: any call may be sent again.
_NEVER_SENT = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout)
#: Failures after the request may have reached it: only idempotent calls are sent again.
_DROPPED = (httpx2.ReadError, httpx2.WriteError, httpx2.ReadTimeout, httpx2.WriteTimeout, httpx2.RemoteProtocolError)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a call that failed on the way, with exponential backoff and jitter.

    A connection that could not be opened is retried for every call (nothing was sent); a
    connection that dropped after sending, and a 502/503/504 answer, only for idempotent calls.
    A 503's ``Retry-After`` is honoured up to ``max_backoff``; a longer one is raised to the caller.
    """

    attempts: int = 3
    backoff: float = 0.25
    max_backoff: float = 8.0

    def _delay(self, attempt: int) -> float:
        return random.uniform(0.5, 1.0) * min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))

    def after_error(self, call: Call, exc: httpx2.TransportError, attempt: int) -> float | None:
        """Seconds to wait before try ``attempt + 1`` after ``exc``, or ``None`` to give up."""
        if attempt > self.attempts:
            return None
        if isinstance(exc, _NEVER_SENT) or (call.idempotent and isinstance(exc, _DROPPED)):
            return self._delay(attempt)
        return None

    def after_answer(self, call: Call, response: httpx2.Response, attempt: int) -> float | None:
        if attempt > self.attempts or not call.idempotent or response.status_code not in (502, 503, 504):
            return None
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        if retry_after is None:
            return self._delay(attempt)
        return retry_after if retry_after <= self.max_backoff else None


def parse(call: Call, make: Callable[[dict[str, Any]], T], body: dict[str, Any]) -> T:
    """``make(body)``, or :class:`InvalidResponse` if the JSON lacks what the API always sends."""
    try:
        return make(body)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidResponse(f"{call.method} {call.path} answered JSON that is not the API's ({exc!r})") from exc


def outcome(task_id: str, body: Mapping[str, Any]) -> tuple[bool, Any]:
    """``/agent/result``'s answer: ``(True, result)``, ``(False, state)`` if unfinished; raises if it failed."""
    status = body.get("status")
    if status == "complete":
        return True, body.get("result")
    if status == "failed":
        state, error = str(body.get("state") or "FAILURE"), _optional(body.get("error"))
        raise (TaskCancelled if state == "CANCELLED" else TaskFailed)(task_id, state, error)
    return False, body.get("state")


def _optional(value: Any) -> str | None:
    return None if value is None else str(value)


def _decoded(response: httpx2.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None


def read_json(call: Call, response: httpx2.Response) -> dict[str, Any]:
    """The answer's JSON object, or the typed error it stands for."""
    body = _decoded(response)
    if response.status_code >= 400:
        raise api_error(call.method, call.path, response.status_code, body, response.headers)
    if not isinstance(body, dict):
        raise InvalidResponse(f"{call.method} {call.path} answered {response.status_code} with a body that is not JSON")
    return body


def check_stream(call: Call, response: httpx2.Response) -> None:
    """Raise unless the answer is an event stream; an error answer (read by the caller) becomes its typed error."""
    if response.status_code >= 400:
        raise api_error(call.method, call.path, response.status_code, _decoded(response), response.headers)
    media = response.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media != "text/event-stream":
        raise InvalidResponse(f"{call.method} {call.path} answered {response.status_code} with {media or 'no'} content")


def read_event(call: Call, sse: httpx2.ServerSentEvent) -> TaskEvent | None:
    """A task event from one SSE frame; ``None`` for frames that carry none (``retry:``)."""
    if not sse.data:
        return None
    try:
        return TaskEvent.from_sse(sse.id, sse.event, json.loads(sse.data))
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidResponse(f"{call.method} {call.path} sent an event that is not the API's: {exc}") from exc


def stream_timeout(timeout: float) -> httpx2.Timeout:
    """Connect within ``timeout``; between two reads allow the API's keep-alive interval and more."""
    return httpx2.Timeout(timeout, read=max(timeout, STREAM_READ_TIMEOUT))


def ended_early() -> httpx2.TransportError:
    """What a stream that ended before the task's terminal event counts as, for the retry policy."""
    return httpx2.RemoteProtocolError("the stream ended before the task did")


def shown_url(url: str) -> str:
    """``url`` without any user name or password in it, for messages and reprs."""
    parsed = httpx2.URL(url)
    return str(parsed.copy_with(username=None, password=None)) if parsed.userinfo else url
