"""The event bus: events stored in the database, delivered to subscribed agents as tasks.

``EventBus.publish(event_type, data, source=..., tenant=...)`` stores the event (a uuid4 id, type,
source, data, tenant, creation and expiry time), creates one task per subscription whose pattern
matches, owned by the event's tenant (so status, progress, retries, time limits and the tenant's
concurrency cap and token budget work as for every other task) and hands the event to
the broker: on RabbitMQ one message on the topic exchange ``interlock.events`` with the event
type as routing key (``actors.events.exchange``), on the in-process broker one task message per
subscription. An event nobody subscribes to is stored all the same.

Agents subscribe with ``actors.events.subscriptions.subscribe`` in a module under ``actors/agents/``;
a running task publishes with ``ctx.publish``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any, cast

import dramatiq
from dramatiq.errors import BrokerConnectionError
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from actors.errors import BrokerUnavailable, BudgetExceeded, DuplicateDelivery
from actors.events.subscriptions import Subscription
from actors.events.topics import check_event_type
from actors.messages import task_message
from actors.runtime import Runtime
from models.base import utcnow
from models.events import (
    Event,
    add_event,
    claim_delivery,
    delivery_event_id,
    get_event,
    release_delivery,
)
from models.security import SYSTEM_TENANT
from models.task_queries import get_task
from models.task_transitions import create_task
from models.tasks import Task
from models.tenants import budget_exhausted

__all__ = [
    "EventBus",
    "EventRouting",
    "Delivery",
    "event_task_id",
    "task_event_id",
    "ensure_event_task",
]

logger = logging.getLogger(__name__)

_NAMESPACE = uuid.UUID("6f1c9a52-4a0e-4d8e-9a55-3c2f0b7e61d4")


@dataclass(frozen=True)
class Delivery:
    """A key that recognises a webhook delivery seen before: the provider's delivery id, or a hash
    of the body; with ``window`` it counts for that long only (else until the retention cleanup)."""

    provider: str
    delivery_id: str
    window: timedelta | None = None


def event_task_id(event_id: str, subscription: str) -> str:
    """The id of the task an event starts for a subscription: the same wherever it is computed."""
    return str(uuid.uuid5(_NAMESPACE, f"{event_id}/{subscription}"))


def task_event_id(task_id: str, event_type: str, key: str = "") -> str:
    """The id of the event a task publishes, once per (task, event type, ``key``).

    Derived from the task id, so a retried task publishes the same event again (to the same
    downstream tasks, which then run once) instead of a second one.
    """
    return str(uuid.uuid5(_NAMESPACE, f"{task_id}/{event_type}/{key}"))


class EventRouting:
    """Broker mixin: the subscriptions, and how an event's task messages reach them.

    This default (the in-process broker) enqueues one task message per subscription;
    ``actors.events.exchange.RabbitmqEventRouting`` publishes once on the topic exchange.
    """

    subscriptions: Mapping[str, Subscription] = MappingProxyType({})

    def subscription_for_queue(self, queue_name: str) -> Subscription | None:
        return next((s for s in self.subscriptions.values() if s.queue == queue_name), None)

    def dispatch_event(self, event_id: str, event_type: str, targets: Sequence[tuple[Subscription, str]]) -> None:
        broker = cast(dramatiq.Broker, self)
        for subscription, task_id in targets:
            broker.enqueue(task_message(queue=subscription.queue, actor=subscription.actor_name, task_id=task_id))


# -- publishing -----------------------------------------------------------------------------


def _task_input(event: Event) -> dict[str, Any]:
    return {"event_id": event.id, "event_type": event.type, "source": event.source, "data": event.data}


def _create_event_task(session: Session, event: Event, subscription: Subscription) -> str:
    """The subscription's task for the event, owned by the event's tenant."""
    task_id = event_task_id(event.id, subscription.name)
    create_task(
        session,
        task_id=task_id,
        workflow=subscription.name,
        actor=subscription.actor_name,
        queue=subscription.queue,
        input=_task_input(event),
        tenant=event.tenant,
    )
    return task_id


def ensure_event_task(session: Session, event_id: str, subscription: Subscription) -> bool:
    """Create the subscription's task for a stored event unless it exists; False if the event is gone."""
    if get_task(session, event_task_id(event_id, subscription.name)) is not None:
        return True
    event = get_event(session, event_id)
    if event is None:
        return False
    try:
        with session.begin_nested():
            _create_event_task(session, event, subscription)
    except IntegrityError:
        pass  # created concurrently by another delivery of the same event
    return True


