"""Poison messages: a task that keeps killing its worker is dead-lettered after ``max_deliveries`` starts.

Every start of a task counts, crash redeliveries and RabbitMQ's ``consumer_timeout`` redeliveries
included. The count is taken and compared by the claim itself, in the statement that takes the
lease (``models.tasks.claim_task``), so this is not a middleware of its own: ``Claiming`` asks
:func:`max_deliveries` for the cap and hands a task over it to :func:`fail_poisoned`.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from actors.orchestration import wake_parent
from actors.runtime import Runtime
from interlock.settings import Settings
from models.task_transitions import finish_task, lock_in_order
from models.tasks import Task, TaskState

__all__ = ["max_deliveries", "fail_poisoned"]

logger = logging.getLogger(__name__)


def max_deliveries(settings: Settings, message: Any) -> int:
    """How many starts the message's task may have: retries are starts too, and the cap
    (``INTERLOCK_MAX_DELIVERIES``) is on the starts beyond them (crash redeliveries)."""
    return settings.max_deliveries + int(message.options.get("retries") or 0)


def fail_poisoned(runtime: Runtime, message: Any, task_id: str, attempts: int) -> None:
    """End the task FAILURE (waking its parent) and fail the message, so it is dead-lettered."""
    error = (
        f"task started {attempts - 1} times without finishing (worker crashes or "
        f"redeliveries); INTERLOCK_MAX_DELIVERIES={runtime.settings.max_deliveries}. Dead-lettered."
    )
    logger.error("poison message for task %s: %s", task_id, error)
    with runtime.sessions.begin() as session:
        # The task's row and its parent's, locked together in id order (never one, then the other).
        parent_id = session.scalar(select(Task.parent_id).where(Task.id == task_id))
        lock_in_order(session, (task_id, parent_id))
        ended = finish_task(session, task_id, state=TaskState.FAILURE, owner=runtime.owner, error=error)
        wake_parent(session, ended.parent_id if ended else None)
    message.fail()
