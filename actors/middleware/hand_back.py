"""Handing a message back: it may not run now, so it goes to the queue again and this delivery is skipped.

Neither a failure nor a retry (no retry is spent): the same message comes back, at once or
parked for a while (``actors.broker`` parks delayed messages in the database, or in RabbitMQ's
delay queue while the database is away).
"""

from __future__ import annotations

import logging
import random
from typing import Any, NoReturn

import dramatiq
from dramatiq.middleware import SkipMessage
from sqlalchemy.exc import DBAPIError

__all__ = ["HAND_BACK_MS", "hand_back", "hand_back_in_outage"]

logger = logging.getLogger(__name__)

#: Milliseconds (1 to 2 times this) before a message whose claim could not be written comes back.
HAND_BACK_MS = 1000


def hand_back(broker: dramatiq.Broker, message: Any, *, reason: str, delay: int | None = None) -> NoReturn:
    """Enqueue ``message`` again (after ``delay`` ms when given) and skip this delivery."""
    broker.enqueue(message.copy(), delay=delay)
    raise SkipMessage(reason)


def hand_back_in_outage(broker: dramatiq.Broker, message: Any, task_id: str, exc: DBAPIError) -> NoReturn:
    """The database stays away while the task is admitted or claimed: the message comes back later.

    Not the task's failure (no retry is spent on it): the same message comes back later, parked,
    or in RabbitMQ's delay queue while the database is away.
    """
    delay = int(HAND_BACK_MS * random.uniform(1, 2))
    logger.warning("could not claim task %s (%s); its message comes back in %d ms", task_id, exc.orig, delay)
    broker.enqueue(message.copy(), delay=delay)
    raise SkipMessage("database unavailable") from exc
