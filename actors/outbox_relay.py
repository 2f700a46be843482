"""The outbox relay: publishes the messages committed in ``scheduled_messages`` to the broker.

A submission commits its task row and its message together and wakes this process's relay; the
relay takes due rows ``FOR UPDATE SKIP LOCKED`` in batches, publishes a batch, waits for
RabbitMQ's publisher confirms once for the whole batch, and deletes the batch's rows in the same
transaction. A relay that dies between the confirms and the commit leaves its rows to be published
again: a task's message delivered twice is harmless (the claim lets one delivery run it), a
message never published is not possible while any relay or worker maintenance runs.

Every process that submits runs one (a daemon thread, started on the first wake or explicitly),
and it also polls every ``poll_interval`` seconds for rows others left (a process that died after
its commit) and for delayed messages that came due. What publishes a batch is in ``actors.publishers``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import dramatiq
from dramatiq import Message
from dramatiq.errors import BrokerConnectionError
from prometheus_client import Histogram
from sqlalchemy.orm import Session, sessionmaker

from actors.publishers import (
    EnqueuePublisher,
    Publisher,
    PublishFailed,
    RabbitmqPublisher,
    RelayCounters,
    publisher_for,
)
from models.base import as_utc, utcnow
from models.database import is_transient
from models.scheduled import take_due_messages

__all__ = [
    "OutboxRelay",
    "Publisher",
    "EnqueuePublisher",
    "RabbitmqPublisher",
    "PublishFailed",
    "RelayCounters",
    "publish_pending",
    "publisher_for",
    "relay_of",
]

logger = logging.getLogger(__name__)

#: Buckets of ``interlock_outbox_publish_delay_seconds``.
DELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

#: The longest a relay waits between two tries while the broker is down.
MAX_BACKOFF_SECONDS = 5.0


def relay_of(broker: dramatiq.Broker) -> OutboxRelay | None:
    """The outbox relay of an Interlock broker (``actors.broker.build_broker`` gives each one)."""
    relay = getattr(broker, "outbox", None)
    return relay if isinstance(relay, OutboxRelay) else None


def _message_of(data: dict[str, Any]) -> Message[Any]:
    options = dict(data.get("options") or {})
    options.pop("eta", None)  # due now: straight to the queue, not to Dramatiq's delay queue
    return Message(**{**data, "options": options})


def publish_pending(
    sessions: sessionmaker[Session],
    publisher: Publisher,
    *,
    limit: int = 500,
    older_than: float = 0.0,
    delays: Histogram | None = None,
) -> int:
    """Publish one batch of due messages (due ``older_than`` seconds ago or earlier), confirmed, in the
    transaction that locked and deleted their rows. Returns how many were published."""
    with sessions.begin() as session:  # the rows are deleted only if the publish is confirmed
        rows = take_due_messages(session, limit=limit, older_than=older_than)
        if rows:
            publisher.publish([_message_of(message) for message, _ in rows])
    if not rows:
        publisher.keepalive()  # called at every poll: an idle connection stays alive
        return 0
    due = [as_utc(at) for _, at in rows]
    if delays is not None:
        now = utcnow()
        for at in due:
            delays.observe(max(0.0, (now - at).total_seconds()) if at is not None else 0.0)
    return len(rows)


class OutboxRelay:
    """This process's relay thread: woken by local submissions, polling for everything else due."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        publisher: Publisher,
        *,
        poll_interval: float = 0.5,
        batch_size: int = 500,
    ) -> None:
        self.sessions = sessions
        self.publisher = publisher
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        #: The last publish failed (the broker is down); ``None`` before the first try.
        self.broker_up: bool | None = None
        #: From a message's commit (or due time) to its confirmed publish; the API registers it in its
        #: ``/metrics`` registry.
        self.publish_delay = Histogram(
            "interlock_outbox_publish_delay_seconds",
            "Seconds from a message's commit (or due time, for a delayed one) to its confirmed publish.",
            buckets=DELAY_BUCKETS,
            registry=None,
        )

    @property
    def counters(self) -> RelayCounters:
        return self.publisher.counters

    def start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._loop, name="interlock-outbox-relay", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """A message was committed: publish it now (starting the thread on first use)."""
        self._wake.set()
        if self._thread is None:
            self.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._stop.set()
            self._wake.set()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=timeout)
        self.publisher.close()

    def relay_once(self) -> int:
        """One batch, in the calling thread (the relay's own, or a test's with the thread stopped)."""
        return publish_pending(self.sessions, self.publisher, limit=self.batch_size, delays=self.publish_delay)

    def _loop(self) -> None:
        backoff = self.poll_interval
        while not self._stop.is_set():
            if self.broker_up is False:  # a commit's wake-up cannot help a broker that is down
                self._stop.wait(backoff)
            else:
                self._wake.wait(backoff)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                while self.relay_once() >= self.batch_size:
                    pass
                self.broker_up, backoff = True, self.poll_interval
            except (PublishFailed, BrokerConnectionError) as exc:
                if self.broker_up is not False:
                    logger.warning("outbox relay: the broker is unreachable (%s); messages wait in the outbox", exc)
                self.broker_up, backoff = False, min(MAX_BACKOFF_SECONDS, backoff * 2)
            except Exception as exc:  # a framework boundary: the thread must outlive a failed pass
                if is_transient(exc):
                    logger.warning("outbox relay: the database is unreachable (%s)", exc.__class__.__name__)
                else:
                    logger.exception("outbox relay: a pass failed; trying again")
                backoff = min(MAX_BACKOFF_SECONDS, backoff * 2)
