"""The SQL on every task's hot path (submit, claim, progress, finish), built once.

Private to :mod:`models.task_lifecycle` and :mod:`models.task_transitions`: nothing else runs these.

The statements are built on the tables rather than the mapped classes: SQLAlchemy then skips
building the statement, computing its cache key and the ORM's bulk-DML bookkeeping on each call
(most of a worker's CPU per task).

The ``*_in_one_statement`` builders are the same changes as one PostgreSQL statement each
(data-modifying CTEs), run on an autocommit connection: one round trip instead of BEGIN, two or
three statements and COMMIT. A single statement is atomic, so the task row and its event still
cannot diverge.
"""

from __future__ import annotations

import functools
from typing import Any, cast

from sqlalchemy import (
    Float,
    String,
    Table,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy import (
    cast as cast_,
)
from sqlalchemy.sql import Select
from sqlalchemy.sql.dml import Update

from .base import Base, JSONType
from .tasks import RUNNABLE_STATES, TERMINAL_STATES, Task, TaskEvent, TaskState

__all__ = [
    "TASKS",
    "EVENTS",
    "TASK_COLUMNS",
    "EVENT_COLUMNS",
    "INSERT_TASK",
    "INSERT_EVENT",
    "CLAIM",
    "PROGRESS",
    "STATE",
    "finish_update",
    "claim_in_one_statement",
    "progress_in_one_statement",
    "finish_in_one_statement",
]

TASKS = cast(Table, Task.__table__)
EVENTS = cast(Table, TaskEvent.__table__)
_tasks, _events = TASKS, EVENTS

INSERT_TASK = insert(_tasks)
INSERT_EVENT = insert(_events)

#: The columns a new task is written with (see ``task_transitions.task_values``).
TASK_COLUMNS = [
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
EVENT_COLUMNS = ["task_id", "kind", "state", "progress", "step", "data", "created_at"]


CLAIM = (
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

#: A progress report moves the task on: a higher percentage, or a new step at the same one. Anything
#: else (a retry or a coordinator's replay passing its earlier reports again) is not recorded, so
#: the progress a user sees never goes back.
_ADVANCES = or_(
    _tasks.c.progress < bindparam("p_progress"),
    and_(_tasks.c.progress == bindparam("p_progress"), _tasks.c.current_step.is_distinct_from(bindparam("p_step"))),
)
PROGRESS = (
    update(_tasks)
    .where(_tasks.c.id == bindparam("p_id"), _ADVANCES)
    .values(progress=bindparam("p_progress"), current_step=bindparam("p_step"), updated_at=bindparam("p_now"))
    .returning(_tasks.c.state)
)
STATE = select(_tasks.c.state).where(_tasks.c.id == bindparam("p_id"))


@functools.cache
def finish_update(*, success: bool, fenced: bool) -> Update:
    """The UPDATE that ends a task; ``fenced``: only while ``p_owner`` holds its lease."""
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


# -- PostgreSQL: the same changes in one statement each ---------------------------------------------


def _json_param(name: str) -> Any:
    return cast_(bindparam(name, type_=JSONType), JSONType)


@functools.cache
def claim_in_one_statement() -> Select[Any]:
    """:data:`CLAIM` and its event, for a tenant without a concurrency cap (no row otherwise)."""
    limits = Base.metadata.tables["tenants"]
    capped = (
        select(limits.c.name).where(limits.c.name == _tasks.c.tenant, limits.c.max_concurrency.is_not(None)).exists()
    )
    claimed = CLAIM.where(~capped).returning(_tasks.c.id).cte("claimed")
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
            EVENT_COLUMNS,
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


@functools.cache
def finish_in_one_statement(*, success: bool) -> Select[Any]:
    """The fenced :func:`finish_update` and its event."""
    finished = finish_update(success=success, fenced=True).returning(_tasks.c.id).cte("finished")
    event = (
        insert(_events)
        .from_select(
            EVENT_COLUMNS,
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


@functools.cache
def progress_in_one_statement() -> Select[Any]:
    """:data:`PROGRESS` and its event; returns the task's state whether or not the report moved it on."""
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
    recorded = insert(_events).from_select(EVENT_COLUMNS, event).add_cte(updated).cte("recorded")
    # The state whether or not the report moved the task on (the UPDATE never changes the state).
    return STATE.add_cte(recorded)
