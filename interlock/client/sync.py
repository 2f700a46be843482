"""The blocking client: :class:`Client` and the :class:`TaskHandle` its ``submit`` returns.

Every call goes through ``_send``, which retries what :class:`~interlock.client.calls.RetryPolicy`
allows; what is sent and how answers are read lives in :mod:`interlock.client.calls`, shared with
the asyncio flavour (:mod:`interlock.client.asynchronous`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Self

import httpx2

from interlock import __version__

from . import calls
from .calls import MAX_WAIT, Call, RetryPolicy
from .errors import ConnectionFailed, InvalidResponse, ResultTimeout
from .models import (
    Cancellation,
    DeadLetterQueue,
    Purged,
    QueueReplay,
    Submitted,
    TaskEvent,
    TaskStatus,
    WorkflowHistory,
)

__all__ = ["Client", "TaskHandle", "USER_AGENT"]

logger = logging.getLogger(__name__)

USER_AGENT = f"interlock-client/{__version__}"
#: ``result()`` against an API that answers at once (no ``?wait``): the first and longest pause between polls.
POLL_FIRST, POLL_LONGEST = 0.1, 2.0


class Client:
    """A connection pool to one Interlock API, authenticated with one key; close it, or use ``with``.

    ``url`` is the API's base URL (``http://127.0.0.1:8000``), ``key`` an API key (sent as
    ``Authorization: Bearer``; ``None`` when the API runs with authentication off). ``timeout``
    bounds connecting and each read (a ``result()`` wait adds its own); ``retry`` says how often
    to try again. ``transport`` replaces the network, e.g. ``httpx2.WSGITransport(app)``.
    """

    def __init__(
        self,
        url: str,
        key: str | None = None,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx2.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._has_key = bool(key)
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx2.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def __repr__(self) -> str:
        return f"Client({calls.shown_url(self.url)!r}, key={'<set>' if self._has_key else None})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- tasks ----------------------------------------------------------------------------------

    def submit(
        self,
        query: str,
        *,
        context: Mapping[str, Any] | None = None,
        workflow: str | None = None,
        priority: int | str | None = None,
        idempotency_key: str | None = None,
    ) -> TaskHandle:
        """Hand in a task; the same ``idempotency_key`` (and body) within 24 hours answers the first task.

        With a key the submission is retried after a dropped connection; without one only when
        the connection could not be opened, since the API may have taken the first request.
        """
        call = calls.submit(
            query, context=context, workflow=workflow, priority=priority, idempotency_key=idempotency_key
        )
        response = self._send(call)
        body = calls.read_json(call, response)
        submitted = calls.parse(call, lambda b: Submitted.from_json(b, replayed=response.status_code == 200), body)
        return TaskHandle(self, submitted)

    def task(self, task_id: str) -> TaskHandle:
        """A handle on a task submitted earlier (by id); nothing is sent."""
        return TaskHandle(self, Submitted(task_id, f"/agent/status/{task_id}"))

    def status(self, task_id: str) -> TaskStatus:
        call = calls.status(task_id)
        return calls.parse(call, TaskStatus.from_json, self._call(call))

    def result(self, task_id: str, *, timeout: float | None = None) -> Any:
        """The task's result once it ends; :class:`TaskFailed`, :class:`TaskCancelled` or :class:`ResultTimeout` else.

        Waits on the API (``GET /agent/result?wait=``, up to 30 s a request), so a task that ends
        is seen within a fraction of a second without polling.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause, state = POLL_FIRST, None
        while True:
            remaining = MAX_WAIT if deadline is None else deadline - time.monotonic()
            wait = min(MAX_WAIT, remaining)
            call = calls.result(task_id, wait if wait >= 0.05 else None)
            asked = time.monotonic()
            body = self._call(call, timeout=httpx2.Timeout(self.timeout, read=self.timeout + max(wait, 0.0)))
            finished, value = calls.outcome(task_id, body)
            if finished:
                return value
            state = value
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(task_id, timeout or 0.0, state)
            if time.monotonic() - asked < wait / 2:  # answered early (an API without ?wait): poll, backing off
                time.sleep(max(0.0, min(pause, pause if deadline is None else deadline - time.monotonic())))
                pause = min(pause * 2, POLL_LONGEST)

    def stream(self, task_id: str, *, after: int = 0) -> Iterator[TaskEvent]:
        """The task's events as they happen, after event id ``after``, ending with its terminal state event.

        A connection that drops is opened again with ``Last-Event-ID``: no event is lost or repeated.
        """
        last, drops = after, 0
        while True:
            call = calls.stream(task_id, last)
            cause: httpx2.TransportError | None = None
            try:
                with self._http.stream(
                    call.method, call.path, headers=call.headers, timeout=calls.stream_timeout(self.timeout)
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                    calls.check_stream(call, response)
                    for sse in httpx2.EventSource(response):
                        event = calls.read_event(call, sse)
                        if event is None:
                            continue
                        last, drops = event.id, 0
                        yield event
                        if event.finished:
                            return
            except httpx2.TransportError as exc:
                cause = exc
            if cause is None and self.status(task_id).finished:
                return  # its terminal event came before ``after``
            drops += 1
            delay = self.retry.after_error(call, cause or calls.ended_early(), drops)
            if delay is None:
                raise ConnectionFailed(f"{call.method} {call.path}: the stream keeps dropping ({cause})") from cause
            logger.info("stream of task %s dropped (%s); resuming after event %d", task_id, cause or "ended", last)
            time.sleep(delay)

    def cancel(self, task_id: str) -> Cancellation:
        call = calls.cancel(task_id)
        return calls.parse(call, Cancellation.from_json, self._call(call))

    # -- workflows and dead letters -------------------------------------------------------------

    def history(self, workflow_id: str) -> WorkflowHistory:
        call = calls.history(workflow_id)
        return calls.parse(call, WorkflowHistory.from_json, self._call(call))

    def resume(self, workflow_id: str) -> TaskHandle:
        """Run a failed checkpointed workflow again from its first unfinished stage."""
        call = calls.resume(workflow_id)
        return TaskHandle(self, calls.parse(call, Submitted.from_json, self._call(call)))

    def dead_letters(self, queue: str | None = None) -> list[DeadLetterQueue]:
        call = calls.dead_letters(queue)
        return calls.parse(call, lambda b: [DeadLetterQueue.from_json(q) for q in b["queues"]], self._call(call))

    def replay(self, task_id: str) -> TaskHandle:
        call = calls.replay(task_id)
        return TaskHandle(self, calls.parse(call, Submitted.from_json, self._call(call)))

    def replay_queue(self, queue: str) -> QueueReplay:
        call = calls.replay_queue(queue)
        return calls.parse(call, QueueReplay.from_json, self._call(call))

    def purge(self, task_id: str) -> Purged:
        call = calls.purge(task_id)
        return calls.parse(call, Purged.from_json, self._call(call))

    def purge_queue(self, queue: str) -> Purged:
        call = calls.purge_queue(queue)
        return calls.parse(call, Purged.from_json, self._call(call))

    # -- the wire -------------------------------------------------------------------------------

    def _call(self, call: Call, *, timeout: httpx2.Timeout | None = None) -> dict[str, Any]:
        return calls.read_json(call, self._send(call, timeout=timeout))

    def _send(self, call: Call, *, timeout: httpx2.Timeout | None = None) -> httpx2.Response:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(
                    call.method,
                    call.path,
                    params=call.params,
                    json=call.json,
                    headers=call.headers,
                    timeout=timeout or self.timeout,
                )
            except httpx2.TransportError as exc:
                delay = self.retry.after_error(call, exc, attempt)
                if delay is None:
                    raise ConnectionFailed(
                        f"{call.method} {call.path}: cannot reach the Interlock API at "
                        f"{calls.shown_url(self.url)}: {exc or type(exc).__name__}"
                    ) from exc
                logger.info("%s %s failed (%s); retry %d in %.1f s", call.method, call.path, exc, attempt, delay)
            except httpx2.RequestError as exc:  # a body it cannot decode, too many redirects
                raise InvalidResponse(f"{call.method} {call.path}: {exc}") from exc
            else:
                delay = self.retry.after_answer(call, response, attempt)
                if delay is None:
                    return response
                logger.info(
                    "%s %s answered %d; retry %d in %.1f s",
                    call.method,
                    call.path,
                    response.status_code,
                    attempt,
                    delay,
                )
            time.sleep(delay)


class TaskHandle:
    """One task: its id and where its status is, and what can be done with it."""

    def __init__(self, client: Client, submitted: Submitted) -> None:
        self.client = client
        self.submitted = submitted

    @property
    def task_id(self) -> str:
        return self.submitted.task_id

    @property
    def status_url(self) -> str:
        return self.submitted.status_url

    @property
    def replayed(self) -> bool:
        """True when the ``Idempotency-Key`` named an earlier submission: this is that task."""
        return self.submitted.replayed

    def __repr__(self) -> str:
        return f"TaskHandle(task_id={self.task_id!r})"

    def status(self) -> TaskStatus:
        return self.client.status(self.task_id)

    def result(self, timeout: float | None = None) -> Any:
        return self.client.result(self.task_id, timeout=timeout)

    def stream(self, *, after: int = 0) -> Iterator[TaskEvent]:
        return self.client.stream(self.task_id, after=after)

    def cancel(self) -> Cancellation:
        return self.client.cancel(self.task_id)

    def history(self) -> WorkflowHistory:
        return self.client.history(self.task_id)
