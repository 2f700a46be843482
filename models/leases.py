"""Leases of worker processes known to be dead, released without waiting for them to lapse.

Data-access functions take a ``Session`` and never commit: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from .base import utcnow
from .tasks import Task, TaskState

__all__ = ["expire_leases"]


def expire_leases(session: Session, *, owners: Collection[str]) -> int:
    """Make every lease the ``owners`` hold lapse now; returns how many.

    The next maintenance pass re-publishes those tasks, and a redelivered message may claim them
    at once. Only for owners that are certainly dead: a live one would go on running tasks that
    another worker then starts as well.
    """
    if not owners:
        return 0
    held: tuple[ColumnElement[bool], ...] = (Task.lease_owner.in_(list(owners)), Task.state == TaskState.PROCESSING)
    where = held
    if session.get_bind().dialect.name == "postgresql":
        # The rows locked in task-id order first, as every other writer of several tasks locks them
        # (``models.task_transitions.lock_in_order``): a plain UPDATE locks them in scan order.
        locked = select(Task.id).where(*held).order_by(Task.id).with_for_update(key_share=True).cte("locked")
        where = (Task.id == locked.c.id, *held)
    expired = session.execute(update(Task).where(*where).values(lease_expires_at=utcnow()))
    return int(expired.rowcount)  # type: ignore[attr-defined]
