"""Reads of tasks and their events, for the API, the dashboard, metrics and workers.

Each function takes a ``Session`` and only reads; the caller opens and closes it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, literal, or_, select
from sqlalchemy.orm import Session, load_only

from .task_statements import TASKS
from .tasks import Task, TaskEvent, TaskState

__all__ = [
    "get_task",
    "task_state",
    "task_tenant",
    "child_tasks",
    "recent_tasks",
    "TaskFilter",
    "list_tasks",
    "TreeNode",
    "task_tree",
    "tenants_in_use",
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


@dataclass(frozen=True)
class TaskFilter:
    """What the dashboard's task list shows: ``None`` (or empty) is no condition."""

    #: The tenants the caller may see (``None``: all of them).
    tenants: Collection[str] | None = None
    states: Collection[str] = ()
    workflow: str | None = None
    #: One tenant chosen among those visible (an operator's filter).
    tenant: str | None = None
    #: Text in the task's query, or the start of its id.
    text: str | None = None
    #: Child tasks too, not only those submitted.
    children: bool = False


#: The columns a list row needs: never the result, the error or the whole input.
LIST_COLUMNS = (
    Task.id,
    Task.workflow,
    Task.queue,
    Task.state,
    Task.progress,
    Task.current_step,
    Task.attempts,
    Task.parent_id,
    Task.tenant,
    Task.created_at,
    Task.started_at,
    Task.finished_at,
    Task.updated_at,
)


def list_tasks(
    session: Session, where: TaskFilter, *, before: tuple[datetime, str] | None = None, limit: int = 50
) -> list[tuple[Task, str | None]]:
    """A page of tasks, newest first, with the start of each one's query.

    Keyset paging: ``before`` is the (``created_at``, ``id``) of the last row of the previous page,
    so page 200 costs what page 1 does (an index walk on ``created_at``), however many tasks there are.
    """
    query_text = func.substr(Task.input["query"].as_string(), 1, 200)
    query = (
        select(Task, query_text)
        .options(load_only(*LIST_COLUMNS))
        .order_by(Task.created_at.desc(), Task.id.desc())
        .limit(limit)
    )
    if where.tenants is not None:
        query = query.where(Task.tenant.in_(list(where.tenants)))
    if where.tenant is not None:
        query = query.where(Task.tenant == where.tenant)
    if where.states:
        query = query.where(Task.state.in_(list(where.states)))
    if where.workflow:
        query = query.where(Task.workflow == where.workflow)
    if not where.children:
        query = query.where(Task.parent_id.is_(None))
    if where.text:
        pattern = "%" + where.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(
            or_(
                Task.input["query"].as_string().ilike(pattern, escape="\\"),
                Task.id.startswith(where.text, autoescape=True),
            )
        )
    if before is not None:
        created, task_id = before
        # ``created_at <= c`` is what the index on created_at can seek to; the rest breaks ties.
        query = query.where(and_(Task.created_at <= created, or_(Task.created_at < created, Task.id < task_id)))
    return [(task, text) for task, text in session.execute(query)]


def tenants_in_use(session: Session, *, limit: int = 1000) -> list[str]:
    """The tenants that have tasks (an operator's filter of the task list)."""
    return list(session.scalars(select(Task.tenant).distinct().order_by(Task.tenant).limit(limit)))


@dataclass(frozen=True)
class TreeNode:
    """A task below another one, as the task's page draws its tree."""

    task_id: str
    parent_id: str | None
    workflow: str
    state: str
    progress: int
    current_step: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def task_tree(
    session: Session,
    root_id: str,
    *,
    tenants: Collection[str] | None = None,
    depth: int = 10,
    limit: int = 1000,
) -> list[TreeNode]:
    """Every task below ``root_id`` (children, their children, ...) of ``tenants`` (``None``: any),
    oldest first, in one query."""
    tree = select(Task.id, literal(1).label("depth")).where(Task.parent_id == root_id).cte("tree", recursive=True)
    below = select(Task.id, (tree.c.depth + 1).label("depth")).where(Task.parent_id == tree.c.id, tree.c.depth < depth)
    tree = tree.union_all(below)
    query = (
        select(
            Task.id,
            Task.parent_id,
            Task.workflow,
            Task.state,
            Task.progress,
            Task.current_step,
            Task.created_at,
            Task.started_at,
            Task.finished_at,
        )
        .join(tree, Task.id == tree.c.id)
        .order_by(Task.created_at, Task.id)
        .limit(limit)
    )
    if tenants is not None:
        query = query.where(Task.tenant.in_(list(tenants)))
    return [TreeNode(*row) for row in session.execute(query)]


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
