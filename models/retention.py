"""Retention of finished work: old finished tasks go with their event log, calls and checkpoints.

Data-access functions take a ``Session`` and never commit; each call deletes one bounded batch so
that the caller can keep transactions short.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from .checkpoints import WorkflowCheckpoint
from .task_calls import TaskCall
from .tasks import TERMINAL_STATES, Task, TaskEvent

__all__ = ["purge_finished_tasks"]


def purge_finished_tasks(session: Session, *, finished_before: datetime, limit: int = 1000) -> int:
    """Delete up to ``limit`` tasks that finished before ``finished_before``; returns how many."""
    ids = list(
        session.scalars(
            select(Task.id)
            .where(Task.state.in_(TERMINAL_STATES), Task.finished_at < finished_before)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if not ids:
        return 0
    session.execute(delete(TaskEvent).where(TaskEvent.task_id.in_(ids)))
    session.execute(delete(TaskCall).where(TaskCall.task_id.in_(ids)))
    session.execute(delete(WorkflowCheckpoint).where(WorkflowCheckpoint.workflow_id.in_(ids)))
    session.execute(delete(Task).where(Task.id.in_(ids)))
    return len(ids)
