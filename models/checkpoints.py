"""Workflow checkpoints: one row per (workflow, stage), written the moment a stage ends."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String, Text, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from .base import Base, BigIntId, iso, utcnow

__all__ = ["WorkflowCheckpoint", "load_checkpoints", "save_checkpoint", "checkpoint_view"]

COMPLETED = "completed"
FAILED = "failed"


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


def load_checkpoints(session: Session, workflow_id: str) -> list[WorkflowCheckpoint]:
    query = (
        select(WorkflowCheckpoint)
        .where(WorkflowCheckpoint.workflow_id == workflow_id)
        .order_by(WorkflowCheckpoint.created_at, WorkflowCheckpoint.id)
    )
    return list(session.scalars(query))


def save_checkpoint(
    session: Session,
    *,
    workflow_id: str,
    stage: str,
    status: str,
    state: dict[str, Any],
    meta: dict[str, Any] | None = None,
    error: str | None = None,
    duration_ms: int | None = None,
) -> WorkflowCheckpoint:
    """Insert or overwrite the checkpoint of one stage; ``updated_at`` moves, ``created_at`` stays."""
    checkpoint = session.scalars(
        select(WorkflowCheckpoint)
        .where(WorkflowCheckpoint.workflow_id == workflow_id, WorkflowCheckpoint.stage == stage)
        .with_for_update()
    ).first()
    now = utcnow()
    if checkpoint is None:
        checkpoint = WorkflowCheckpoint(workflow_id=workflow_id, stage=stage, created_at=now)
        session.add(checkpoint)
    checkpoint.status = status
    checkpoint.state = state
    checkpoint.meta = meta or {}
    checkpoint.error = error
    checkpoint.duration_ms = duration_ms
    checkpoint.updated_at = now
    return checkpoint


def checkpoint_view(checkpoint: WorkflowCheckpoint) -> dict[str, Any]:
    body: dict[str, Any] = {
        "stage": checkpoint.stage,
        "state": checkpoint.status,
        "created_at": iso(checkpoint.created_at),
        "updated_at": iso(checkpoint.updated_at),
        "duration_ms": checkpoint.duration_ms,
    }
    if checkpoint.status == FAILED and checkpoint.error:
        body["error"] = checkpoint.error
        if checkpoint.meta.get("traceback"):
            body["traceback"] = checkpoint.meta["traceback"]
    if checkpoint.meta.get("failures"):
        body["failures"] = checkpoint.meta["failures"]
    return body
