"""What a worker process reports for the dashboard: its heartbeat row and the depths of the queues.

The maintenance loop (``actors.middleware.maintenance``) calls these. The heartbeat is one upsert
per interval; a queue-depth sample is taken by the first process to reach each time slot (the
others see the slot taken and do not ask the broker), so the history in the database is the same
whichever API replica draws it.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dramatiq
import pika.exceptions
from dramatiq.common import q_name

from actors.queues import queue_depths
from actors.runtime import Runtime
from models.base import utcnow
from models.database import one_statement_session
from models.queue_samples import record_samples, slot_sampled
from models.workers import record_heartbeat, record_stopped

__all__ = ["WorkerIdentity", "report_worker", "report_stopped", "sample_queue_depths"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerIdentity:
    """What the process says about itself in every heartbeat."""

    host: str
    pid: int
    queues: list[str]
    threads: int
    started_at: datetime

    @classmethod
    def of(cls, broker: dramatiq.Broker, worker: Any) -> WorkerIdentity:
        """From the Dramatiq worker that booted: the queues it consumes (all declared ones by default)."""
        queues = getattr(worker, "queues", None) or broker.get_declared_queues()
        return cls(
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=sorted({q_name(str(queue)) for queue in queues}),  # a queue, not its delay queue
            threads=int(getattr(worker, "worker_threads", 0) or 0),
            started_at=utcnow(),
        )


def report_worker(runtime: Runtime, identity: WorkerIdentity) -> None:
    """Upsert this process's row: alive now, with the tasks it runs and the runs it ended."""
    with one_statement_session(runtime.sessions) as session:
        record_heartbeat(
            session,
            worker_id=runtime.owner,
            host=identity.host,
            pid=identity.pid,
            queues=identity.queues,
            threads=identity.threads,
            in_flight=len(runtime.running),
            tasks_done=runtime.running.ended,
            started_at=identity.started_at,
        )


def report_stopped(runtime: Runtime) -> None:
    """This process stops cleanly: its row says so at once instead of ageing."""
    with one_statement_session(runtime.sessions) as session:
        record_stopped(session, runtime.owner)


def sample_queue_depths(runtime: Runtime, broker: dramatiq.Broker, *, interval: float) -> bool:
    """Sample every work queue for the current slot of ``interval`` seconds, unless a process did.

    Returns whether this process took the sample.
    """
    step = max(1, int(interval))
    slot = datetime.fromtimestamp(int(utcnow().timestamp()) // step * step, UTC)
    with one_statement_session(runtime.sessions) as session:
        if slot_sampled(session, slot):
            return False
    queues = sorted({spec.queue for spec in runtime.catalogue.values()})
    try:
        depths = queue_depths(broker, queues)
    except (pika.exceptions.AMQPError, OSError) as exc:
        logger.warning("queue depths not sampled: %s", exc.__class__.__name__)
        return False
    with one_statement_session(runtime.sessions) as session:
        record_samples(session, slot, depths)
    return True
