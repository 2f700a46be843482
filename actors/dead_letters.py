"""Dead letters: list, replay and purge the messages in each work queue's dead-letter queue.

On RabbitMQ a queue's dead letters live in ``<queue>.XQ``. They are read with ``basic_get``
on a connection of our own and stay where they are unless taken: a message we keep is never
acknowledged, so closing the channel puts it back. Replaying reopens the task row
(``models.task_transitions.reopen_task``: same id, history kept) and publishes a fresh message before the
dead one is acknowledged, so a crash in between can leave a duplicate but never lose the task.
The in-process stub broker keeps its dead letters in ``broker.dead_letters_by_queue``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dramatiq
import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import xq_name
from dramatiq.errors import DecodeError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from actors.broker_nodes import node_parameters
from actors.errors import DeadLetterError
from actors.events.bus import event_task_id
from actors.events.exchange import ENVELOPE_ACTOR
from actors.events.subscriptions import SUBSCRIPTION_QUEUE_PREFIX
from actors.messages import task_message
from actors.priority_bands import routes_bands, with_bands
from models.task_transitions import reopen_task
from models.tasks import Task

__all__ = [
    "DeadLetter",
    "Taker",
    "list_dead_letters",
    "take_dead_letters",
    "replay_task",
    "purge",
    "task_details",
]

logger = logging.getLogger(__name__)

#: Most messages read from one dead-letter queue in one pass.
SCAN_LIMIT = 10_000


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    task_id: str | None
    actor: str
    message_id: str
    dead_at: datetime | None


#: Decides per dead letter whether it is taken (acknowledged, gone from the queue).
Taker = Callable[[DeadLetter], bool]


def _keep(_: DeadLetter) -> bool:
    return False


def _letter(queue: str, message: dramatiq.Message[Any], dead_at: datetime | None) -> DeadLetter:
    task_id = message.args[0] if message.args else message.kwargs.get("task_id")
    if message.actor_name == ENVELOPE_ACTOR and task_id and queue.startswith(SUBSCRIPTION_QUEUE_PREFIX):
        # An event as it arrived on a subscription queue (``actors.events.exchange``): name its task.
        task_id = event_task_id(str(task_id), queue.removeprefix(SUBSCRIPTION_QUEUE_PREFIX))
    return DeadLetter(
        queue=queue,
        task_id=str(task_id) if task_id else None,
        actor=message.actor_name,
        message_id=message.message_id,
        dead_at=dead_at,
    )


def _death_time(properties: Any) -> datetime | None:
    deaths = (properties.headers or {}).get("x-death") or []
    when = deaths[0].get("time") if deaths else None
    if isinstance(when, datetime):
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    if isinstance(when, int | float):
        return datetime.fromtimestamp(when, UTC)
    return None


def _scan_rabbitmq(broker: RabbitmqBroker, queue: str, take: Taker) -> list[DeadLetter]:
    """The queue's dead letters, and in quorum mode its priority bands' (named by the queue)."""
    try:
        connection = pika.BlockingConnection(node_parameters(broker))
    except pika.exceptions.AMQPError as exc:
        raise DeadLetterError(f"RabbitMQ is unreachable: {exc}") from exc
    letters: list[DeadLetter] = []
    try:
        for physical in with_bands([queue]) if routes_bands(broker) else [queue]:
            letters += _scan_queue(connection, queue, xq_name(physical), take)
    except pika.exceptions.AMQPError as exc:
        raise DeadLetterError(f"reading the dead letters of {queue} failed: {exc}") from exc
    finally:
        # Everything not acknowledged goes back to the queue, in its place.
        try:
            connection.close()
        except pika.exceptions.AMQPError:
            logger.debug("closing the dead-letter connection failed", exc_info=True)
    return letters


def _scan_queue(connection: pika.BlockingConnection, queue: str, xq: str, take: Taker) -> list[DeadLetter]:
    channel = connection.channel()
    try:
        channel.queue_declare(xq, passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        return []  # never declared: no dead letters
    letters: list[DeadLetter] = []
    for _ in range(SCAN_LIMIT):
        method, properties, body = channel.basic_get(xq, auto_ack=False)
        if method is None:
            break
        try:
            letter = _letter(queue, dramatiq.Message.decode(body), _death_time(properties))
        except DecodeError:  # a foreign message in our queue: show nothing, leave it there
            logger.warning("undecodable message in %s left in place", xq)
            continue
        if take(letter):
            channel.basic_ack(method.delivery_tag)
        letters.append(letter)
    return letters


def _scan_stub(broker: StubBroker, queue: str, take: Taker) -> list[DeadLetter]:
    proxies = broker.dead_letters_by_queue.get(queue, [])
    letters = []
    for proxy in list(proxies):
        letter = _letter(queue, proxy._message, None)
        if take(letter):
            proxies.remove(proxy)
        letters.append(letter)
    return letters


def _scan(broker: dramatiq.Broker, queue: str, take: Taker) -> list[DeadLetter]:
    if isinstance(broker, RabbitmqBroker):
        return _scan_rabbitmq(broker, queue, take)
    if isinstance(broker, StubBroker):
        return _scan_stub(broker, queue, take)
    raise DeadLetterError(f"{type(broker).__name__} has no dead-letter queues Interlock can read")


def list_dead_letters(broker: dramatiq.Broker, queues: Iterable[str]) -> dict[str, list[DeadLetter]]:
    """The dead letters of each work queue, left in place."""
    return {queue: _scan(broker, queue, _keep) for queue in sorted(set(queues))}


def take_dead_letters(broker: dramatiq.Broker, queues: Iterable[str], take: Taker) -> list[DeadLetter]:
    """Dead letters for which ``take`` answered true; they are removed from their queue."""
    taken: list[DeadLetter] = []

    def decide(letter: DeadLetter) -> bool:
        if take(letter):
            taken.append(letter)
            return True
        return False

    for queue in sorted(set(queues)):
        _scan(broker, queue, decide)
    return taken


def replay_task(sessions: sessionmaker[Session], broker: dramatiq.Broker, letter: DeadLetter) -> bool:
    """Reopen the letter's task and publish it again; ``False`` if the task cannot be reopened."""
    if letter.task_id is None:
        return False
    with sessions.begin() as session:
        task = session.get(Task, letter.task_id)
        if task is None:
            return False
        previous = reopen_task(
            session,
            letter.task_id,
            reason="replayed from the dead-letter queue",
            data={"dead_letter_queue": xq_name(letter.queue), "message_id": letter.message_id},
        )
        if previous is None:
            return False
        message = task_message(queue=task.queue, actor=task.actor, task_id=task.id, priority=task.priority)
    broker.enqueue(message)
    return True


def purge(
    broker: dramatiq.Broker, queues: Iterable[str], task_id: str | None = None, *, allowed: Taker | None = None
) -> list[DeadLetter]:
    """Remove dead letters: those of ``task_id``, or all of ``queues``; of them only those ``allowed``
    (a tenant's), leaving the others where they are."""

    def take(letter: DeadLetter) -> bool:
        return (task_id is None or letter.task_id == task_id) and (allowed is None or allowed(letter))

    return take_dead_letters(broker, queues, take)


def task_details(session: Session, task_ids: Iterable[str]) -> dict[str, Task]:
    ids = [task_id for task_id in set(task_ids) if task_id]
    if not ids:
        return {}
    return {task.id: task for task in session.scalars(select(Task).where(Task.id.in_(ids)))}
