"""Subscriptions: the workflows an event starts, declared with :func:`subscribe` in an agent module.

A subscription is a workflow (not submittable through the API) served on its own durable queue
``events.<name>``, bound to the event exchange with its patterns (``actors.events.topics``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from actors.catalogue import WorkflowFn, WorkflowSpec, actor_name, workflow
from actors.events.topics import check_pattern, topic_matches

__all__ = ["SUBSCRIPTION_QUEUE_PREFIX", "Subscription", "subscribe", "subscriptions_in"]

#: A subscription ``name`` is served on the queue ``events.<name>``.
SUBSCRIPTION_QUEUE_PREFIX = "events."

W = TypeVar("W", bound=WorkflowFn)


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
) -> Callable[[W], W]:
    """Run ``fn(ctx)`` as a task for every event whose type matches one of ``patterns``.

    ``ctx.input`` is ``{event_id, event_type, source, data}``; ``ctx.publish`` sends events on.
    """
    if not patterns:
        raise ValueError("subscribe() needs at least one pattern")
    for pattern in patterns:
        check_pattern(pattern)

    def register(fn: W) -> W:
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
