"""The asyncio client: :class:`AsyncClient` and the :class:`AsyncTaskHandle` its ``submit`` returns.

The same calls, retries and answers as :class:`~interlock.client.Client` (all decided in
:mod:`interlock.client.calls`), awaited instead of blocking.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, Self

import httpx2

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
from .sync import POLL_FIRST, POLL_LONGEST, USER_AGENT

__all__ = ["AsyncClient", "AsyncTaskHandle"]

logger = logging.getLogger(__name__)


class AsyncClient:
    """:class:`~interlock.client.Client` for asyncio: the same arguments, every call awaited.

    Close it with ``await client.aclose()``, or use ``async with``.
    """

    def __init__(
        self,
        url: str,
        key: str | None = None,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._has_key = bool(key)
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx2.AsyncClient(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def __repr__(self) -> str:
        return f"AsyncClient({calls.shown_url(self.url)!r}, key={'<set>' if self._has_key else None})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- tasks ----------------------------------------------------------------------------------

    async def submit(
        self,
        query: str,
        *,
        context: Mapping[str, Any] | None = None,
        workflow: str | None = None,
        priority: int | str | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncTaskHandle:
        """Hand in a task; see :meth:`interlock.client.Client.submit`."""
        call = calls.submit(
            query, context=context, workflow=workflow, priority=priority, idempotency_key=idempotency_key
        )
        response = await self._send(call)
        body = calls.read_json(call, response)
        submitted = calls.parse(call, lambda b: Submitted.from_json(b, replayed=response.status_code == 200), body)
        return AsyncTaskHandle(self, submitted)

    def task(self, task_id: str) -> AsyncTaskHandle:
        """A handle on a task submitted earlier (by id); nothing is sent."""
        return AsyncTaskHandle(self, Submitted(task_id, f"/agent/status/{task_id}"))

    async def status(self, task_id: str) -> TaskStatus:
        call = calls.status(task_id)
        return calls.parse(call, TaskStatus.from_json, await self._call(call))

    async def result(self, task_id: str, *, timeout: float | None = None) -> Any:
        """The task's result once it ends; see :meth:`interlock.client.Client.result`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause, state = POLL_FIRST, None
        while True:
            remaining = MAX_WAIT if deadline is None else deadline - time.monotonic()
            wait = min(MAX_WAIT, remaining)
            call = calls.result(task_id, wait if wait >= 0.05 else None)
            asked = time.monotonic()
            body = await self._call(call, timeout=httpx2.Timeout(self.timeout, read=self.timeout + max(wait, 0.0)))
            finished, value = calls.outcome(task_id, body)
            if finished:
                return value
            state = value
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(task_id, timeout or 0.0, state)
            if time.monotonic() - asked < wait / 2:  # answered early (an API without ?wait): poll, backing off
                await asyncio.sleep(max(0.0, min(pause, pause if deadline is None else deadline - time.monotonic())))
                pause = min(pause * 2, POLL_LONGEST)

    async def stream(self, task_id: str, *, after: int = 0) -> AsyncIterator[TaskEvent]:
        """The task's events as they happen; see :meth:`interlock.client.Client.stream`."""
        last, drops = after, 0
        while True:
            call = calls.stream(task_id, last)
            cause: httpx2.TransportError | None = None
            try:
                async with self._http.stream(
                    call.method, call.path, headers=call.headers, timeout=calls.stream_timeout(self.timeout)
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                    calls.check_stream(call, response)
                    async for sse in httpx2.EventSource(response):
                        event = calls.read_event(call, sse)
                        if event is None:
                            continue
                        last, drops = event.id, 0
                        yield event
                        if event.finished:
                            return
            except httpx2.TransportError as exc:
                cause = exc
            if cause is None and (await self.status(task_id)).finished:
                return  # its terminal event came before ``after``
            drops += 1
            delay = self.retry.after_error(call, cause or calls.ended_early(), drops)
            if delay is None:
                raise ConnectionFailed(f"{call.method} {call.path}: the stream keeps dropping ({cause})") from cause
            logger.info("stream of task %s dropped (%s); resuming after event %d", task_id, cause or "ended", last)
            await asyncio.sleep(delay)

    async def cancel(self, task_id: str) -> Cancellation:
        call = calls.cancel(task_id)
        return calls.parse(call, Cancellation.from_json, await self._call(call))

    # -- workflows and dead letters -------------------------------------------------------------

    async def history(self, workflow_id: str) -> WorkflowHistory:
        call = calls.history(workflow_id)
        return calls.parse(call, WorkflowHistory.from_json, await self._call(call))

    async def resume(self, workflow_id: str) -> AsyncTaskHandle:
        call = calls.resume(workflow_id)
        return AsyncTaskHandle(self, calls.parse(call, Submitted.from_json, await self._call(call)))

    async def dead_letters(self, queue: str | None = None) -> list[DeadLetterQueue]:
        call = calls.dead_letters(queue)
        return calls.parse(call, lambda b: [DeadLetterQueue.from_json(q) for q in b["queues"]], await self._call(call))

    async def replay(self, task_id: str) -> AsyncTaskHandle:
        call = calls.replay(task_id)
        return AsyncTaskHandle(self, calls.parse(call, Submitted.from_json, await self._call(call)))

    async def replay_queue(self, queue: str) -> QueueReplay:
        call = calls.replay_queue(queue)
        return calls.parse(call, QueueReplay.from_json, await self._call(call))

    async def purge(self, task_id: str) -> Purged:
        call = calls.purge(task_id)
        return calls.parse(call, Purged.from_json, await self._call(call))

    async def purge_queue(self, queue: str) -> Purged:
        call = calls.purge_queue(queue)
        return calls.parse(call, Purged.from_json, await self._call(call))

    # -- the wire -------------------------------------------------------------------------------

    async def _call(self, call: Call, *, timeout: httpx2.Timeout | None = None) -> dict[str, Any]:
        return calls.read_json(call, await self._send(call, timeout=timeout))

    async def _send(self, call: Call, *, timeout: httpx2.Timeout | None = None) -> httpx2.Response:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.request(
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
            await asyncio.sleep(delay)


class AsyncTaskHandle:
    """One task, for asyncio: the same as :class:`~interlock.client.TaskHandle`, awaited."""

    def __init__(self, client: AsyncClient, submitted: Submitted) -> None:
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
        return f"AsyncTaskHandle(task_id={self.task_id!r})"

    async def status(self) -> TaskStatus:
        return await self.client.status(self.task_id)

    async def result(self, timeout: float | None = None) -> Any:
        return await self.client.result(self.task_id, timeout=timeout)

    def stream(self, *, after: int = 0) -> AsyncIterator[TaskEvent]:
        return self.client.stream(self.task_id, after=after)

    async def cancel(self) -> Cancellation:
        return await self.client.cancel(self.task_id)

    async def history(self) -> WorkflowHistory:
        return await self.client.history(self.task_id)
