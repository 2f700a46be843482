"""Tasks and their event log: the durable truth about every job, whichever process ran it.

This module holds the schema only. What may be done with a task lives next to it:

- :mod:`models.task_lifecycle`: the operations on a task's hot path (create, claim, progress,
  finish). Each takes the ``sessionmaker``, commits, and decides inside whether it runs as one
  statement (PostgreSQL) or in a transaction.
- :mod:`models.task_transitions`: changes made in the caller's transaction (they take a
  ``Session`` and never commit): creating a child, finishing, retrying, reopening, reclaiming.
- :mod:`models.task_queries`: reads.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, BigIntId, as_utc, utcnow

__all__ = ["Task", "TaskEvent", "TaskState", "TERMINAL_STATES", "RUNNABLE_STATES", "lease_expired"]


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
    #: Indexed: the overview's charts and retention look tasks up by when they ended.
    finished_at: Mapped[datetime | None] = mapped_column(index=True)
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


def lease_expired(task: Task) -> bool:
    expires = as_utc(task.lease_expires_at)
    return expires is not None and expires < utcnow()
