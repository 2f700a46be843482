"""Worker processes as they last reported themselves: one row per process, written by its heartbeat.

Each worker process's maintenance loop upserts its row once per heartbeat (one statement), so the
dashboard can list the workers (host, process, queues, threads, tasks in flight, runs done) from the
database, the same behind every API replica. A process that stops cleanly says so; one that dies
simply stops beating, and its row ages until retention removes it.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Insert, Integer, String, Table, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from .base import Base, utcnow

__all__ = ["WorkerProcess", "record_heartbeat", "record_stopped", "list_workers", "purge_workers"]


class WorkerProcess(Base):
    __tablename__ = "worker_processes"

    #: The process's lease owner (``host:pid:random``), as in ``tasks.lease_owner``.
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[dict[str, Any]]  # {"names": [...]}: JSON, as every JSON column here
    threads: Mapped[int] = mapped_column(Integer)
    in_flight: Mapped[int] = mapped_column(Integer, default=0)
    #: Task runs this process ended (successes, failures, retries, suspensions).
    tasks_done: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime] = mapped_column(index=True)
    stopped_at: Mapped[datetime | None]


def record_heartbeat(
    session: Session,
    *,
    worker_id: str,
    host: str,
    pid: int,
    queues: list[str],
    threads: int,
    in_flight: int,
    tasks_done: int,
    started_at: datetime,
) -> None:
    """Insert or refresh the process's row (one upsert)."""
    params = {
        "p_id": worker_id,
        "p_host": host[:255],
        "p_pid": pid,
        "p_queues": {"names": sorted(queues)},
        "p_threads": threads,
        "p_in_flight": in_flight,
        "p_tasks_done": tasks_done,
        "p_started_at": started_at,
        "p_now": utcnow(),
    }
    session.execute(_heartbeat_upsert(session.get_bind().dialect.name), params)


_CHANGED = ("queues", "threads", "in_flight", "tasks_done")


@functools.cache
def _heartbeat_upsert(dialect: str) -> Insert:
    """Built once per dialect with bound parameters."""
    table = cast(Table, WorkerProcess.__table__)
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    changes = {name: bindparam(f"p_{name}", type_=table.c[name].type) for name in _CHANGED}
    changes["heartbeat_at"] = bindparam("p_now", type_=table.c.heartbeat_at.type)
    statement = insert(table).values(
        id=bindparam("p_id"),
        host=bindparam("p_host"),
        pid=bindparam("p_pid"),
        started_at=bindparam("p_started_at"),
        **changes,
    )
    return statement.on_conflict_do_update(index_elements=["id"], set_=changes)


def record_stopped(session: Session, worker_id: str) -> None:
    """The process is shutting down cleanly: nothing in flight any more."""
    now = utcnow()
    session.execute(
        update(WorkerProcess).where(WorkerProcess.id == worker_id).values(stopped_at=now, heartbeat_at=now, in_flight=0)
    )


def list_workers(session: Session, *, seen_since: datetime, limit: int = 500) -> list[WorkerProcess]:
    """Processes that reported after ``seen_since``, by host and process id."""
    query = (
        select(WorkerProcess)
        .where(WorkerProcess.heartbeat_at >= seen_since)
        .order_by(WorkerProcess.host, WorkerProcess.pid, WorkerProcess.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def purge_workers(session: Session, *, seen_before: datetime) -> int:
    """Forget processes silent since ``seen_before``; returns how many."""
    result = session.execute(delete(WorkerProcess).where(WorkerProcess.heartbeat_at < seen_before))
    return int(getattr(result, "rowcount", 0) or 0)
