"""Priorities on quorum queues: one queue per priority band, the high band served first.

Quorum queues in RabbitMQ 3.x ignore ``x-max-priority``, so in quorum mode a task's priority picks
its queue instead: ``<queue>.high`` from :data:`HIGH_PRIORITY` up, ``<queue>.low`` below
:data:`NORMAL_PRIORITY`, ``<queue>`` in between (``high``, ``low`` and ``normal`` of the API land
in one band each). Each band has its own twin actor, ``<actor>.high`` or ``<actor>.low``, with a
Dramatiq worker priority one above or below the workflow's: a worker runs the messages it holds
high band first. Messages are routed when they are published (:func:`routed`), never when they
are built, so a task row keeps its canonical queue and actor and a replay or retry is routed again
by its priority. Classic mode declares no band and routes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dramatiq import Message

__all__ = [
    "BANDS",
    "HIGH_PRIORITY",
    "NORMAL_PRIORITY",
    "band_of",
    "band_name",
    "canonical_name",
    "routes_bands",
    "routed",
    "with_bands",
    "worker_priority",
]

#: A message priority from which a task goes to the high band.
HIGH_PRIORITY = 9
#: A message priority below which a task goes to the low band (``low`` is 0, ``normal`` 4).
NORMAL_PRIORITY = 4
#: The bands besides the normal one, which is the canonical queue itself.
BANDS = ("high", "low")
_WORKER_PRIORITY = {"high": -1, "low": 1}


def band_of(priority: int) -> str | None:
    """``"high"``, ``"low"``, or ``None`` for the normal band."""
    if priority >= HIGH_PRIORITY:
        return "high"
    if priority < NORMAL_PRIORITY:
        return "low"
    return None


def band_name(name: str, band: str | None) -> str:
    """The band's queue (or actor) name for a canonical queue (or actor) name."""
    return f"{name}.{band}" if band else name


def canonical_name(name: str) -> str:
    """The queue (or actor) name without its band suffix."""
    head, dot, band = name.rpartition(".")
    return head if dot and band in BANDS else name


def worker_priority(band: str, base: int = 0) -> int:
    """Dramatiq's actor priority for a band's twin (lower runs first in a worker)."""
    return base + _WORKER_PRIORITY[band]


def with_bands(queues: Iterable[str]) -> list[str]:
    """Each queue followed by its band queues: what a quorum-mode worker consumes and counts."""
    return [name for queue in queues for name in (queue, *(band_name(queue, band) for band in BANDS))]


def routes_bands(broker: Any) -> bool:
    """Whether ``broker`` routes priorities to bands (an Interlock broker in quorum mode)."""
    return getattr(broker, "queue_type", "classic") == "quorum"


def routed(message: Message[Any]) -> Message[Any]:
    """``message`` sent to the band queue and twin actor of its ``broker_priority``.

    Idempotent: a message already in a band (a retry, a replayed dead letter) is routed again
    from its canonical names, so a changed priority moves it.
    """
    priority = int(message.options.get("broker_priority") or 0)
    band = band_of(priority)
    queue = band_name(canonical_name(message.queue_name), band)
    actor = band_name(canonical_name(message.actor_name), band)
    if queue == message.queue_name and actor == message.actor_name:
        return message
    return message.copy(queue_name=queue, actor_name=actor)
