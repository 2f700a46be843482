"""Leases of worker processes known to be dead, released without waiting for them to lapse.

Data-access functions take a ``Session`` and never commit: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import update
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
    expired = session.execute(
        update(Task)
        .where(Task.lease_owner.in_(list(owners)), Task.state == TaskState.PROCESSING)
        .values(lease_expires_at=utcnow())
    )
    return int(expired.rowcount)  # type: ignore[attr-defined]
