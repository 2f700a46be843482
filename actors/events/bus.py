"""The event bus: events stored in the database, delivered to subscribed agents as tasks.

``EventBus.publish(event_type, data, source=..., tenant=...)`` stores the event (a uuid4 id, type,
source, data, tenant, creation and expiry time), creates one task per subscription whose pattern
matches, owned by the event's tenant (so status, progress, retries, time limits and the tenant's
concurrency cap and token budget work as for every other task) and hands the event to
the broker: on RabbitMQ one message on the topic exchange ``interlock.events`` with the event
type as routing key (``actors.events.exchange``), on the in-process broker one task message per
subscription. An event nobody subscribes to is stored all the same.

Agents subscribe with :func:`subscribe` in a module under ``actors/agents/``. A subscription is a
workflow (not submittable through the API) served on its own durable queue ``events.<name>``,
bound to the exchange with its patterns (``*`` one word, ``#`` any number of words).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, cast

import dramatiq
from dramatiq.errors import BrokerConnectionError
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from actors.catalogue import WorkflowFn, WorkflowSpec, actor_name, workflow
from actors.errors import InterlockError, InvalidInput
from actors.middleware.maintenance import task_message
from actors.submit import BrokerUnavailable, BudgetExceeded
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

if TYPE_CHECKING:
    from actors.context import TaskContext
    from actors.runtime import Runtime

__all__ = [
    "EXCHANGE",
    "ENVELOPE_ACTOR",
    "SUBSCRIPTION_QUEUE_PREFIX",
    "EventBus",
    "EventRouting",
    "Subscription",
    "Delivery",
    "DuplicateDelivery",
    "subscribe",
    "subscriptions_in",
    "topic_matches",
    "check_event_type",
    "event_task_id",
    "ensure_event_task",
    "publish_from_task",
]

logger = logging.getLogger(__name__)

#: The durable topic exchange every event is published on, routed by its type.
EXCHANGE = "interlock.events"
#: Actor name of the message published on the exchange; each subscription queue's consumer
#: rewrites it into that subscription's task message (``actors.events.exchange``).
ENVELOPE_ACTOR = "interlock.event"
#: A subscription ``name`` is served on the queue ``events.<name>``.
SUBSCRIPTION_QUEUE_PREFIX = "events."
#: Message option naming the event a rewritten task message came from.
EVENT_OPTION = "interlock_event_id"

_NAMESPACE = uuid.UUID("6f1c9a52-4a0e-4d8e-9a55-3c2f0b7e61d4")
_WORD = r"[A-Za-z0-9_-]+"
_EVENT_TYPE = re.compile(rf"{_WORD}(\.{_WORD})*")
_PATTERN = re.compile(rf"({_WORD}|\*|#)(\.({_WORD}|\*|#))*")
MAX_EVENT_TYPE = 128


@dataclass(frozen=True)
class Delivery:
    """A key that recognises a webhook delivery seen before: the provider's delivery id, or a hash
    of the body; with ``window`` it counts for that long only (else until the retention cleanup)."""

    provider: str
    delivery_id: str
    window: timedelta | None = None


class DuplicateDelivery(InterlockError):
    """A webhook delivery that was processed before; ``event_id`` is the event it produced then."""

    def __init__(self, provider: str, delivery_id: str, event_id: str | None) -> None:
        super().__init__(f"{provider} delivery {delivery_id!r} was already processed")
        self.event_id = event_id


def check_event_type(event_type: str) -> str:
    """Event types are dot-separated words (``new_data_arrived``, ``github.push``)."""
    if len(event_type) > MAX_EVENT_TYPE or not _EVENT_TYPE.fullmatch(event_type):
        raise InvalidInput(
            f"event type {event_type!r} must be dot-separated words of letters, digits, '_' or '-' "
            f"(at most {MAX_EVENT_TYPE} characters)"
        )
    return event_type


def topic_matches(pattern: str, event_type: str) -> bool:
    """RabbitMQ's topic matching: ``*`` is exactly one word, ``#`` zero or more words."""
    return _match(tuple(pattern.split(".")), tuple(event_type.split(".")))


@lru_cache(maxsize=4096)
def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return _match(rest, words) or (bool(words) and _match(pattern, words[1:]))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _match(rest, words[1:])


def event_task_id(event_id: str, subscription: str) -> str:
    """The id of the task an event starts for a subscription: the same wherever it is computed."""
    return str(uuid.uuid5(_NAMESPACE, f"{event_id}/{subscription}"))


# -- subscriptions --------------------------------------------------------------------------


@dataclass(frozen=True)
class Subscription:
    name: str
    patterns: tuple[str, ...]

    @property
    def queue(self) -> str:
        return f"{SUBSCRIPTION_QUEUE_PREFIX}{self.name}"

    @property
    def actor_name(self) -> str:
        return actor_name(self.name)

    def matches(self, event_type: str) -> bool:
        return any(topic_matches(pattern, event_type) for pattern in self.patterns)


_SUBSCRIPTIONS: dict[str, Subscription] = {}


def subscribe(
    *patterns: str,
    name: str | None = None,
    max_retries: int | None = None,
    time_limit: float | None = None,
) -> Callable[[WorkflowFn], WorkflowFn]:
    """Run ``fn(ctx)`` as a task for every event whose type matches one of ``patterns``.

    ``ctx.input`` is ``{event_id, event_type, source, data}``; ``ctx.publish`` sends events on.
    """
    if not patterns:
        raise ValueError("subscribe() needs at least one pattern")
    for pattern in patterns:
        if not _PATTERN.fullmatch(pattern):
            raise ValueError(f"{pattern!r} is not a topic pattern (words, '*' or '#', separated by dots)")

    def register(fn: WorkflowFn) -> WorkflowFn:
        subscription = Subscription(name or fn.__name__, tuple(patterns))
        known = _SUBSCRIPTIONS.get(subscription.name)
        if known is not None and known != subscription:
            raise ValueError(f"subscription {subscription.name!r} is registered twice")
        _SUBSCRIPTIONS[subscription.name] = subscription
        return workflow(
            subscription.name,
            queue=subscription.queue,
            max_retries=max_retries,
            time_limit=time_limit,
            submittable=False,
        )(fn)

    return register


def subscriptions_in(catalogue: Mapping[str, WorkflowSpec]) -> dict[str, Subscription]:
    """The subscriptions among the workflows :func:`actors.catalogue.discover` found."""
    return {name: sub for name, sub in _SUBSCRIPTIONS.items() if name in catalogue}


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


def publish_from_task(
    ctx: TaskContext, event_type: str, data: dict[str, Any], *, source: str, key: str = ""
) -> tuple[str, list[str]]:
    """Publish an event from a running task, once per (task, event type, ``key``).

    The event id is derived from the task id, so a retried task publishes the same event again
    (to the same downstream tasks, which then run once) instead of a second one. The event and
    its tasks belong to the task's tenant.
    """
    if ctx.broker is None:
        raise InvalidInput("this task context has no broker to publish events with")
    event_id = str(uuid.uuid5(_NAMESPACE, f"{ctx.task_id}/{event_type}/{key}"))
    bus = EventBus.for_runtime(ctx.runtime, ctx.broker)
    return bus.publish(event_type, data, source=source, event_id=event_id, published_by=ctx.task_id, tenant=ctx.tenant)
