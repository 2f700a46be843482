"""Changes of a task made in the caller's transaction.

Every function here takes a ``Session`` and never commits: the caller owns the transaction, so a
change can be committed together with other work (a child's row with its parked message, a retry
with its parked message, a reopened task with the resume that checked its checkpoints). Each
change of a task's state writes its event in the same transaction, so the row and its event log
cannot diverge.

The hot-path operations that commit by themselves (and may run as one statement) are in
:mod:`models.task_lifecycle`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from .base import utcnow
from .task_statements import INSERT_EVENT, INSERT_TASK, TASKS, finish_update
from .tasks import Task, TaskEvent, TaskState

__all__ = [
    "Transition",
    "Reclaimed",
    "create_task",
    "lock_in_order",
    "record_event",
    "transition",
    "finish_task",
    "mark_retrying",
    "reopen_task",
    "renew_leases",
    "reclaim_lapsed",
]


def lock_in_order(session: Session, task_ids: Iterable[str | None]) -> list[str]:
    """Lock the rows of ``task_ids`` in ascending id order, in one statement, before any is changed.

    Every transaction that changes several tasks locks them here first (a child's end with its
    parent, a cancellation with the task's family, a poisoned child with its parent), and the
    one-statement writes lock in the same order (``models.task_batches``, :func:`renew_leases`,
    ``models.leases``): with one global order no deadlock can happen. ``FOR NO KEY UPDATE`` is
    the lock an ``UPDATE`` takes anyway. SQLite locks the whole database on a write: nothing to do.
    """
    ids = sorted({task_id for task_id in task_ids if task_id is not None})
    if len(ids) > 1 and session.get_bind().dialect.name == "postgresql":
        session.execute(
            select(TASKS.c.id).where(TASKS.c.id.in_(ids)).order_by(TASKS.c.id).with_for_update(key_share=True)
        )
    return ids


def create_task(
    session: Session,
    *,
    task_id: str,
    workflow: str,
    actor: str,
    queue: str,
    input: dict[str, Any],
    priority: int = 0,
    parent_id: str | None = None,
    tenant: str = "system",
) -> Task:
    """Insert a PENDING task and its first event; returns the row as written (not tracked by the session).

    Two plain INSERTs rather than the ORM's unit of work: submission is the API's hot path.
    """
    values = task_values(
        task_id=task_id,
        workflow=workflow,
        actor=actor,
        queue=queue,
        input=input,
        priority=priority,
        parent_id=parent_id,
        tenant=tenant,
    )
    session.execute(INSERT_TASK, values)
    insert_event(
        session,
        task_id,
        kind="state",
        state=TaskState.PENDING,
        progress=0,
        step=None,
        data=None,
        at=values["created_at"],
    )
    return Task(**values)


def task_values(
    *,
    task_id: str,
    workflow: str,
    actor: str,
    queue: str,
    input: dict[str, Any],
    priority: int = 0,
    parent_id: str | None = None,
    tenant: str = "system",
) -> dict[str, Any]:
    """The columns of a new PENDING task (``task_statements.TASK_COLUMNS``)."""
    now = utcnow()
    return {
        "id": task_id,
        "workflow": workflow,
        "actor": actor,
        "queue": queue,
        "priority": priority,
        "state": TaskState.PENDING,
        "progress": 0,
        "input": input,
        "attempts": 0,
        "parent_id": parent_id,
        "tenant": tenant,
        "wake_pending": False,
        "created_at": now,
        "updated_at": now,
    }


def insert_event(
    session: Session,
    task_id: str,
    *,
    kind: str,
    state: str,
    progress: int,
    step: str | None,
    data: Any,
    at: datetime | None = None,
) -> None:
    session.execute(
        INSERT_EVENT,
        {
            "task_id": task_id,
            "kind": kind,
            "state": state,
            "progress": progress,
            "step": step,
            "data": data,
            "created_at": at or utcnow(),
        },
    )


def record_event(
    session: Session, task_id: str, *, kind: str, state: str, progress: int, step: str | None, data: Any
) -> None:
    insert_event(session, task_id, kind=kind, state=state, progress=progress, step=step, data=data)


@dataclass(frozen=True)
class Transition:
    """What a state change left behind: where the task stood, and its parent to notify."""

    progress: int
    step: str | None
    parent_id: str | None


def transition(
    session: Session,
    task_id: str,
    *conditions: Any,
    values: dict[str, Any],
    event_state: str,
    data: dict[str, Any] | None,
    kind: str = "state",
) -> Transition | None:
    """One conditional UPDATE of a task and the event that records it, or ``None`` if it did not apply.

    Every change of a task's state goes through here, so the row and its event log cannot diverge.
    """
    now = utcnow()
    row = session.execute(
        update(Task)
        .where(Task.id == task_id, *conditions)
        .values(updated_at=now, **values)
        .returning(Task.progress, Task.current_step, Task.parent_id)
    ).first()
    if row is None:
        return None
    insert_event(
        session, task_id, kind=kind, state=event_state, progress=row.progress, step=row.current_step, data=data, at=now
    )
    return Transition(row.progress, row.current_step, row.parent_id)


def finish_task(
    session: Session,
    task_id: str,
    *,
    state: TaskState,
    owner: str | None,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> Transition | None:
    """Record the end of a task. With ``owner`` set, only the lease holder may finish it (fencing)."""
    success = state == TaskState.SUCCESS
    now = utcnow()
    params = {"p_id": task_id, "p_owner": owner, "p_state": state, "p_error": error, "p_now": now, "p_result": result}
    if not success:
        del params["p_result"]
    if owner is None:
        del params["p_owner"]
    row = session.execute(finish_update(success=success, fenced=owner is not None), params).first()
    if row is None:
        return None
    data: dict[str, Any] = {"result": result} if success else {"error": error}
    insert_event(
        session, task_id, kind="state", state=state, progress=row.progress, step=row.current_step, data=data, at=now
    )
    return Transition(row.progress, row.current_step, row.parent_id)


def mark_retrying(session: Session, task_id: str, *, owner: str, error: str, delay_ms: int) -> bool:
    """Release the lease and record why the task will run again after ``delay_ms``."""
    done = transition(
        session,
        task_id,
        Task.lease_owner == owner,
        Task.state == TaskState.PROCESSING,
        values={"state": TaskState.RETRY, "error": error, "lease_owner": None, "lease_expires_at": None},
        event_state=TaskState.RETRY,
        data={"error": error, "retry_in_ms": delay_ms},
    )
    return done is not None


def reopen_task(session: Session, task_id: str, *, reason: str, data: dict[str, Any]) -> str | None:
    """Put a failed or cancelled task back in the queue state, keeping its id and history.

    Returns the previous state, or ``None`` when the task is not in a state that can be reopened.
    """
    previous = session.execute(select(Task.state).where(Task.id == task_id).with_for_update()).scalar_one_or_none()
    if previous not in (TaskState.FAILURE, TaskState.CANCELLED):
        return None
    transition(
        session,
        task_id,
        values={
            "state": TaskState.PENDING,
            "attempts": 0,
            "error": None,
            "finished_at": None,
            "lease_owner": None,
            "lease_expires_at": None,
        },
        event_state=TaskState.PENDING,
        data={"reason": reason, **data},
    )
    return str(previous)


def renew_leases(session: Session, task_ids: Collection[str], *, owner: str, lease_seconds: float) -> dict[str, str]:
    """Heartbeat: extend the leases ``owner`` holds on ``task_ids``; returns those tasks' states.

    ``task_ids`` are the tasks the worker process runs at this moment, never "every lease it
    holds": a lease left behind by a run whose thread moved on (a write that failed while the
    database restarted) must lapse, so that another worker picks the task up. A task cancelled
    while it runs comes back as CANCELLED, which is how its worker learns of it.
    """
    if not task_ids:
        return {}
    owned: tuple[ColumnElement[bool], ...] = (TASKS.c.id.in_(list(task_ids)), TASKS.c.lease_owner == owner)
    if session.get_bind().dialect.name == "postgresql":
        # Rows locked in task-id order, as the group commit's batches lock them: the two never deadlock.
        locked = select(TASKS.c.id).where(*owned).order_by(TASKS.c.id).with_for_update(key_share=True).cte("locked")
        owned = (TASKS.c.id == locked.c.id, TASKS.c.lease_owner == owner)
    rows = session.execute(
        update(TASKS)
        .where(*owned)
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        .returning(TASKS.c.id, TASKS.c.state)
    ).all()
    return {task_id: state for task_id, state in rows}


@dataclass(frozen=True)
class Reclaimed:
    """A task taken back from a worker that stopped renewing its lease, to be published again."""

    task: Task
    #: The worker that held the lease.
    lost_owner: str | None
    #: Retries the retry middleware made before (the lease lapses not counted): the message's ``retries``.
    retries: int


def reclaim_lapsed(session: Session, *, limit: int = 100) -> list[Reclaimed]:
    """Put running tasks whose worker stopped renewing the lease (crashed, hung) back to RETRY.

    The rows are locked (``SKIP LOCKED``: concurrent reapers share the work); the caller publishes
    each task's message in the same transaction.
    """
    reclaimed = []
    for task in _lapsed_tasks(session, limit=limit):
        owner = task.lease_owner
        task.state = TaskState.RETRY
        task.lease_owner = None
        task.lease_expires_at = None
        task.updated_at = utcnow()
        session.add(
            TaskEvent(
                task_id=task.id,
                kind="state",
                state=TaskState.RETRY,
                progress=task.progress,
                step=task.current_step,
                data={"reason": "worker lost; lease lapsed"},
            )
        )
        # Carry the retry count over, so a crash neither refills the retry budget nor counts
        # the retries already made as crash redeliveries.
        retries = session.scalar(
            select(func.count())
            .select_from(TaskEvent)
            .where(TaskEvent.task_id == task.id, TaskEvent.state == TaskState.RETRY, TaskEvent.kind == "state")
        )
        reclaimed.append(Reclaimed(task, owner, max(0, int(retries or 0) - _lease_lapses(session, task.id))))
    return reclaimed


def _lapsed_tasks(session: Session, *, limit: int) -> list[Task]:
    """Running tasks whose worker stopped renewing the lease (it crashed or hung), locked for us."""
    query = (
        select(Task)
        .where(Task.state == TaskState.PROCESSING, Task.lease_expires_at < utcnow())
        .order_by(Task.lease_expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(query))


def _lease_lapses(session: Session, task_id: str) -> int:
    """RETRY events written by this reaper (not by Retries) for ``task_id``."""
    rows = session.scalars(
        select(TaskEvent.data).where(TaskEvent.task_id == task_id, TaskEvent.state == TaskState.RETRY)
    ).all()
    return sum(1 for data in rows if isinstance(data, dict) and "reason" in data)
