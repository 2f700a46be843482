"""The RabbitMQ nodes a process may connect to, in the order they are tried.

``INTERLOCK_BROKER_URL`` may name every node of a cluster (``;``-separated). Dramatiq keeps them
as a list of pika parameters and pika tries each in turn, so a connection opened after a node is
lost goes to a surviving one; the short connections Interlock opens itself (queue depths, dead
letters, the outbox relay) take the same list instead of the first node's only.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import pika

__all__ = ["node_parameters", "parameters_for_urls"]


def parameters_for_urls(urls: Sequence[str]) -> list[pika.connection.Parameters]:
    """pika's parameters for each node's URL."""
    return [pika.URLParameters(url) for url in urls]


def node_parameters(broker: Any, **overrides: Any) -> list[pika.connection.Parameters]:
    """Copies of a Dramatiq RabbitMQ broker's parameters, one per node, with ``overrides`` set on each
    (``socket_timeout=2`` to fail fast on a node that is away)."""
    configured = broker.parameters if isinstance(broker.parameters, list) else [broker.parameters]
    nodes = [copy.deepcopy(parameters) for parameters in configured]
    for parameters in nodes:
        for name, value in overrides.items():
            setattr(parameters, name, value)
    return nodes
