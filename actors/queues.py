"""How many messages wait in each work queue and its dead-letter queue.

Read with passive declares on one short connection, so looking never creates or changes a queue,
and works from any process that knows the broker (the API, a worker supervisor). In quorum mode a
queue's count includes its priority bands' (``actors.priority_bands``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import dramatiq
import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name, xq_name

from actors.broker_nodes import node_parameters
from actors.priority_bands import canonical_name, routes_bands, with_bands

__all__ = ["queue_depths", "rabbitmq_queue_depths"]


def rabbitmq_queue_depths(
    parameters: pika.connection.Parameters | Sequence[pika.connection.Parameters],
    queues: Iterable[str],
    *,
    bands: bool = False,
) -> list[dict[str, Any]]:
    """``{queue, ready, delayed, dead_letters}`` per queue; a queue not declared yet counts as empty.

    ``parameters``: one node's, or each node's of a cluster (tried in turn). ``bands``: add the
    counts of the queue's priority bands (quorum mode).
    """
    connection = pika.BlockingConnection(
        parameters if isinstance(parameters, pika.connection.Parameters) else list(parameters)
    )
    try:
        channel = connection.channel()
        depths = []
        for queue in queues:
            counts = [0, 0, 0]
            for physical in with_bands([queue]) if bands else [queue]:
                for i, name in enumerate((physical, dq_name(physical), xq_name(physical))):
                    try:
                        counts[i] += channel.queue_declare(name, passive=True).method.message_count
                    except pika.exceptions.ChannelClosedByBroker:
                        channel = connection.channel()  # 404: nothing was ever sent there
            depths.append({"queue": queue, "ready": counts[0], "delayed": counts[1], "dead_letters": counts[2]})
        return depths
    finally:
        connection.close()


def queue_depths(broker: dramatiq.Broker, queues: Iterable[str]) -> list[dict[str, Any]]:
    """The same for the broker this process uses, RabbitMQ or the in-process one."""
    if isinstance(broker, RabbitmqBroker):
        if not routes_bands(broker):
            return rabbitmq_queue_depths(node_parameters(broker), queues)
        # A band queue counts in its queue's row (a worker's consumed queues include the bands).
        canonical = list(dict.fromkeys(canonical_name(queue) for queue in queues))
        return rabbitmq_queue_depths(node_parameters(broker), canonical, bands=True)
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