@dataclass(frozen=True)
class EventBus:
    """Publishes events; built per process from the session factory and the broker."""

    sessions: sessionmaker[Session]
    broker: dramatiq.Broker
    retention: timedelta = field(default=timedelta(days=7))

    @classmethod
    def for_runtime(cls, runtime: Runtime, broker: dramatiq.Broker) -> EventBus:
        return cls(runtime.sessions, broker, timedelta(seconds=runtime.settings.event_retention))

    @property
    def subscriptions(self) -> Mapping[str, Subscription]:
        return self.broker.subscriptions if isinstance(self.broker, EventRouting) else {}

    def publish(
        self,
        event_type: str,
        data: dict[str, Any],
        *,
        source: str,
        event_id: str | None = None,
        published_by: str | None = None,
        deliveries: Sequence[Delivery] = (),
        tenant: str = SYSTEM_TENANT,
    ) -> tuple[str, list[str]]:
        """Store the event and its tasks, then publish it; returns ``(event_id, task_ids)``.

        The event and its tasks belong to ``tenant``. A tenant's own publish (not one from its
        running task, ``published_by``) is refused with :class:`BudgetExceeded` once the tenant
        has used its monthly token budget, as a submission is. ``deliveries`` are recorded with
        the event in one transaction; one seen before raises :class:`DuplicateDelivery` and
        nothing is published. Giving an existing ``event_id`` publishes that event again to the
        same tasks (a retried publisher); their leases make sure each task still runs once. If
        the broker cannot take the event, what this call stored is withdrawn and
        :class:`BrokerUnavailable` is raised.
        """
        check_event_type(event_type)
        matching = [s for s in self.subscriptions.values() if s.matches(event_type)]
        event_id = event_id or str(uuid.uuid4())
        with self.sessions.begin() as session:
            if published_by is None and tenant != SYSTEM_TENANT:
                exhausted = budget_exhausted(session, tenant)
                if exhausted is not None:
                    raise BudgetExceeded(exhausted)
            for delivery in deliveries:
                key = {"provider": delivery.provider, "delivery_id": delivery.delivery_id}
                if not claim_delivery(session, **key, event_id=event_id, window=delivery.window):
                    raise DuplicateDelivery(delivery.provider, delivery.delivery_id, delivery_event_id(session, **key))
            event = get_event(session, event_id)
            created = event is None
            if event is None:
                event = add_event(
                    session,
                    event_id=event_id,
                    event_type=event_type,
                    source=source,
                    data=data,
                    expires_at=utcnow() + self.retention,
                    task_ids=[],
                    published_by=published_by,
                    tenant=tenant,
                )
                event.task_ids = [_create_event_task(session, event, s) for s in matching]
            task_ids = list(event.task_ids)
            targets = [(s, event_task_id(event_id, s.name)) for s in matching]
            targets = [(s, task_id) for s, task_id in targets if task_id in task_ids]
        try:
            self._dispatch(event_id, event_type, targets)
        except (BrokerConnectionError, OSError) as exc:
            logger.error("publishing event %s (%s) failed (%s); it is withdrawn", event_id, event_type, exc)
            if created:
                self._withdraw(event_id, task_ids, deliveries)
            raise BrokerUnavailable("the message broker is unreachable; the event was not published") from exc
        logger.info("published event %s (%s) from %s to %d subscription(s)", event_id, event_type, source, len(targets))
        return event_id, task_ids

    def _dispatch(self, event_id: str, event_type: str, targets: Sequence[tuple[Subscription, str]]) -> None:
        if isinstance(self.broker, EventRouting):
            self.broker.dispatch_event(event_id, event_type, targets)
        else:  # a broker not built by actors.broker: plain task messages
            EventRouting.dispatch_event(cast(EventRouting, self.broker), event_id, event_type, targets)

    def _withdraw(self, event_id: str, task_ids: list[str], deliveries: Sequence[Delivery]) -> None:
        with self.sessions.begin() as session:
            if task_ids:
                session.execute(delete(Task).where(Task.id.in_(task_ids)))
            session.execute(delete(Event).where(Event.id == event_id))
            for delivery in deliveries:
                release_delivery(session, provider=delivery.provider, delivery_id=delivery.delivery_id)
