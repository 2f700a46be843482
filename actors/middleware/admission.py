"""Admission: a task starts now, or waits its turn and comes back.

Two limits hold a task back without failing it and without spending a retry; its message is
handed back, parked for a while (``actors.middleware.hand_back``):

* the queue's rate limit (``INTERLOCK_RATE_LIMITS``: at most N starts in any period, across every
  worker), checked by the :class:`Admission` middleware before the task is claimed;
* the tenant's concurrency cap, which the claim itself decides (in the statement or transaction
  that takes the lease, so two workers cannot both take a tenant's last slot): ``Claiming`` then
  calls :func:`wait_for_tenant`.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Any, NoReturn

import dramatiq
from dramatiq.middleware import Middleware
from sqlalchemy.exc import DBAPIError

from actors.limits import SlidingWindow
from actors.messages import interlock_task_id
from actors.middleware.hand_back import hand_back, hand_back_in_outage
from actors.middleware.metrics import RATE_LIMIT_WAITS
from actors.runtime import Runtime
from models.database import is_transient

__all__ = ["Admission", "TENANT_WAIT_MS", "admitted_at", "wait_for_tenant"]

logger = logging.getLogger(__name__)

#: How long a task over its tenant's concurrency cap waits before it asks again (1 to 2 times this).
TENANT_WAIT_MS = 500

_local = threading.local()


def admitted_at() -> float | None:
    """When the rate limit admitted the message this thread handles; ``None`` if its queue has none.

    The claim records it with the task's start.
    """
    return getattr(_local, "admitted_at", None)


class Admission(Middleware):
    """The queue's rate limit: a message over it is parked and comes back when the window has room."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.limits = runtime.settings.rate_limits
        self.window = SlidingWindow(runtime.sessions)
        #: Messages this process parked because of the rate limit.
        self.rate_limited = 0

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        _local.admitted_at = None
        limit = self.limits.get(message.queue_name)
        if limit is None:
            return
        task_id = interlock_task_id(self.runtime.catalogue, message)
        if task_id is None:
            return  # a plain Dramatiq actor on the same broker: not an Interlock task
        try:
            admitted, wait, at = self.window.acquire(f"agent:{message.queue_name}", limit)
        except DBAPIError as exc:
            if not is_transient(exc):
                raise
            hand_back_in_outage(broker, message, task_id, exc)
        if not admitted:
            # Not a failure and not a retry: the same message waits (parked) and comes back.
            delay = int((wait + random.uniform(0, limit.period / limit.count)) * 1000)
            logger.debug("task %s rate limited on %s; back in %d ms", task_id, message.queue_name, delay)
            self.rate_limited += 1
            RATE_LIMIT_WAITS.labels(message.queue_name).inc()
            hand_back(broker, message, delay=delay, reason="rate limited")
        _local.admitted_at = at


def wait_for_tenant(broker: dramatiq.Broker, message: Any, task_id: str) -> NoReturn:
    """The tenant's concurrency cap is reached: the message waits its turn (parked, not failed)."""
    delay = int(TENANT_WAIT_MS * random.uniform(1, 2))
    logger.debug("task %s waits for its tenant's concurrency cap; back in %d ms", task_id, delay)
    hand_back(broker, message, delay=delay, reason="tenant concurrency cap")
