"""Tasks and their event log: the durable truth about every job, whichever process ran it.

Data-access functions take a ``Session`` and never commit: the caller owns the transaction.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    and_,
    bindparam,
    case,
    false,
    func,
    insert,
    literal_column,
    null,
    or_,
    select,
    update,
)
from sqlalchemy import (
    cast as cast_,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.sql import Select
from sqlalchemy.sql.dml import Insert, Update

from .base import Base, BigIntId, JSONType, as_utc, iso, utcnow

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
    "create_task_at_once",
    "finish_task_at_once",
    "claim_task_at_once",
    "record_progress_at_once",
    "record_progress",
    "record_event",
    "finish_task",
    "transition",
    "Transition",
    "mark_retrying",
    "renew_leases",
    "cancelled_among",
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
    #: Who owns the task (the API key's tenant); children and event tasks inherit it (webhooks, scheduler: system).
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
    """Insert a PENDING task and its first event; returns the row as written (not tracked by the session).

    Two plain INSERTs rather than the ORM's unit of work: submission is the API's hot path.
    """
    values = _task_values(
        task_id=task_id,
        workflow=workflow,
        actor=actor,
        queue=queue,
        input=input,
        priority=priority,
        parent_id=parent_id,
        tenant=tenant,
    )
    session.execute(_INSERT_TASK, values)
    _insert_event(
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


def _task_values(
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


def _insert_event(
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
        _INSERT_EVENT,
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


# The statements on every task's path (submit, claim, progress, finish) are built once, on the
# tables rather than the mapped classes: SQLAlchemy then skips building the statement, computing
# its cache key and the ORM's bulk-DML bookkeeping on each call (most of a worker's CPU per task).
_tasks = cast(Table, Task.__table__)
_INSERT_TASK = insert(_tasks)
_events = cast(Table, TaskEvent.__table__)
_INSERT_EVENT = insert(_events)


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
    parent_id: str | None = None


_CLAIM = (
    update(_tasks)
    .where(
        _tasks.c.id == bindparam("p_id"),
        _tasks.c.state.in_(RUNNABLE_STATES),
        _tasks.c.lease_expires_at.is_(None) | (_tasks.c.lease_expires_at < bindparam("p_now")),
    )
    .values(
        state=TaskState.PROCESSING,
        # A suspended coordinator (PROCESSING, no lease) woken by a child is not a new delivery.
        attempts=_tasks.c.attempts
        + case((and_(_tasks.c.state == TaskState.PROCESSING, _tasks.c.lease_owner.is_(None)), 0), else_=1),
        lease_owner=bindparam("p_owner"),
        lease_expires_at=bindparam("p_expires"),
        started_at=func.coalesce(_tasks.c.started_at, bindparam("p_now")),
        updated_at=bindparam("p_now"),
        wake_pending=False,
    )
    .returning(_tasks.c.attempts, _tasks.c.progress, _tasks.c.current_step, _tasks.c.input, _tasks.c.parent_id)
)


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
        _CLAIM,
        {"p_id": task_id, "p_now": now, "p_owner": owner, "p_expires": now + timedelta(seconds=lease_seconds)},
    ).first()
    if claimed is None:
        row = session.execute(select(Task.state).where(Task.id == task_id)).first()
        if row is None:
            return Claim(ClaimOutcome.MISSING)
        if row.state in TERMINAL_STATES:
            return Claim(ClaimOutcome.FINISHED, state=row.state)
        return Claim(ClaimOutcome.LEASED, state=row.state)
    attempts, progress, step, task_input, parent_id = claimed
    if attempts > max_deliveries:
        return Claim(ClaimOutcome.EXHAUSTED, attempts=attempts)
    _insert_event(
        session,
        task_id,
        kind="state",
        state=TaskState.PROCESSING,
        progress=progress,
        step=step,
        data={"attempt": attempts, "worker": owner}
        | ({"rate_limit_admitted_at": admitted_at} if admitted_at is not None else {}),
        at=now,
    )
    return Claim(
        ClaimOutcome.CLAIMED, attempts=attempts, state=TaskState.PROCESSING, input=task_input, parent_id=parent_id
    )


def record_event(
    session: Session, task_id: str, *, kind: str, state: str, progress: int, step: str | None, data: Any
) -> None:
    _insert_event(session, task_id, kind=kind, state=state, progress=progress, step=step, data=data)


#: A progress report moves the task on: a higher percentage, or a new step at the same one. Anything
#: else (a retry or a coordinator's replay passing its earlier reports again) is not recorded, so
#: the progress a user sees never goes back.
_ADVANCES = or_(
    _tasks.c.progress < bindparam("p_progress"),
    and_(_tasks.c.progress == bindparam("p_progress"), _tasks.c.current_step.is_distinct_from(bindparam("p_step"))),
)
_PROGRESS = (
    update(_tasks)
    .where(_tasks.c.id == bindparam("p_id"), _ADVANCES)
    .values(progress=bindparam("p_progress"), current_step=bindparam("p_step"), updated_at=bindparam("p_now"))
    .returning(_tasks.c.state)
)
_STATE = select(_tasks.c.state).where(_tasks.c.id == bindparam("p_id"))


def record_progress(
    session: Session, task_id: str, *, progress: int, step: str, data: dict[str, Any] | None = None
) -> str | None:
    """Store a progress update and its event; returns the task's state (to notice cancellation).

    A report below the task's progress (or repeating it) changes nothing: progress never decreases.
    """
    now = utcnow()
    params = {"p_id": task_id, "p_progress": progress, "p_step": step, "p_now": now}
    state = session.execute(_PROGRESS, params).scalar_one_or_none()
    if state is None:
        return session.execute(_STATE, {"p_id": task_id}).scalar_one_or_none()
    _insert_event(session, task_id, kind="progress", state=state, progress=progress, step=step, data=data, at=now)
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
    _insert_event(
        session, task_id, kind=kind, state=event_state, progress=row.progress, step=row.current_step, data=data, at=now
    )
    return Transition(row.progress, row.current_step, row.parent_id)


@functools.cache
def _finish_statement(*, success: bool, fenced: bool) -> Update:
    conditions = [_tasks.c.id == bindparam("p_id"), _tasks.c.state.not_in(TERMINAL_STATES)]
    if fenced:
        conditions.append(_tasks.c.lease_owner == bindparam("p_owner"))
    values: dict[str, Any] = {
        "state": bindparam("p_state"),
        "error": bindparam("p_error"),
        "finished_at": bindparam("p_now"),
        "updated_at": bindparam("p_now"),
        "lease_owner": None,
        "lease_expires_at": None,
    }
    if success:
        values.update(progress=100, current_step="complete", result=bindparam("p_result", type_=_tasks.c.result.type))
    return (
        update(_tasks)
        .where(*conditions)
        .values(values)
        .returning(_tasks.c.progress, _tasks.c.current_step, _tasks.c.parent_id)
    )


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
    row = session.execute(_finish_statement(success=success, fenced=owner is not None), params).first()
    if row is None:
        return None
    data: dict[str, Any] = {"result": result} if success else {"error": error}
    _insert_event(
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


def renew_leases(session: Session, task_ids: Collection[str], *, owner: str, lease_seconds: float) -> dict[str, str]:
    """Heartbeat: extend the leases ``owner`` holds on ``task_ids``; returns those tasks' states.

    ``task_ids`` are the tasks the worker process runs at this moment, never "every lease it
    holds": a lease left behind by a run whose thread moved on (a write that failed while the
    database restarted) must lapse, so that another worker picks the task up. A task cancelled
    while it runs comes back as CANCELLED, which is how its worker learns of it.
    """
    if not task_ids:
        return {}
    rows = session.execute(
        update(_tasks)
        .where(_tasks.c.id.in_(list(task_ids)), _tasks.c.lease_owner == owner)
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        .returning(_tasks.c.id, _tasks.c.state)
    ).all()
    return {task_id: state for task_id, state in rows}


def cancelled_among(session: Session, task_ids: Collection[str]) -> list[str]:
    """Which of ``task_ids`` were cancelled (a worker polls this for the tasks it runs)."""
    if not task_ids:
        return []
    query = select(_tasks.c.id).where(_tasks.c.id.in_(list(task_ids)), _tasks.c.state == TaskState.CANCELLED)
    return list(session.scalars(query))


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
    # A coordinator's own progress already moves with its children's (``ctx.gather(progress_to=...)``):
    # an average taken here would fall each time a child is added.
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


# -- PostgreSQL: the same changes in one statement each ---------------------------------------------
#
# On PostgreSQL the hot paths run as one statement (data-modifying CTEs) on an autocommit
# connection: one round trip instead of BEGIN, two or three statements and COMMIT. A single
# statement is atomic, so the task row and its event still cannot diverge. Each returns ``None``
# when it cannot decide alone; the caller then takes the transactional path above.

_EVENT_COLUMNS = ["task_id", "kind", "state", "progress", "step", "data", "created_at"]


def _json_param(name: str) -> Any:
    return cast_(bindparam(name, type_=JSONType), JSONType)


@functools.cache
def _claim_in_one_statement() -> Select[Any]:
    limits = cast(Table, Base.metadata.tables["tenants"])
    capped = (
        select(limits.c.name).where(limits.c.name == _tasks.c.tenant, limits.c.max_concurrency.is_not(None)).exists()
    )
    claimed = _CLAIM.where(~capped).returning(_tasks.c.id).cte("claimed")
    data = func.jsonb_strip_nulls(
        func.jsonb_build_object(
            literal_column("'attempt'"),
            claimed.c.attempts,
            literal_column("'worker'"),
            cast_(bindparam("p_owner"), String),
            literal_column("'rate_limit_admitted_at'"),
            cast_(bindparam("p_admitted"), Float),
        )
    )
    event = (
        insert(_events)
        .from_select(
            _EVENT_COLUMNS,
            select(
                claimed.c.id,
                literal_column("'state'"),
                literal_column(f"'{TaskState.PROCESSING}'"),
                claimed.c.progress,
                claimed.c.current_step,
                data,
                cast_(bindparam("p_now"), _tasks.c.updated_at.type),
            ).where(claimed.c.attempts <= bindparam("p_max")),
        )
        .cte("event")
    )
    return select(
        claimed.c.attempts, claimed.c.progress, claimed.c.current_step, claimed.c.input, claimed.c.parent_id
    ).add_cte(event)


def claim_task_at_once(
    connection: Connection,
    task_id: str,
    *,
    owner: str,
    lease_seconds: float,
    max_deliveries: int,
    admitted_at: float | None = None,
) -> Claim | None:
    """PostgreSQL, autocommit: :func:`claim_task` for a tenant without a concurrency cap, or ``None``."""
    now = utcnow()
    params = {
        "p_id": task_id,
        "p_now": now,
        "p_owner": owner,
        "p_expires": now + timedelta(seconds=lease_seconds),
        "p_max": max_deliveries,
        "p_admitted": admitted_at,
    }
    row = connection.execute(_claim_in_one_statement(), params).first()
    if row is None:
        return None
    attempts, _, _, task_input, parent_id = row
    if attempts > max_deliveries:
        return Claim(ClaimOutcome.EXHAUSTED, attempts=attempts)
    return Claim(
        ClaimOutcome.CLAIMED, attempts=attempts, state=TaskState.PROCESSING, input=task_input, parent_id=parent_id
    )


@functools.cache
def _finish_in_one_statement(*, success: bool) -> Select[Any]:
    finished = _finish_statement(success=success, fenced=True).returning(_tasks.c.id).cte("finished")
    event = (
        insert(_events)
        .from_select(
            _EVENT_COLUMNS,
            select(
                finished.c.id,
                literal_column("'state'"),
                cast_(bindparam("p_state"), String),
                finished.c.progress,
                finished.c.current_step,
                _json_param("p_data"),
                cast_(bindparam("p_now"), _tasks.c.updated_at.type),
            ),
        )
        .cte("event")
    )
    return select(finished.c.progress, finished.c.current_step, finished.c.parent_id).add_cte(event)


def finish_task_at_once(
    connection: Connection,
    task_id: str,
    *,
    state: TaskState,
    owner: str,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> Transition | None:
    """PostgreSQL, autocommit: :func:`finish_task` by the lease holder, in one statement."""
    success = state == TaskState.SUCCESS
    params: dict[str, Any] = {
        "p_id": task_id,
        "p_owner": owner,
        "p_state": state,
        "p_error": error,
        "p_now": utcnow(),
        "p_data": {"result": result} if success else {"error": error},
    }
    if success:
        params["p_result"] = result
    row = connection.execute(_finish_in_one_statement(success=success), params).first()
    return None if row is None else Transition(row.progress, row.current_step, row.parent_id)


_TASK_COLUMNS = [
    "id",
    "workflow",
    "actor",
    "queue",
    "priority",
    "state",
    "progress",
    "input",
    "attempts",
    "parent_id",
    "tenant",
    "wake_pending",
    "created_at",
    "updated_at",
]


@functools.cache
def _create_in_one_statement() -> Insert:
    limits = cast(Table, Base.metadata.tables["tenants"])
    budgeted = (
        select(limits.c.name)
        .where(limits.c.name == bindparam("p_tenant"), limits.c.monthly_tokens.is_not(None))
        .exists()
    )
    row = {name: bindparam(f"p_{name}", type_=_tasks.c[name].type) for name in _TASK_COLUMNS}
    created = (
        insert(_tasks)
        .from_select(_TASK_COLUMNS, select(*row.values()).where(~budgeted))
        .returning(_tasks.c.id, _tasks.c.state, _tasks.c.created_at)
        .cte("created")
    )
    event = select(
        created.c.id,
        literal_column("'state'"),
        created.c.state,
        literal_column("0"),
        null(),
        null(),
        created.c.created_at,
    )
    return insert(_events).from_select(_EVENT_COLUMNS, event).add_cte(created).returning(_events.c.task_id)


def create_task_at_once(connection: Connection, **fields: Any) -> Task | None:
    """PostgreSQL, autocommit: :func:`create_task` (same keywords) committed in one statement.

    ``None`` (nothing written) when the tenant has a token budget: that needs a transaction.
    """
    values = _task_values(**fields)
    params = {f"p_{name}": values[name] for name in _TASK_COLUMNS}
    created = connection.execute(_create_in_one_statement(), params).first()
    return None if created is None else Task(**values)


@functools.cache
def _progress_in_one_statement() -> Select[Any]:
    updated = (
        update(_tasks)
        .where(_tasks.c.id == bindparam("p_id"), _ADVANCES)
        .values(progress=bindparam("p_progress"), current_step=bindparam("p_step"), updated_at=bindparam("p_now"))
        .returning(_tasks.c.id, _tasks.c.state, _tasks.c.progress, _tasks.c.current_step, _tasks.c.updated_at)
        .cte("updated")
    )
    event = select(
        updated.c.id,
        literal_column("'progress'"),
        updated.c.state,
        updated.c.progress,
        updated.c.current_step,
        _json_param("p_data"),
        updated.c.updated_at,
    )
    recorded = insert(_events).from_select(_EVENT_COLUMNS, event).add_cte(updated).cte("recorded")
    # The state whether or not the report moved the task on (the UPDATE never changes the state).
    return _STATE.add_cte(recorded)


def record_progress_at_once(
    connection: Connection, task_id: str, *, progress: int, step: str, data: dict[str, Any] | None = None
) -> str | None:
    """PostgreSQL, autocommit: :func:`record_progress` in one statement."""
    params = {"p_id": task_id, "p_progress": progress, "p_step": step, "p_now": utcnow(), "p_data": data}
    return connection.execute(_progress_in_one_statement(), params).scalar_one_or_none()
