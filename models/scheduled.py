"""Messages waiting for their time in PostgreSQL, not in RabbitMQ.

Dramatiq keeps a delayed message unacknowledged in the worker until its ETA; RabbitMQ's
``consumer_timeout`` then closes the channel and redelivers it. Parking delays here and
publishing them when due keeps every delivery short, whatever the backoff.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from .base import Base, BigIntId, utcnow

__all__ = ["ScheduledMessage", "schedule_message", "due_messages"]


class ScheduledMessage(Base):
    __tablename__ = "scheduled_messages"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    task_id: Mapped[str | None] = mapped_column(String(36), index=True)
    queue: Mapped[str] = mapped_column(String(128))
    message: Mapped[dict[str, Any]]
    due_at: Mapped[datetime] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def schedule_message(
    session: Session, *, queue: str, message: dict[str, Any], due_at: datetime, task_id: str | None
) -> None:
    session.add(ScheduledMessage(queue=queue, message=message, due_at=due_at, task_id=task_id))


def due_messages(session: Session, *, limit: int = 500) -> list[ScheduledMessage]:
    """Due messages, locked so that concurrent publishers on other hosts skip them."""
    query = (
        select(ScheduledMessage)
        .where(ScheduledMessage.due_at <= utcnow())
        .order_by(ScheduledMessage.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(query))
