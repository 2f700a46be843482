"""How many messages wait in each work queue and its dead-letter queue.

Read with passive declares on one short connection, so looking never creates or changes a queue,
and works from any process that knows the broker (the API, a worker supervisor).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import dramatiq
import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name, xq_name

__all__ = ["queue_depths", "rabbitmq_queue_depths"]


def rabbitmq_queue_depths(parameters: pika.connection.Parameters, queues: Iterable[str]) -> list[dict[str, Any]]:
    """``{queue, ready, delayed, dead_letters}`` per queue; a queue not declared yet counts as empty."""
    connection = pika.BlockingConnection(parameters)
    try:
        channel = connection.channel()
        depths = []
        for queue in queues:
            counts = []
            for name in (queue, dq_name(queue), xq_name(queue)):
                try:
                    counts.append(channel.queue_declare(name, passive=True).method.message_count)
                except pika.exceptions.ChannelClosedByBroker:
                    channel = connection.channel()  # 404: nothing was ever sent there
                    counts.append(0)
            depths.append({"queue": queue, "ready": counts[0], "delayed": counts[1], "dead_letters": counts[2]})
        return depths
    finally:
        connection.close()


def queue_depths(broker: dramatiq.Broker, queues: Iterable[str]) -> list[dict[str, Any]]:
    """The same for the broker this process uses, RabbitMQ or the in-process one."""
    if isinstance(broker, RabbitmqBroker):
        parameters = broker.parameters[0] if isinstance(broker.parameters, list) else broker.parameters
        return rabbitmq_queue_depths(parameters, queues)
    if isinstance(broker, StubBroker):
        return [
            {
                "queue": queue,
                "ready": broker.queues[queue].qsize() if queue in broker.queues else 0,
                "delayed": 0,
                "dead_letters": len(broker.dead_letters_by_queue.get(queue, [])),
            }
            for queue in queues
        ]
    return []
