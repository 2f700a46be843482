"""Reads of tasks and their events, for the API, the dashboard, metrics and workers.

Each function takes a ``Session`` and only reads; the caller opens and closes it.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .task_statements import TASKS
from .tasks import Task, TaskEvent, TaskState

__all__ = [
    "get_task",
    "task_state",
    "task_tenant",
    "child_tasks",
    "recent_tasks",
    "task_events",
    "task_counts",
    "oldest_pending",
    "cancelled_among",
]


def get_task(session: Session, task_id: str) -> Task | None:
    return session.get(Task, task_id)


def task_state(session: Session, task_id: str) -> str | None:
    """The task's state, or ``None`` if there is no such task."""
    return session.execute(select(Task.state).where(Task.id == task_id)).scalar_one_or_none()


def task_tenant(session: Session, task_id: str) -> str | None:
    """The tenant that owns the task, or ``None`` if there is no such task."""
    return session.execute(select(Task.tenant).where(Task.id == task_id)).scalar_one_or_none()


def child_tasks(session: Session, parent_id: str) -> list[Task]:
    """The tasks ``parent_id`` started, oldest first."""
    return list(session.scalars(select(Task).where(Task.parent_id == parent_id).order_by(Task.created_at)))


def recent_tasks(
    session: Session, *, limit: int, tenants: Collection[str] | None = None, children: bool = False
) -> list[Task]:
    """The newest tasks of ``tenants`` (``None``: every tenant); children only with ``children``."""
    query = select(Task).order_by(Task.created_at.desc()).limit(limit)
    if tenants is not None:
        query = query.where(Task.tenant.in_(tenants))
    if not children:
        query = query.where(Task.parent_id.is_(None))
    return list(session.scalars(query))


def task_events(session: Session, task_id: str, *, after_id: int = 0, limit: int = 1000) -> list[TaskEvent]:
    """The task's events after ``after_id``, in the order they happened."""
    query = (
        select(TaskEvent)
        .where(TaskEvent.task_id == task_id, TaskEvent.id > after_id)
        .order_by(TaskEvent.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def task_counts(session: Session) -> list[tuple[str, str, int]]:
    """How many tasks there are per (workflow, state)."""
    rows = session.execute(select(Task.workflow, Task.state, func.count()).group_by(Task.workflow, Task.state))
    return [(workflow, state, count) for workflow, state, count in rows]


def oldest_pending(session: Session) -> list[tuple[str, datetime]]:
    """Per queue, when its longest-waiting PENDING task was queued (created, or put back by a replay or resume)."""
    rows = session.execute(
        select(Task.queue, func.min(Task.updated_at)).where(Task.state == TaskState.PENDING).group_by(Task.queue)
    )
    return [(queue, queued) for queue, queued in rows if queued is not None]


def cancelled_among(session: Session, task_ids: Collection[str]) -> list[str]:
    """Which of ``task_ids`` were cancelled (a worker polls this for the tasks it runs)."""
    if not task_ids:
        return []
    query = select(TASKS.c.id).where(TASKS.c.id.in_(list(task_ids)), TASKS.c.state == TaskState.CANCELLED)
    return list(session.scalars(query))
