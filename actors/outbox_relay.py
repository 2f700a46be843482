"""The outbox relay: publishes the messages committed in ``scheduled_messages`` to the broker.

A submission commits its task row and its message together and wakes this process's relay; the
relay takes due rows ``FOR UPDATE SKIP LOCKED`` in batches, publishes a batch, waits for
RabbitMQ's publisher confirms once for the whole batch, and deletes the batch's rows in the same
transaction. A relay that dies between the confirms and the commit leaves its rows to be published
again: a task's message delivered twice is harmless (the claim lets one delivery run it), a
message never published is not possible while any relay or worker maintenance runs.

Every process that submits runs one (a daemon thread, started on the first wake or explicitly),
and it also polls every ``poll_interval`` seconds for rows others left (a process that died after
its commit) and for delayed messages that came due.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import dramatiq
import pika
import pika.exceptions
import pika.frame
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import q_name
from dramatiq.errors import BrokerConnectionError, ConnectionClosed
from prometheus_client import Histogram
from sqlalchemy.orm import Session, sessionmaker

from actors.broker_nodes import node_parameters
from actors.errors import BrokerUnavailable
from actors.priority_bands import routed, routes_bands
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

#: Timeouts of the relay's connection attempt (TCP connect, socket reads, AMQP handshake).
CONNECT_TIMEOUT_SECONDS = 2.0
#: The longest a relay waits between two tries while the broker is down.
MAX_BACKOFF_SECONDS = 5.0


class PublishFailed(BrokerUnavailable):
    """The broker did not confirm every message of a batch; the batch stays in the outbox."""


@dataclass
class RelayCounters:
    """What a publisher did in this process (for tests and the bench)."""

    batches: int = 0
    messages: int = 0
    confirm_waits: int = 0


class Publisher(Protocol):
    counters: RelayCounters

    def publish(self, messages: Sequence[Message[Any]]) -> None: ...

    def keepalive(self) -> None: ...

    def close(self) -> None: ...


class EnqueuePublisher:
    """The in-process broker (``interlock dev``, tests on the stub): ``broker.enqueue`` each message."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self.broker = broker
        self.counters = RelayCounters()

    def publish(self, messages: Sequence[Message[Any]]) -> None:
        for message in messages:
            self.broker.enqueue(message)
        self.counters.batches += 1
        self.counters.messages += len(messages)

    def keepalive(self) -> None:
        pass

    def close(self) -> None:
        pass


