"""Submitting work: the task row is durable before its message is published."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

import dramatiq
from dramatiq.errors import BrokerConnectionError
from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from models.checkpoints import COMPLETED, load_checkpoints
from models.tasks import Task, TaskState, create_task, finish_task, reopen_task

from .errors import InterlockError
from .maintenance import task_message
from .registry import WorkflowSpec

__all__ = [
    "submit",
    "resume",
    "UnknownWorkflow",
    "UnknownTask",
    "NotResumable",
    "BrokerUnavailable",
    "PRIORITIES",
    "resolve_priority",
]

logger = logging.getLogger(__name__)

#: Named priorities map onto RabbitMQ message priorities (higher runs first).
PRIORITIES = {"low": 0, "normal": 4, "high": 9}


class UnknownWorkflow(InterlockError):
    pass


class UnknownTask(InterlockError):
    pass


class NotResumable(InterlockError):
    def __init__(self, task_id: str, state: str) -> None:
        super().__init__(f"task {task_id} is {state}; only FAILURE or CANCELLED tasks can be resumed")
        self.state = state


class BrokerUnavailable(InterlockError):
    """The message could not be published; nothing was kept."""


def resolve_priority(priority: str | int | None, *, max_priority: int) -> int:
    if priority is None:
        return PRIORITIES["normal"]
    if isinstance(priority, str):
        return PRIORITIES[priority]
    return max(0, min(int(priority), max_priority))


def submit(
    sessions: sessionmaker[Session],
    broker: dramatiq.Broker,
    catalogue: Mapping[str, WorkflowSpec],
    *,
    workflow: str,
    input: dict[str, Any],
    priority: int,
    task_id: str | None = None,
    parent_id: str | None = None,
) -> Task:
    """Create the task, commit it, then publish its message with confirms.

    If the publish fails the row is removed again, so a refused submission leaves nothing
    half-written and the caller can answer 503.
    """
    spec = catalogue.get(workflow)
    if spec is None:
        raise UnknownWorkflow(workflow)
    task_id = task_id or str(uuid.uuid4())
    with sessions.begin() as session:
        task = create_task(
            session,
            task_id=task_id,
            workflow=spec.name,
            actor=spec.actor_name,
            queue=spec.queue,
            input=input,
            priority=priority,
            parent_id=parent_id,
        )
    try:
        broker.enqueue(task_message(queue=spec.queue, actor=spec.actor_name, task_id=task_id, priority=priority))
    except (BrokerConnectionError, OSError) as exc:
        logger.error("publishing task %s failed (%s); the submission is withdrawn", task_id, exc)
        with sessions.begin() as session:
            session.execute(delete(Task).where(Task.id == task_id))
        raise BrokerUnavailable("the message broker is unreachable; nothing was enqueued") from exc
    return task


def resume(
    sessions: sessionmaker[Session], broker: dramatiq.Broker, catalogue: Mapping[str, WorkflowSpec], task_id: str
) -> tuple[Task, str | None]:
    """Re-queue a failed workflow under its own id; completed steps are not run again.

    Returns the task and the first stage without a completed checkpoint (``None`` when the
    workflow declares no stages).
    """
    with sessions.begin() as session:
        task = session.get(Task, task_id)
        if task is None:
            raise UnknownTask(task_id)
        spec = catalogue.get(task.workflow)
        done = {c.stage for c in load_checkpoints(session, task_id) if c.status == COMPLETED}
        stages = spec.stages if spec else ()
        resumed_from = next((stage for stage in stages if stage not in done), None)
        if reopen_task(session, task_id, reason="resumed", data={"resumed_from_stage": resumed_from}) is None:
            raise NotResumable(task_id, task.state)
    try:
        broker.enqueue(task_message(queue=task.queue, actor=task.actor, task_id=task_id, priority=task.priority))
    except (BrokerConnectionError, OSError) as exc:
        with sessions.begin() as session:
            finish_task(
                session, task_id, state=TaskState.FAILURE, owner=None, error="resume failed: broker unreachable"
            )
        raise BrokerUnavailable("the message broker is unreachable; the workflow was not resumed") from exc
    return task, resumed_from
