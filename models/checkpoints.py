"""Workflow checkpoints: one row per (workflow, stage), written the moment a stage ends.

One more row, stage :data:`BODY`, says the workflow's body returned, with its value: written
before the task's end is, so a run that redelivery starts after a crash in between finishes the
task with that value instead of running the body again (``actors.steps``). It is not a step:
:func:`load_checkpoints` leaves it out unless asked.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Insert, Integer, Row, Select, String, Table, Text, UniqueConstraint, bindparam, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, Session, mapped_column

from .base import Base, BigIntId, utcnow
from .group_commit import BatchKind

__all__ = [
    "WorkflowCheckpoint",
    "load_checkpoints",
    "load_outcomes",
    "save_checkpoint",
    "checkpoint_write",
    "CHECKPOINT_WRITES",
    "BODY",
    "COMPLETED",
    "FAILED",
]

COMPLETED = "completed"
FAILED = "failed"
#: The stage of the row that records the body's return (a name no ``ctx.step`` is given: it has a colon).
BODY = "interlock:body"


class WorkflowCheckpoint(Base):
    __tablename__ = "workflow_checkpoints"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    workflow_id: Mapped[str] = mapped_column(String(36), index=True)
    stage: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    state: Mapped[dict[str, Any]]
    meta: Mapped[dict[str, Any]] = mapped_column("metadata")
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (UniqueConstraint("workflow_id", "stage"),)


def load_checkpoints(session: Session, workflow_id: str, *, with_body: bool = False) -> list[WorkflowCheckpoint]:
    """The workflow's step checkpoints, oldest first; with ``with_body``, also its :data:`BODY` row."""
    query = select(WorkflowCheckpoint).where(WorkflowCheckpoint.workflow_id == workflow_id)
    if not with_body:
        query = query.where(WorkflowCheckpoint.stage != BODY)
    return list(session.scalars(query.order_by(WorkflowCheckpoint.created_at, WorkflowCheckpoint.id)))


def load_outcomes(
    session: Session | Connection, workflow_id: str
) -> list[Row[tuple[str, str, dict[str, Any], dict[str, Any]]]]:
    """``(stage, status, state, meta)`` of each of the workflow's checkpoints, :data:`BODY` included.

    What a running task reads before its first step: plain rows of one prepared statement, not
    ORM objects, since building those cost a tenth of an agent task's CPU.
    """
    return list(session.execute(_OUTCOMES, {"p_workflow_id": workflow_id}))


def save_checkpoint(session: Session, checkpoint: dict[str, Any]) -> None:
    """Insert or overwrite the checkpoint of one stage (made by :func:`checkpoint_write`) in the
    session's transaction; ``updated_at`` moves, ``created_at`` stays.

    One upsert statement, so on PostgreSQL it may run on an autocommit connection.
    """
    session.execute(_upsert_statement(session.get_bind().dialect.name), _upsert_params(checkpoint))


def checkpoint_write(
    *,
    workflow_id: str,
    stage: str,
    status: str,
    state: dict[str, Any],
    meta: dict[str, Any] | None = None,
    error: str | None = None,
    duration_ms: int | None = None,
) -> dict[str, Any]:
    """One checkpoint, for :func:`save_checkpoint` (in the caller's transaction) or a
    :data:`CHECKPOINT_WRITES` write (through the process's group commit)."""
    return {
        "workflow_id": workflow_id,
        "stage": stage,
        "status": status,
        "state": state,
        "metadata": meta or {},
        "error": error,
        "duration_ms": duration_ms,
        "now": utcnow(),
    }


CHECKPOINT_UPSERT_MANY = text(
    """
WITH input AS (
    SELECT * FROM jsonb_to_recordset(CAST(:batch AS jsonb)) AS i(
        workflow_id text, stage text, status text, state jsonb, metadata jsonb, error text, duration_ms int,
        now timestamptz)
)
INSERT INTO workflow_checkpoints AS c
    (workflow_id, stage, status, state, metadata, error, duration_ms, created_at, updated_at)
SELECT workflow_id, stage, status, state, metadata, error, duration_ms, now, now FROM input
ON CONFLICT (workflow_id, stage) DO UPDATE SET
    status = excluded.status, state = excluded.state, metadata = excluded.metadata, error = excluded.error,
    duration_ms = excluded.duration_ms, updated_at = excluded.updated_at
"""
)


def _write_many(connection: Connection, batch: Sequence[dict[str, Any]]) -> list[Any]:
    rows = [{**p, "now": p["now"].isoformat()} for p in batch]
    connection.execute(CHECKPOINT_UPSERT_MANY, {"batch": json.dumps(rows)})
    return [None] * len(batch)


def _write_one(connection: Connection, params: dict[str, Any]) -> Any:
    connection.execute(_upsert_statement(connection.dialect.name), _upsert_params(params))


def _upsert_params(checkpoint: dict[str, Any]) -> dict[str, Any]:
    return {f"p_{name}": value for name, value in checkpoint.items()}


#: Checkpoints written the moment a step (or a body) ends, see :func:`checkpoint_write`: those of
#: all worker threads that end together are one statement (:func:`models.task_batches.write`).
CHECKPOINT_WRITES = BatchKind(
    "checkpoint", many=_write_many, one=_write_one, key=lambda p: f"{p['workflow_id']}\x00{p['stage']}"
)


_CHANGED = ("status", "state", "metadata", "error", "duration_ms")  # "metadata": the column behind ``meta``


def _outcomes_statement() -> Select[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    table = cast(Table, WorkflowCheckpoint.__table__)
    columns = (table.c.stage, table.c.status, table.c.state, table.c.metadata)
    return (
        select(*columns)
        .where(table.c.workflow_id == bindparam("p_workflow_id"))
        .order_by(table.c.created_at, table.c.id)
    )


_OUTCOMES = _outcomes_statement()


@functools.cache
def _upsert_statement(dialect: str) -> Insert:
    """The checkpoint upsert, built once per dialect with bound parameters (no per-call compile)."""
    table = cast(Table, WorkflowCheckpoint.__table__)
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    changes = {name: bindparam(f"p_{name}", type_=table.c[name].type) for name in _CHANGED}
    changes["updated_at"] = bindparam("p_now", type_=table.c.updated_at.type)
    statement = insert(table).values(
        workflow_id=bindparam("p_workflow_id"), stage=bindparam("p_stage"), created_at=bindparam("p_now"), **changes
    )
    return statement.on_conflict_do_update(index_elements=["workflow_id", "stage"], set_=changes)
