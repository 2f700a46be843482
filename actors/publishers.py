"""Publishers of the outbox relay: a batch of Dramatiq messages onto the broker, confirmed as a whole.

``RabbitmqPublisher`` drives pika's confirm mode itself, so a batch costs one confirm wait; the
in-process broker (``interlock dev``, tests on the stub) gets ``EnqueuePublisher``. The relay and
the workers' maintenance (``actors.outbox_relay``, ``actors.middleware.maintenance``) each hold one.
"""

from __future__ import annotations

import logging
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
from dramatiq.errors import ConnectionClosed

from actors.broker_nodes import node_parameters
from actors.errors import BrokerUnavailable
from actors.priority_bands import routed, routes_bands

__all__ = [
    "Publisher",
    "EnqueuePublisher",
    "RabbitmqPublisher",
    "PublishFailed",
    "RelayCounters",
    "publisher_for",
]

logger = logging.getLogger(__name__)

#: Timeouts of the relay's connection attempt (TCP connect, socket reads, AMQP handshake).
CONNECT_TIMEOUT_SECONDS = 2.0


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
