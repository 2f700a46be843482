"""Tasks and their event log: the durable truth about every job, whichever process ran it.

Data-access functions take a ``Session`` and never commit: the caller owns the transaction.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, and_, case, false, func, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from .base import Base, BigIntId, as_utc, iso, utcnow

__all__ = [
    "Task",
    "TaskEvent",
    "TaskState",
    "Claim",
    "ClaimOutcome",
    "TERMINAL_STATES",
    "create_task",
    "get_task",
    "claim_task",
    "record_progress",
    "record_event",
    "finish_task",
    "transition",
    "Transition",
    "mark_retrying",
    "renew_leases",
    "lapsed_tasks",
    "task_events",
    "task_status",
    "reopen_task",
]


class TaskState(enum.StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELLED = "CANCELLED"


TERMINAL_STATES = frozenset({TaskState.SUCCESS, TaskState.FAILURE, TaskState.CANCELLED})
RUNNABLE_STATES = (TaskState.PENDING, TaskState.RETRY, TaskState.PROCESSING)


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workflow: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(128))
    queue: Mapped[str] = mapped_column(String(128))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), index=True)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    current_step: Mapped[str | None] = mapped_column(String(64))
    input: Mapped[dict[str, Any]]
    result: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    parent_id: Mapped[str | None] = mapped_column(String(36), index=True)
    #: Who owns the task (the API key's tenant); children inherit it, event tasks are the system's.
    tenant: Mapped[str] = mapped_column(String(64), default="system", server_default="system", index=True)
    #: Set when a child finished while this (coordinating) task was running; see actors.orchestration.
    wake_pending: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("ix_tasks_state_lease_expires_at", "state", "lease_expires_at"),)


class TaskEvent(Base):
    """One state or progress change, in the order it happened (ordered by ``id``)."""

    __tablename__ = "task_events"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    progress: Mapped[int] = mapped_column(Integer, default=0)
    step: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_task_events_task_id_id", "task_id", "id"),)


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
    now = utcnow()
    task = Task(
        id=task_id,
        workflow=workflow,
        actor=actor,
        queue=queue,
        priority=priority,
        state=TaskState.PENDING,
        progress=0,
        input=input,
        attempts=0,
        parent_id=parent_id,
        tenant=tenant,
        created_at=now,
        updated_at=now,
    )
    session.add(task)
    session.add(TaskEvent(task_id=task_id, kind="state", state=TaskState.PENDING, progress=0, created_at=now))
    return task


def get_task(session: Session, task_id: str) -> Task | None:
    return session.get(Task, task_id)


class ClaimOutcome(enum.Enum):
    CLAIMED = "claimed"
    MISSING = "missing"
    FINISHED = "finished"
    LEASED = "leased"
    EXHAUSTED = "exhausted"


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    attempts: int = 0
    state: str | None = None
    input: dict[str, Any] | None = None


def claim_task(
    session: Session,
    task_id: str,
    *,
    owner: str,
    lease_seconds: float,
    max_deliveries: int,
    admitted_at: float | None = None,
) -> Claim:
    """Take the task's lease for ``owner`` unless it is finished or another live worker holds it.

    One conditional UPDATE, so two workers that got the same message (a redelivery, a reclaimed
    lease) cannot both run it. Every start counts, crash redeliveries included.
    """
    now = utcnow()
    claimed = session.execute(
        update(Task)
        .where(
            Task.id == task_id,
            Task.state.in_(RUNNABLE_STATES),
            (Task.lease_expires_at.is_(None)) | (Task.lease_expires_at < now),
        )
        .values(
            state=TaskState.PROCESSING,
            # A suspended coordinator (PROCESSING, no lease) woken by a child is not a new delivery.
            attempts=Task.attempts
            + case((and_(Task.state == TaskState.PROCESSING, Task.lease_owner.is_(None)), 0), else_=1),
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            started_at=func.coalesce(Task.started_at, now),
            updated_at=now,
            wake_pending=False,
        )
        .returning(Task.attempts, Task.progress, Task.current_step, Task.input)
    ).first()
    if claimed is None:
        row = session.execute(select(Task.state).where(Task.id == task_id)).first()
        if row is None:
            return Claim(ClaimOutcome.MISSING)
        if row.state in TERMINAL_STATES:
            return Claim(ClaimOutcome.FINISHED, state=row.state)
        return Claim(ClaimOutcome.LEASED, state=row.state)
    attempts, progress, step, task_input = claimed
    if attempts > max_deliveries:
        return Claim(ClaimOutcome.EXHAUSTED, attempts=attempts)
    session.add(
        TaskEvent(
            task_id=task_id,
            kind="state",
            state=TaskState.PROCESSING,
            progress=progress,
            step=step,
            data={"attempt": attempts, "worker": owner}
            | ({"rate_limit_admitted_at": admitted_at} if admitted_at is not None else {}),
            created_at=now,
        )
    )
    return Claim(ClaimOutcome.CLAIMED, attempts=attempts, state=TaskState.PROCESSING, input=task_input)


def record_event(
    session: Session, task_id: str, *, kind: str, state: str, progress: int, step: str | None, data: Any
) -> None:
    session.add(TaskEvent(task_id=task_id, kind=kind, state=state, progress=progress, step=step, data=data))


def record_progress(
    session: Session, task_id: str, *, progress: int, step: str, data: dict[str, Any] | None = None
) -> str | None:
    """Store a progress update and its event; returns the task's state (to notice cancellation)."""
    now = utcnow()
    state = session.execute(
        update(Task)
        .where(Task.id == task_id)
        .values(progress=progress, current_step=step, updated_at=now)
        .returning(Task.state)
    ).scalar_one_or_none()
    if state is not None:
        session.add(
            TaskEvent(
                task_id=task_id,
                kind="progress",
                state=state,
                progress=progress,
                step=step,
                data=data,
                created_at=now,
            )
        )
    return state


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
    session.add(
        TaskEvent(
            task_id=task_id,
            kind=kind,
            state=event_state,
            progress=row.progress,
            step=row.current_step,
            data=data,
            created_at=now,
        )
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
    conditions: list[Any] = [Task.state.not_in(TERMINAL_STATES)]
    if owner is not None:
        conditions.append(Task.lease_owner == owner)
    values: dict[str, Any] = {"state": state, "error": error, "finished_at": utcnow()}
    values.update(lease_owner=None, lease_expires_at=None)
    if state == TaskState.SUCCESS:
        values.update(progress=100, current_step="complete", result=result)
    data: dict[str, Any] = {"result": result} if state == TaskState.SUCCESS else {"error": error}
    return transition(session, task_id, *conditions, values=values, event_state=state, data=data)


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


def renew_leases(session: Session, *, owner: str, lease_seconds: float) -> int:
    """Heartbeat: extend every lease this worker process holds."""
    return session.execute(
        update(Task)
        .where(Task.lease_owner == owner, Task.state == TaskState.PROCESSING)
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
    ).rowcount  # type: ignore[attr-defined]


def lapsed_tasks(session: Session, *, limit: int = 100) -> list[Task]:
    """Running tasks whose worker stopped renewing the lease (it crashed or hung), locked for us."""
    query = (
        select(Task)
        .where(Task.state == TaskState.PROCESSING, Task.lease_expires_at < utcnow())
        .order_by(Task.lease_expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(query))


def task_events(session: Session, task_id: str, *, after_id: int = 0, limit: int = 1000) -> list[TaskEvent]:
    query = (
        select(TaskEvent)
        .where(TaskEvent.task_id == task_id, TaskEvent.id > after_id)
        .order_by(TaskEvent.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def task_status(task: Task, *, children: list[Task] | None = None) -> dict[str, Any]:
    """The public JSON shape of a task, used by the API and the CLI."""
    body: dict[str, Any] = {
        "task_id": task.id,
        "workflow": task.workflow,
        "queue": task.queue,
        "state": task.state,
        "progress": task.progress,
        "current_step": task.current_step,
        "attempts": task.attempts,
        "created_at": iso(task.created_at),
        "started_at": iso(task.started_at),
        "finished_at": iso(task.finished_at),
        "updated_at": iso(task.updated_at),
    }
    if task.state == TaskState.SUCCESS:
        body["result"] = task.result
    elif task.error is not None:
        body["error"] = task.error
    if children:
        # A coordinator's progress moves with its children's.
        combined = sum(c.progress for c in children) // len(children)
        if task.state not in TERMINAL_STATES:
            body["progress"] = max(task.progress, min(99, combined))
    if children is not None:
        body["children"] = [
            {"task_id": c.id, "agent": c.workflow, "state": c.state, "progress": c.progress} for c in children
        ]
    return body


def lease_expired(task: Task) -> bool:
    expires = as_utc(task.lease_expires_at)
    return expires is not None and expires < utcnow()


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
