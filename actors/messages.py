"""The one message shape Interlock sends: a task id (its broker priority, its trace), never the task itself.

The task's input, state and result live in its database row; the message only says which row to
run, so it can be parked, redelivered, dead-lettered and replayed without ever going stale.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from dramatiq import Message

from actors.catalogue import WorkflowSpec, spec_for_actor
from interlock import tracing

__all__ = ["task_message", "task_id_of", "interlock_task_id", "QUEUED_AT"]

#: The message option that says when it joined its queue, in microseconds since the epoch (the
#: message's own timestamp is in milliseconds, which would start the queue span before its parent).
#: Set while tracing is on: when the message is made (its outbox row commits with the task, and the
#: relay's publish does not pass through the broker's hooks), and again when a delay parks it.
QUEUED_AT = "queued_at_us"


def task_message(
    *, queue: str, actor: str, task_id: str, priority: int = 0, traceparent: str | None = None
) -> Message[Any]:
    """The message that runs task ``task_id`` with ``actor`` on ``queue``.

    ``traceparent``: the trace the task's run continues (``interlock.tracing``); by default the
    current span's, so a submission, a parent task or a child's end carries its trace along. None
    while tracing is off.
    """
    options: dict[str, Any] = {"broker_priority": priority} if priority else {}
    traceparent = traceparent or tracing.traceparent()
    if traceparent:
        options["traceparent"] = traceparent
        options[QUEUED_AT] = time.time_ns() // 1_000
    return Message(queue_name=queue, actor_name=actor, args=(task_id,), kwargs={}, options=options)


def task_id_of(message: Any) -> str | None:
    """Interlock messages carry exactly one thing: the task id."""
    if message.args:
        return str(message.args[0])
    value = message.kwargs.get("task_id")
    return str(value) if value else None


def interlock_task_id(catalogue: Mapping[str, WorkflowSpec], message: Any) -> str | None:
    """The task id of a message for one of the catalogue's workflows; ``None`` for a message of a
    plain Dramatiq actor on the same broker, which Interlock's middleware leaves alone."""
    task_id = task_id_of(message)
    if task_id is None or spec_for_actor(catalogue, message.actor_name) is None:
        return None
    return task_id
