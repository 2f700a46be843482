"""Durable fan-out and fan-in: a coordinating workflow spawns children and sleeps until they end.

A coordinator is an ordinary workflow that calls ``ctx.call`` / ``ctx.gather``. Children get ids
derived from the parent's id and a key, so spawning again (after a crash, on a replay) finds the
same child instead of creating another. Child rows and their first message are written in one
transaction (the message is parked in ``scheduled_messages`` and published by the maintenance
loop), so a crash cannot leave a child that never runs.

While children run, the coordinator is *suspended*: its message is acknowledged and its lease
released. When a child ends, the same transaction that records its end sets the parent's
``wake_pending`` flag and parks a wake-up message for it. The coordinator then replays from the
top; finished children answer from the database at once. Suspending succeeds only if no wake-up
arrived during the run (``wake_pending`` still false), otherwise the coordinator replays again,
so a child finishing at any instant is never missed and the fan-in step runs exactly once.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from actors.catalogue import WorkflowSpec
from actors.errors import PermanentError
from actors.messages import task_message
from actors.runtime import Runtime
from models.base import utcnow
from models.scheduled import schedule_message
from models.security import SYSTEM_TENANT
from models.task_transitions import create_task
from models.tasks import TERMINAL_STATES, Task, TaskState

__all__ = [
    "SUSPENDED",
    "check_child",
    "child_id",
    "spawn",
    "wake_parent",
    "try_suspend",
    "is_suspended",
    "finished",
    "succeeded",
]

SUSPENDED_KEY = "__interlock_suspended__"
#: What a suspended coordinator's run hands the middleware instead of a result.
SUSPENDED: dict[str, Any] = {SUSPENDED_KEY: True}


def is_suspended(result: Any) -> bool:
    return isinstance(result, dict) and result.get(SUSPENDED_KEY) is True


def child_id(parent_id: str, key: str) -> str:
    return str(uuid.uuid5(uuid.UUID(parent_id), key))


def _park(session: Session, task: Task) -> None:
    message = task_message(queue=task.queue, actor=task.actor, task_id=task.id, priority=task.priority)
    schedule_message(session, queue=task.queue, message=message.asdict(), due_at=utcnow(), task_id=task.id)


def check_child(catalogue: Mapping[str, WorkflowSpec], parent: Task | None, workflow: str) -> WorkflowSpec:
    """The spec of ``workflow`` if ``parent`` may start it as a child, else a :class:`PermanentError`.

    A child obeys the rules of a direct submission: a tenant's task starts submittable workflows
    and the ones its own workflow declares (``children=``), never operator jobs or event handlers.
    Only the system's tasks (the scheduler's, webhook events') may start any workflow.
    """
    spec = catalogue.get(workflow)
    if spec is None:
        raise PermanentError(f"unknown workflow {workflow!r} for a child task")
    if spec.submittable:
        return spec
    parent_spec = catalogue.get(parent.workflow) if parent is not None else None
    if parent is not None and (parent.tenant == SYSTEM_TENANT or (parent_spec and workflow in parent_spec.children)):
        return spec
    raise PermanentError(
        f"a {parent.workflow if parent else 'task'!r} task may not start {workflow!r} as a child: it is not "
        "submittable, and only the system's tasks or a workflow that declares it may start it"
    )


def spawn(runtime: Runtime, parent_id: str, workflow: str, input: dict[str, Any], *, key: str, priority: int) -> Task:
    """The child ``key`` of task ``parent_id``, created (and its message parked) if it does not exist yet."""
    identifier = child_id(parent_id, key)
    with runtime.sessions.begin() as session:
        child = session.get(Task, identifier)
        if child is None:
            parent = session.get(Task, parent_id)
            spec = check_child(runtime.catalogue, parent, workflow)
            child = create_task(
                session,
                task_id=identifier,
                workflow=spec.name,
                actor=spec.actor_name,
                queue=spec.queue,
                input=input,
                priority=priority,
                parent_id=parent_id,
                tenant=parent.tenant if parent is not None else SYSTEM_TENANT,  # children are the parent's
            )
            session.flush()
            _park(session, child)
    return child


def wake_parent(session: Session, parent_id: str | None) -> None:
    """In the transaction that ends a child: flag its parent and park a wake-up for it."""
    if parent_id is None:
        return
    parent = session.execute(
        update(Task)
        .where(Task.id == parent_id, Task.state.not_in(TERMINAL_STATES))
        .values(wake_pending=True)
        .returning(Task)
    ).scalar_one_or_none()
    if parent is not None:
        _park(session, parent)


def try_suspend(session: Session, task_id: str, *, owner: str) -> bool:
    """Release the lease unless a child ended meanwhile (then the caller replays at once)."""
    released = session.execute(
        update(Task)
        .where(Task.id == task_id, Task.lease_owner == owner, Task.wake_pending.is_(False))
        .values(lease_owner=None, lease_expires_at=None, updated_at=utcnow())
    ).rowcount  # type: ignore[attr-defined]
    if released:
        return True
    session.execute(update(Task).where(Task.id == task_id).values(wake_pending=False))
    return False


def finished(child: Task) -> bool:
    return child.state in TERMINAL_STATES


def succeeded(child: Task) -> bool:
    return child.state == TaskState.SUCCESS