class RabbitmqPublisher:
    """Publishes a batch on one channel in confirm mode and waits for its confirms once.

    The bytes are Dramatiq's own (its encoder, ``delivery_mode`` 2, the ``broker_priority``
    option as priority, the queue declared by the broker with its ``.DQ``/``.XQ`` companions), so
    Dramatiq workers consume them unchanged. Publishes are ``mandatory``: a message RabbitMQ could
    route nowhere (its queue was deleted) fails the batch and its queue is declared again.
    pika's blocking channel waits for a confirm after every publish; this class turns confirm mode
    on the channel's underlying (asynchronous) pika channel instead, and drives the connection
    until every delivery tag of the batch is acknowledged.
    """

    def __init__(self, broker: RabbitmqBroker, *, timeout: float = 10.0) -> None:
        self.broker = broker
        self.timeout = timeout
        self.counters = RelayCounters()
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._next_tag = 1
        self._unconfirmed: set[int] = set()
        self._refused = 0

    def _open(self) -> Any:
        if self._channel is not None and self._channel.is_open:
            return self._channel
        self.close()
        # Fail fast while the broker is away: the batch's rows are locked while the relay tries.
        # With a cluster's nodes, each is tried once, in turn.
        nodes = node_parameters(
            self.broker,
            socket_timeout=CONNECT_TIMEOUT_SECONDS,
            stack_timeout=CONNECT_TIMEOUT_SECONDS * 1.5,
            connection_attempts=1,
            retry_delay=0,
        )
        self._connection = pika.BlockingConnection(nodes)
        channel = self._connection.channel()
        confirmed: list[bool] = []

        def selected(_: Any) -> None:
            confirmed.append(True)
            self._wake_wait()

        channel._impl.confirm_delivery(ack_nack_callback=self._on_confirm, callback=selected)
        channel._impl.add_on_return_callback(self._on_return)
        self._wait(lambda: bool(confirmed), "confirm.select")
        self._channel, self._next_tag, self._unconfirmed, self._refused = channel, 1, set(), 0
        return channel

    def _on_confirm(self, frame: pika.frame.Method[Any]) -> None:
        method = frame.method
        tag = method.delivery_tag
        done = {t for t in self._unconfirmed if t <= tag} if method.multiple else {tag}
        self._unconfirmed -= done
        if isinstance(method, pika.spec.Basic.Nack):
            self._refused += len(done)
        if not self._unconfirmed:
            self._wake_wait()

    def _wake_wait(self) -> None:
        """End :meth:`_wait`'s current ``process_data_events`` now: it returns early only for an
        event of the blocking connection, not for a callback of the channel underneath."""
        if self._connection is not None:
            self._connection.add_callback_threadsafe(_nothing)

    def _on_return(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self._refused += 1
        self.broker.queues_pending.add(q_name(method.routing_key))  # declared again before the next try

    def _wait(self, done: Any, what: str) -> None:
        assert self._connection is not None
        deadline = time.monotonic() + self.timeout
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PublishFailed(f"RabbitMQ did not answer {what} within {self.timeout} s")
            self._connection.process_data_events(time_limit=min(remaining, 1.0))

    def publish(self, messages: Sequence[Message[Any]]) -> None:
        if routes_bands(self.broker):
            messages = [routed(message) for message in messages]
        reused = self._channel is not None and self._channel.is_open
        try:
            self._publish(messages)
        except PublishFailed:
            if not reused or self._channel is not None:
                raise
            # The connection kept from an earlier batch had died (a broker restart, a proxy's idle
            # timeout): one more try on a new one before the batch waits and the broker counts as down.
            logger.info("outbox relay: its RabbitMQ connection had been lost; publishing on a new one")
            self._publish(messages)

    def _publish(self, messages: Sequence[Message[Any]]) -> None:
        try:
            channel = self._open()
            for queue in {message.queue_name for message in messages}:
                self.broker.declare_queue(queue, ensure=True)
            self._refused = 0
            for message in messages:
                channel._impl.basic_publish(
                    exchange="",
                    routing_key=message.queue_name,
                    body=message.encode(),
                    properties=pika.BasicProperties(delivery_mode=2, priority=message.options.get("broker_priority")),
                    mandatory=True,
                )
                self._unconfirmed.add(self._next_tag)
                self._next_tag += 1
            self.counters.confirm_waits += 1
            self._wait(lambda: not self._unconfirmed, f"the confirms of {len(messages)} messages")
        except (pika.exceptions.AMQPError, ConnectionClosed, OSError) as exc:
            self.close()
            raise PublishFailed(f"publishing to RabbitMQ failed: {exc!r}") from exc
        except PublishFailed:
            self.close()
            raise
        if self._refused:
            raise PublishFailed(f"RabbitMQ refused or could not route {self._refused} of {len(messages)} messages")
        self.counters.batches += 1
        self.counters.messages += len(messages)

    def keepalive(self) -> None:
        """Answer the broker's heartbeats on an idle connection: pika's blocking connection does so only
        while it is used, and RabbitMQ closes a connection that misses two (a few minutes idle)."""
        if self._connection is None or not self._connection.is_open:
            return
        try:
            self._connection.process_data_events(time_limit=0)
        except (pika.exceptions.AMQPError, ConnectionClosed, OSError) as exc:
            logger.info("outbox relay: its idle RabbitMQ connection was lost (%r); the next batch opens one", exc)
            self.close()

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except pika.exceptions.AMQPError:
                logger.debug("closing the relay's RabbitMQ connection failed", exc_info=True)


def _nothing() -> None:
    pass


def publisher_for(broker: dramatiq.Broker) -> Publisher:
    if isinstance(broker, RabbitmqBroker):
        return RabbitmqPublisher(broker)
    return EnqueuePublisher(broker)


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
