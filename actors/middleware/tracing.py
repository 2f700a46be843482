"""Continues a task's trace in the worker (``interlock.tracing``): its wait in the queue, then its run.

The message carries the submission's ``traceparent``. When a worker thread takes the message, a
``queue <name>`` span is recorded from when the message joined its queue (for a retry: when its
backoff ended) to now, and a ``task <workflow>``
span, current while the task runs, becomes the parent of its step, LLM and tool spans (and of the
children it starts). Both are children of the submission's span. It sits just before ``Claiming``
in the broker's middleware, so the task span covers the claim and, its after hooks running after
``Claiming``'s, the writes that end the task: a parent woken by this task's end continues in the
same trace. A delivery that is skipped (a duplicate, a tenant's cap) ends its span marked so.
Tracing off: each hook returns at once.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from actors.catalogue import spec_for_actor
from actors.messages import QUEUED_AT, interlock_task_id
from actors.middleware.current_run import current_run
from actors.orchestration import is_suspended
from actors.runtime import Runtime
from interlock import tracing

__all__ = ["Tracing", "QUEUED_AT"]


def _queued_at_ns(message: Any) -> int:
    queued_at_us = message.options.get(QUEUED_AT)
    if queued_at_us is not None:
        return int(queued_at_us) * 1_000
    return int(message.message_timestamp) * 1_000_000


class Tracing(Middleware):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._local = threading.local()

    def before_enqueue(self, broker: dramatiq.Broker, message: Any, delay: int | None) -> None:
        """Note when the message joins its queue: now, or when its delay ends (a retry's backoff);
        a parked message is noted again when it is published."""
        if tracing.enabled():
            message.options[QUEUED_AT] = time.time_ns() // 1_000 + (delay or 0) * 1_000

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        if not tracing.enabled():
            return
        task_id = interlock_task_id(self.runtime.catalogue, message)
        if task_id is None:
            return
        spec = spec_for_actor(self.runtime.catalogue, message.actor_name)
        workflow = spec.name if spec is not None else message.actor_name
        parent = message.options.get("traceparent")
        attributes: dict[str, tracing.Value | None] = {
            "interlock.task_id": task_id,
            "interlock.workflow": workflow,
            "messaging.system": "rabbitmq" if self.runtime.settings.uses_rabbitmq else "dramatiq",
            "messaging.destination.name": message.queue_name,
            "messaging.message.id": message.message_id,
            "interlock.retries": message.options.get("retries"),
        }
        queued = tracing.start(
            f"queue {message.queue_name}",
            attributes,
            parent=parent,
            start_ns=_queued_at_ns(message),
        )
        queued.end()
        # Without a submission's context (a replay, a reclaimed lease) the queue span starts the trace.
        self._local.span = tracing.start(
            f"task {workflow}",
            attributes,
            parent=parent or tracing.traceparent(queued),
            current=True,
            kind="consumer",
        )

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        span = self._take()
        if span is None:
            return
        run = current_run()
        if run is not None:
            span.set({"interlock.attempt": run.attempt, "interlock.suspended": is_suspended(run.outcome) or None})
        if exception is not None:
            span.fail(exception)
        span.end()

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        span = self._take()
        if span is not None:
            span.set({"interlock.skipped": True})
            span.end()

    def _take(self) -> tracing.Span | None:
        span: tracing.Span | None = getattr(self._local, "span", None)
        self._local.span = None
        return span
