"""Messages waiting in PostgreSQL to be published: the outbox, and delayed messages until they are due.

A submission inserts its task row and its message here in one commit (one statement on
PostgreSQL), so a task is never committed without its message nor published before it exists;
a relay (``actors.outbox_relay``) publishes due rows in batches and deletes them.

Delayed messages (retry backoff) wait here too: Dramatiq keeps a delayed message unacknowledged
in the worker until its ETA, and RabbitMQ's ``consumer_timeout`` then closes the channel and
redelivers it. Parking delays here and publishing them when due keeps every delivery short.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, bindparam, delete, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from .base import Base, BigIntId, utcnow

__all__ = [
    "ScheduledMessage",
    "schedule_message",
    "take_due_messages",
    "pending_summary",
]


class ScheduledMessage(Base):
    __tablename__ = "scheduled_messages"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    task_id: Mapped[str | None] = mapped_column(String(36), index=True)
    queue: Mapped[str] = mapped_column(String(128))
    message: Mapped[dict[str, Any]]
    due_at: Mapped[datetime] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def schedule_message(
    session: Session, *, queue: str, message: dict[str, Any], due_at: datetime | None = None, task_id: str | None
) -> None:
    """Park ``message`` until ``due_at`` (now: the outbox, published as soon as a relay sees it)."""
    now = utcnow()
    session.add(ScheduledMessage(queue=queue, message=message, due_at=due_at or now, task_id=task_id, created_at=now))


def _due_messages_statement() -> Any:
    table = Base.metadata.tables[ScheduledMessage.__tablename__]
    due = (
        select(table.c.id)
        .where(table.c.due_at <= bindparam("cutoff"))
        .order_by(table.c.due_at)
        .limit(bindparam("limit"))
        .with_for_update(skip_locked=True)
    )
    return delete(table).where(table.c.id.in_(due.scalar_subquery())).returning(table.c.message, table.c.due_at)


#: Built once: a relay runs it on every wake-up, and a statement built anew per call spent more CPU on
#: SQLAlchemy's cache key than on its rows (a tenth of an API process's CPU under W3).
_TAKE_DUE = _due_messages_statement()


def take_due_messages(session: Session, *, limit: int = 500, older_than: float = 0.0) -> list[tuple[Any, datetime]]:
    """Delete and return (message, due time) of up to ``limit`` due messages (due ``older_than`` seconds
    ago or earlier), in the caller's transaction: one statement.

    The rows are taken ``FOR UPDATE SKIP LOCKED``, so concurrent publishers in other processes and on
    other hosts take others. The caller publishes them before it commits; if it rolls back instead
    (the broker refused them), they are due again.
    """
    cutoff = utcnow() - timedelta(seconds=older_than)
    return [(row.message, row.due_at) for row in session.execute(_TAKE_DUE, {"cutoff": cutoff, "limit": limit})]


def pending_summary(session: Session) -> tuple[int, datetime | None]:
    """How many messages are due now, and the due time of the oldest of them."""
    count, oldest = session.execute(
        select(func.count(), func.min(ScheduledMessage.due_at)).where(ScheduledMessage.due_at <= utcnow())
    ).one()
    return int(count), oldest
