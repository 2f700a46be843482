"""Queue depths over time: a sample of every work queue every few seconds, for the dashboard's chart.

RabbitMQ only knows how deep a queue is now. Worker processes read the depths periodically and
write them here, keyed by (queue, time slot): the first process to sample a slot writes it, the
others find it taken (``ON CONFLICT DO NOTHING``), so however many workers run there is one sample
per queue and slot, and every API replica draws the same history.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Insert, Integer, String, Table, bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from .base import Base

__all__ = ["QueueSample", "slot_sampled", "record_samples", "purge_samples"]


class QueueSample(Base):
    __tablename__ = "queue_samples"

    queue: Mapped[str] = mapped_column(String(128), primary_key=True)
    #: The start of the time slot the sample stands for.
    at: Mapped[datetime] = mapped_column(primary_key=True, index=True)
    ready: Mapped[int] = mapped_column(Integer)
    delayed: Mapped[int] = mapped_column(Integer)
    dead: Mapped[int] = mapped_column(Integer)


def slot_sampled(session: Session, at: datetime) -> bool:
    """Whether some process already sampled the slot starting at ``at`` (saves a look at the broker)."""
    return session.execute(select(QueueSample.queue).where(QueueSample.at == at).limit(1)).first() is not None


def record_samples(session: Session, at: datetime, depths: Iterable[Mapping[str, Any]]) -> None:
    """Write one sample per queue for the slot ``at``; a slot another process wrote is left as it is."""
    rows = [
        {
            "p_queue": str(depth["queue"])[:128],
            "p_at": at,
            "p_ready": int(depth.get("ready", 0)),
            "p_delayed": int(depth.get("delayed", 0)),
            "p_dead": int(depth.get("dead_letters", 0)),
        }
        for depth in depths
    ]
    if rows:
        session.execute(_insert(session.get_bind().dialect.name), rows)


@functools.cache
def _insert(dialect: str) -> Insert:
    table = cast(Table, QueueSample.__table__)
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table).values(
        queue=bindparam("p_queue"),
        at=bindparam("p_at"),
        ready=bindparam("p_ready"),
        delayed=bindparam("p_delayed"),
        dead=bindparam("p_dead"),
    )
    return statement.on_conflict_do_nothing(index_elements=["queue", "at"])


def purge_samples(session: Session, *, before: datetime) -> int:
    """Delete samples older than ``before``; returns how many."""
    result = session.execute(delete(QueueSample).where(QueueSample.at < before))
    return int(getattr(result, "rowcount", 0) or 0)
