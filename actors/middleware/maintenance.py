"""A background thread in every worker process: heartbeats, cancellations, lapsed leases, outbox
messages left behind, and what the dashboard shows of workers and queues (``actors.worker_reports``).

The worker's outbox relay (``actors.outbox_relay``, started at worker boot) publishes what this
process commits and polls for the rest; maintenance publishes, as the fallback, outbox messages
pending longer than ``outbox_fallback_seconds`` with the relay's own ``SKIP LOCKED`` code.

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
from dramatiq.middleware import Middleware

from actors.messages import task_message
from actors.outbox_relay import Publisher, publish_pending, publisher_for, relay_of
from actors.runtime import Runtime
from actors.worker_reports import WorkerIdentity, report_stopped, report_worker, sample_queue_depths
from models.database import is_transient, one_statement_session
from models.scheduled import schedule_message
from models.task_queries import cancelled_among
from models.task_transitions import reclaim_lapsed, renew_leases
from models.tasks import TaskState

__all__ = ["Maintenance", "heartbeat", "publish_due_messages", "reclaim_lapsed_tasks"]

logger = logging.getLogger(__name__)

#: Seconds at most between two looks for cancelled running tasks: how soon a cancellation bites.
CANCEL_CHECK_INTERVAL = 0.5


def publish_due_messages(
    runtime: Runtime, broker: dramatiq.Broker, *, publisher: Publisher | None = None, limit: int = 500
) -> int:
    """The fallback: publish outbox messages left pending ``outbox_fallback_seconds`` (their process
    died, or its relay is stuck), in confirmed batches; their rows are deleted in the same transaction.

    ``publisher`` is the maintenance thread's own (a relay's connection belongs to the relay's thread).
    """
    if publisher is None:
        publisher = publisher_for(broker)
        try:
            return publish_due_messages(runtime, broker, publisher=publisher, limit=limit)
        finally:
            publisher.close()
    older_than = runtime.settings.outbox_fallback_seconds
    published = total = publish_pending(runtime.sessions, publisher, limit=limit, older_than=older_than)
    while published >= limit:
        published = publish_pending(runtime.sessions, publisher, limit=limit, older_than=older_than)
        total += published
    if total:
        logger.info("maintenance published %d outbox messages left pending over %s s", total, older_than)
    return total


def reclaim_lapsed_tasks(runtime: Runtime, broker: dramatiq.Broker, *, limit: int = 100) -> int:
    """Re-publish tasks whose worker stopped renewing its lease (crashed, killed, partitioned)."""
    with runtime.sessions.begin() as session:  # queued in the outbox in the transaction that takes them back
        reclaimed = reclaim_lapsed(session, limit=limit)
        for lapsed in reclaimed:
            task = lapsed.task
            logger.warning("task %s lost its worker %s; re-publishing it", task.id, lapsed.lost_owner)
            message = task_message(queue=task.queue, actor=task.actor, task_id=task.id, priority=task.priority)
            message.options["retries"] = lapsed.retries
            schedule_message(session, queue=task.queue, message=message.asdict(), task_id=task.id)
    relay = relay_of(broker)
    if reclaimed and relay is not None:
        relay.wake()
    return len(reclaimed)


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


class Maintenance(Middleware):
    """Runs the maintenance loop for the lifetime of a worker."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._publisher: Publisher | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        identity = WorkerIdentity.of(broker, worker)
        relay = relay_of(broker)
        if relay is not None:
            relay.start()
        self._publisher = publisher_for(broker)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, args=(broker, identity), name="interlock-maintenance", daemon=True
        )
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._guarded(report_stopped, self.runtime)
        if self._publisher is not None:
            self._publisher.close()

    def _loop(self, broker: dramatiq.Broker, identity: WorkerIdentity) -> None:
        settings = self.runtime.settings
        heartbeat_every = max(0.2, settings.lease_seconds / 3)
        tick = min(settings.maintenance_interval, CANCEL_CHECK_INTERVAL)
        next_heartbeat = next_pass = next_sample = 0.0
        while not self._stop.wait(tick):
            now = time.monotonic()
            renew = now >= next_heartbeat
            self._guarded(heartbeat, self.runtime, renew=renew)
            if renew:
                next_heartbeat = now + heartbeat_every
                self._guarded(report_worker, self.runtime, identity)  # the dashboard's workers
            if now >= next_sample:
                next_sample = now + settings.queue_sample_interval
                self._guarded(sample_queue_depths, self.runtime, broker, interval=settings.queue_sample_interval)
            if now >= next_pass:
                next_pass = now + settings.maintenance_interval
                self._guarded(publish_due_messages, self.runtime, broker, publisher=self._publisher)
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
