"""Submitting work: the task row and its message commit together (the outbox); a relay publishes it.

A submission never waits for RabbitMQ: it is accepted once committed, and runs when the broker
is reachable (``actors.outbox_relay``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dramatiq
from sqlalchemy.orm import Session, sessionmaker

from actors.catalogue import WorkflowSpec
from actors.errors import (
    BudgetExceeded,
    IdempotencyConflict,
    NotResumable,
    UnknownTask,
    UnknownWorkflow,
)
from actors.messages import task_message
from actors.outbox_relay import relay_of
from models import task_lifecycle
from models.checkpoints import COMPLETED, load_checkpoints
from models.scheduled import schedule_message
from models.security import SYSTEM_TENANT
from models.task_ids import new_task_id
from models.task_transitions import reopen_task
from models.tasks import Task

__all__ = [
    "submit",
    "submit_once",
    "resume",
    "PRIORITIES",
    "resolve_priority",
    "Idempotency",
    "Submission",
    "wake_relay",
]

logger = logging.getLogger(__name__)

#: Named priorities map onto RabbitMQ message priorities (higher runs first).
PRIORITIES = {"low": 0, "normal": 4, "high": 9}


@dataclass(frozen=True)
class Idempotency:
    """An ``Idempotency-Key`` and a hash of the canonical request body it was sent with."""

    key: str
    body_hash: str


@dataclass(frozen=True)
class Submission:
    """The task of a submission; ``replayed`` when an idempotency key returned an earlier one."""

    task: Task
    replayed: bool = False


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
    tenant: str = SYSTEM_TENANT,
) -> Task:
    """Create the task and commit it with its message in the outbox; this process's relay publishes it."""
    return submit_once(
        sessions,
        broker,
        catalogue,
        workflow=workflow,
        input=input,
        priority=priority,
        task_id=task_id,
        parent_id=parent_id,
        tenant=tenant,
    ).task


def submit_once(
    sessions: sessionmaker[Session],
    broker: dramatiq.Broker,
    catalogue: Mapping[str, WorkflowSpec],
    *,
    workflow: str,
    input: dict[str, Any],
    priority: int,
    task_id: str | None = None,
    parent_id: str | None = None,
    tenant: str = SYSTEM_TENANT,
    idempotency: Idempotency | None = None,
) -> Submission:
    """:func:`submit`, once per ``idempotency`` key and tenant (within the idempotency window).

    The key is claimed in the transaction that creates the task, so of concurrent duplicates
    exactly one creates and enqueues a task; the others wait for its commit and get its task.
    The same key with another body raises :class:`IdempotencyConflict`.
    """
    spec = catalogue.get(workflow)
    if spec is None:
        raise UnknownWorkflow(workflow)
    task_id = task_id or new_task_id()
    fields: dict[str, Any] = {
        "task_id": task_id,
        "workflow": spec.name,
        "actor": spec.actor_name,
        "queue": spec.queue,
        "input": input,
        "priority": priority,
        "parent_id": parent_id,
        "tenant": tenant,
    }
    message = task_message(queue=spec.queue, actor=spec.actor_name, task_id=task_id, priority=priority)
    created = task_lifecycle.create(sessions, **fields, idempotency=idempotency, message=message.asdict())
    if created.over_budget is not None:
        raise BudgetExceeded(created.over_budget)
    if created.earlier is not None:
        if created.earlier.body_hash != idempotency.body_hash:  # type: ignore[union-attr]
            raise IdempotencyConflict(
                "this Idempotency-Key was used with a different request body; use a new key for a new request"
            )
        with sessions() as session:
            earlier = session.get(Task, created.earlier.task_id)
        if earlier is None:  # deleted since (retention)
            raise UnknownTask(created.earlier.task_id)
        return Submission(earlier, replayed=True)
    assert created.task is not None  # neither refused nor a replay
    wake_relay(broker)
    return Submission(created.task)


def wake_relay(broker: dramatiq.Broker) -> None:
    """A message was committed to the outbox: this process's relay publishes it now."""
    relay = relay_of(broker)
    if relay is not None:
        relay.wake()


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
        message = task_message(queue=task.queue, actor=task.actor, task_id=task_id, priority=task.priority)
        schedule_message(session, queue=task.queue, message=message.asdict(), task_id=task_id)
    wake_relay(broker)
    return task, resumed_from
