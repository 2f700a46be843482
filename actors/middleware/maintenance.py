"""A background thread in every worker process: heartbeats, cancellations, due messages, lapsed leases.

Each pass is a few short transactions. Rows are taken with ``FOR UPDATE SKIP LOCKED``, so any
number of worker processes on any number of hosts share the work without doing it twice.

The heartbeat renews the leases of the tasks this process runs at that moment (``Runtime.running``)
and nothing else. Between heartbeats it asks which of them were cancelled, at least every
``CANCEL_CHECK_INTERVAL`` seconds, and wakes those tasks' threads out of the call they wait on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq import Message
from dramatiq.middleware import Middleware
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from actors.messages import task_message
from actors.runtime import Runtime
from models.database import is_transient, one_statement_session
from models.scheduled import due_messages
from models.tasks import TaskEvent, TaskState, cancelled_among, lapsed_tasks, renew_leases, utcnow

__all__ = ["Maintenance", "heartbeat", "publish_due_messages", "reclaim_lapsed_tasks"]

logger = logging.getLogger(__name__)

#: Seconds at most between two looks for cancelled running tasks: how soon a cancellation bites.
CANCEL_CHECK_INTERVAL = 0.5


def publish_due_messages(runtime: Runtime, broker: dramatiq.Broker, *, limit: int = 500) -> int:
    """Publish parked messages whose time has come; delete them in the same transaction."""
    with runtime.sessions.begin() as session:
        rows = due_messages(session, limit=limit)
        for row in rows:
            data = dict(row.message)
            options = dict(data.get("options") or {})
            options.pop("eta", None)
            data["options"] = options
            broker.enqueue(Message(**data))
            session.delete(row)
    return len(rows)


def reclaim_lapsed_tasks(runtime: Runtime, broker: dramatiq.Broker, *, limit: int = 100) -> int:
    """Re-publish tasks whose worker stopped renewing its lease (crashed, killed, partitioned)."""
    with runtime.sessions.begin() as session:
        tasks = lapsed_tasks(session, limit=limit)
        for task in tasks:
            logger.warning("task %s lost its worker %s; re-publishing it", task.id, task.lease_owner)
            task.state = TaskState.RETRY
            task.lease_owner = None
            task.lease_expires_at = None
            task.updated_at = utcnow()
            session.add(
                TaskEvent(
                    task_id=task.id,
                    kind="state",
                    state=TaskState.RETRY,
                    progress=task.progress,
                    step=task.current_step,
                    data={"reason": "worker lost; lease lapsed"},
                )
            )
            message = task_message(queue=task.queue, actor=task.actor, task_id=task.id, priority=task.priority)
            # Carry the retry count over, so a crash neither refills the retry budget nor counts
            # the retries already made as crash redeliveries.
            retries = session.scalar(
                select(func.count())
                .select_from(TaskEvent)
                .where(TaskEvent.task_id == task.id, TaskEvent.state == TaskState.RETRY, TaskEvent.kind == "state")
            )
            message.options["retries"] = max(0, int(retries or 0) - _lease_lapses(session, task.id))
            broker.enqueue(message)
    return len(tasks)


def heartbeat(runtime: Runtime, *, renew: bool) -> list[str]:
    """Signal the cancellation of this process's running tasks that were cancelled; with ``renew``,
    also extend their leases (one statement either way). Returns the ids signalled.
    """
    task_ids = runtime.running.ids()
    if not task_ids:
        return []
    with one_statement_session(runtime.sessions) as session:
        if renew:
            states = renew_leases(session, task_ids, owner=runtime.owner, lease_seconds=runtime.settings.lease_seconds)
            cancelled = [task_id for task_id, state in states.items() if state == TaskState.CANCELLED]
        else:
            cancelled = cancelled_among(session, task_ids)
    signalled = runtime.running.cancel(cancelled)
    for task_id in signalled:
        logger.info("task %s was cancelled while it ran; interrupting it", task_id)
    return signalled


def _lease_lapses(session: Session, task_id: str) -> int:
    """RETRY events written by this reaper (not by Retries) for ``task_id``."""
    rows = session.scalars(
        select(TaskEvent.data).where(TaskEvent.task_id == task_id, TaskEvent.state == TaskState.RETRY)
    ).all()
    return sum(1 for data in rows if isinstance(data, dict) and "reason" in data)


class Maintenance(Middleware):
    """Runs the maintenance loop for the lifetime of a worker."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(broker,), name="interlock-maintenance", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self, broker: dramatiq.Broker) -> None:
        settings = self.runtime.settings
        heartbeat_every = max(0.2, settings.lease_seconds / 3)
        tick = min(settings.maintenance_interval, CANCEL_CHECK_INTERVAL)
        next_heartbeat = next_pass = 0.0
        while not self._stop.wait(tick):
            now = time.monotonic()
            renew = now >= next_heartbeat
            self._guarded(heartbeat, self.runtime, renew=renew)
            if renew:
                next_heartbeat = now + heartbeat_every
            if now >= next_pass:
                next_pass = now + settings.maintenance_interval
                self._guarded(publish_due_messages, self.runtime, broker)
                self._guarded(reclaim_lapsed_tasks, self.runtime, broker)

    def _guarded(self, work: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """A framework boundary: log a failed step, keep the loop alive for the next pass."""
        try:
            work(*args, **kwargs)
        except Exception as exc:
            if is_transient(exc):  # the database restarts or is away: one line, not a traceback a tick
                logger.warning("maintenance: %s failed (%s); trying again", work.__name__, exc.__class__.__name__)
            else:
                logger.exception("maintenance: %s failed; trying again", work.__name__)
