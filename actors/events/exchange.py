"""Events on RabbitMQ: the topic exchange, the subscription queues bound to it, and their consumer.

A topic exchange copies one message body into every bound queue, while Dramatiq finds the actor
to run from the queue and actor named inside the body. So the event is published once, as an
envelope (actor ``interlock.event``, its only argument the event id), and the consumer of each
subscription queue rewrites what it receives into that subscription's task message: its own
queue, its actor, and the task id ``event_task_id(event_id, subscription)`` that ``publish`` gave
the task row. From there on the message is an ordinary task message: retries, parked delays and
lapsed-lease re-publishes go straight to the subscription queue.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pika
import pika.exceptions
from dramatiq import Message
from dramatiq.brokers.rabbitmq import MAX_ENQUEUE_ATTEMPTS, _RabbitmqConsumer, _RabbitmqMessage
from dramatiq.common import q_name
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import Middleware, SkipMessage

from actors.events.bus import EventRouting, ensure_event_task, event_task_id
from actors.events.subscriptions import Subscription
from actors.runtime import Runtime

__all__ = ["EXCHANGE", "ENVELOPE_ACTOR", "EVENT_OPTION", "EVENT_TYPE_OPTION", "RabbitmqEventRouting", "EventDelivery"]

logger = logging.getLogger(__name__)

#: The durable topic exchange every event is published on, routed by its type.
EXCHANGE = "interlock.events"
#: Actor name of the message published on the exchange; each subscription queue's consumer
#: rewrites it into that subscription's task message.
ENVELOPE_ACTOR = "interlock.event"
#: Message option naming the event a rewritten task message came from.
EVENT_OPTION = "interlock_event_id"
#: Envelope option carrying the event's type, so a queue bound to an old pattern can skip it.
EVENT_TYPE_OPTION = "interlock_event_type"


class RabbitmqEventRouting(EventRouting):
    """RabbitmqBroker mixin: declares the exchange, binds subscription queues, rewrites envelopes."""

    _exchange_declared = False

    @property
    def consumer_class(self) -> type[_RabbitmqConsumer]:
        return _SubscriptionConsumer

    def _declare_queue(self, queue_name: str) -> Any:
        """Declare the queue (Dramatiq) and, for a subscription queue, bind it to the exchange."""
        result = super()._declare_queue(queue_name)  # type: ignore[misc]
        subscription = self.subscription_for_queue(queue_name)
        if subscription is not None:
            channel = self.channel  # type: ignore[attr-defined]
            channel.exchange_declare(exchange=EXCHANGE, exchange_type="topic", durable=True)
            for pattern in subscription.patterns:
                channel.queue_bind(queue=queue_name, exchange=EXCHANGE, routing_key=pattern)
        return result

    def dispatch_event(self, event_id: str, event_type: str, targets: Sequence[tuple[Subscription, str]]) -> None:
        """Publish the event once on the exchange, with confirms, after its queues exist.

        With known subscribers the publish is ``mandatory``: a message RabbitMQ could route
        nowhere comes back as an error (and their queues are declared again) instead of vanishing.
        """
        broker: Any = self
        envelope: Message[Any] = Message(
            queue_name=EXCHANGE,
            actor_name=ENVELOPE_ACTOR,
            args=(event_id,),
            kwargs={},
            options={EVENT_TYPE_OPTION: event_type},
        )
        attempts = 0
        while True:
            try:
                for subscription, _ in targets:
                    broker.declare_queue(subscription.queue, ensure=True)
                channel = broker.channel
                if not self._exchange_declared:
                    channel.exchange_declare(exchange=EXCHANGE, exchange_type="topic", durable=True)
                    self._exchange_declared = True
                channel.basic_publish(
                    exchange=EXCHANGE,
                    routing_key=event_type,
                    body=envelope.encode(),
                    properties=pika.BasicProperties(delivery_mode=2, content_type="application/json"),
                    mandatory=bool(targets) and broker.confirm_delivery,
                )
                return
            except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as exc:
                del broker.connection
                self._exchange_declared = False
                if isinstance(exc, pika.exceptions.UnroutableError):
                    broker.queues_pending.update(subscription.queue for subscription, _ in targets)
                attempts += 1
                if attempts >= MAX_ENQUEUE_ATTEMPTS:
                    raise ConnectionClosed(exc) from None
                logger.debug("retrying the publish of event %s (%d/%d)", event_id, attempts, MAX_ENQUEUE_ATTEMPTS)


class _SubscriptionConsumer(_RabbitmqConsumer):
    """Dramatiq's RabbitMQ consumer, turning an event envelope into this queue's task message."""

    def __next__(self) -> Any:
        delivered = super().__next__()  # type: ignore[no-untyped-call]  # Dramatiq's consumer is untyped
        if delivered is None or delivered.actor_name != ENVELOPE_ACTOR or not delivered.args:
            return delivered
        subscription = self.broker.subscription_for_queue(q_name(self.queue_name))
        if subscription is None:
            return delivered  # no actor for it here: Dramatiq dead-letters the message
        event_id = str(delivered.args[0])
        task_id = event_task_id(event_id, subscription.name)
        message = delivered._message.copy(
            queue_name=self.queue_name,
            actor_name=subscription.actor_name,
            args=(task_id,),
            message_id=task_id,
            options={EVENT_OPTION: event_id},
        )
        return _RabbitmqMessage(delivered.redelivered, delivered._tag, message)


class EventDelivery(Middleware):
    """Runs before Claiming claims a subscription's task: the task row must exist.

    ``publish`` creates the task of every subscription it knows. A subscription it did not know
    (a worker deployed with a new subscriber before the API was) gets its task here, from the
    stored event. A queue still bound to a pattern its subscription no longer has skips the event.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def before_process_message(self, broker: Any, message: Any) -> None:
        event_id = message.options.get(EVENT_OPTION)
        if not event_id or not isinstance(broker, EventRouting):
            return
        subscription = broker.subscription_for_queue(q_name(message.queue_name))
        if subscription is None:
            return
        event_type = message.options.get(EVENT_TYPE_OPTION)
        if event_type and not subscription.matches(event_type):
            logger.info(
                "queue %s is still bound to %s, which %s no longer subscribes to; event %s skipped",
                subscription.queue,
                event_type,
                subscription.name,
                event_id,
            )
            raise SkipMessage("not subscribed")
        with self.runtime.sessions.begin() as session:
            if not ensure_event_task(session, str(event_id), subscription):
                logger.warning(
                    "event %s is no longer stored; its delivery to %s is dropped", event_id, subscription.name
                )
