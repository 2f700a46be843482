"""Circuit breakers per target host, shared by every worker process through the database.

A breaker is ``closed`` (calls pass, consecutive failures are counted), ``open`` (calls fail fast
until ``open_until``) or ``half_open`` (one probe call is in flight; its outcome closes or re-opens
the breaker). Every transition is one conditional statement, so concurrent workers agree on it.
Data-access functions take a ``Session`` and never commit: the caller owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, String, case, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from .base import Base, as_utc, iso, utcnow

__all__ = [
    "CircuitBreaker",
    "Admission",
    "CLOSED",
    "OPEN",
    "HALF_OPEN",
    "admit_call",
    "record_failure",
    "record_success",
    "release_probe",
    "list_breakers",
    "breaker_view",
]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker(Base):
    __tablename__ = "circuit_breakers"

    target: Mapped[str] = mapped_column(String(255), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    failures: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime | None]
    open_until: Mapped[datetime | None]
    probe_started_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


@dataclass(frozen=True)
class Admission:
    """May the call go ahead; is it the one probe of a half-open breaker; else when to try again."""

    allowed: bool
    probe: bool = False
    retry_after: float = 0.0
    #: Consecutive failures seen when admitted: a success with none to reset writes nothing.
    failures: int = 0


def admit_call(session: Session, target: str, *, probe_lease: float, reset: float) -> Admission:
    """Decide whether a call to ``target`` may be made now.

    After the open period exactly one caller gets the probe: it is claimed with a conditional
    UPDATE, so two workers can never both win it. A probe whose worker vanished (no outcome after
    ``probe_lease`` seconds) may be claimed again. While a probe is in flight other callers are
    told to come back after ``reset`` seconds, when a failed probe would let the next one through.
    """
    now = utcnow()
    row = session.get(CircuitBreaker, target, populate_existing=True)
    if row is None or row.state == CLOSED:
        return Admission(True, failures=row.failures if row is not None else 0)
    open_until = as_utc(row.open_until) or now
    if row.state == OPEN and open_until > now:
        return Admission(False, retry_after=(open_until - now).total_seconds())
    stale = now - timedelta(seconds=probe_lease)
    claimed = session.execute(
        update(CircuitBreaker)
        .where(
            CircuitBreaker.target == target,
            ((CircuitBreaker.state == OPEN) & (CircuitBreaker.open_until <= now))
            | ((CircuitBreaker.state == HALF_OPEN) & (CircuitBreaker.probe_started_at <= stale)),
        )
        .values(state=HALF_OPEN, probe_started_at=now, updated_at=now)
        .returning(CircuitBreaker.target)
        .execution_options(synchronize_session=False)
    ).first()
    if claimed is not None:
        return Admission(True, probe=True)
    # Another worker holds the probe. Waiting a whole reset period keeps fast failures from
    # spending the waiting tasks' retries; a probe that vanished is claimable after its lease.
    # Read the clock again: the winner may have stamped its probe after this caller's ``now``
    # (it read the clock later but took the row first), and a lease never has more than its length left.
    started = as_utc(row.probe_started_at) or now
    lease_left = min(probe_lease, (started + timedelta(seconds=probe_lease) - utcnow()).total_seconds())
    return Admission(False, retry_after=max(0.5, min(reset, lease_left)))


def record_failure(session: Session, target: str, *, probe: bool, threshold: int, reset: float) -> str:
    """Count a failed call; returns the breaker's state afterwards.

    A failed probe re-opens the breaker for ``reset`` seconds. In the closed state the
    ``threshold``-th consecutive failure opens it. Late outcomes of calls admitted before the
    breaker opened change nothing while it is open or half-open.
    """
    now = utcnow()
    until = now + timedelta(seconds=reset)
    if probe:
        state = session.execute(
            update(CircuitBreaker)
            .where(CircuitBreaker.target == target, CircuitBreaker.state == HALF_OPEN)
            .values(
                state=OPEN,
                failures=CircuitBreaker.failures + 1,
                opened_at=now,
                open_until=until,
                probe_started_at=None,
                updated_at=now,
            )
            .returning(CircuitBreaker.state)
            .execution_options(synchronize_session=False)
        ).scalar_one_or_none()
        return state or CLOSED
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    opens_now = (CircuitBreaker.state == CLOSED) & (CircuitBreaker.failures + 1 >= threshold)
    statement = insert(CircuitBreaker).values(
        target=target,
        state=OPEN if threshold <= 1 else CLOSED,
        failures=1,
        opened_at=now if threshold <= 1 else None,
        open_until=until if threshold <= 1 else None,
        probe_started_at=None,
        updated_at=now,
    )
    statement = statement.on_conflict_do_update(
        index_elements=[CircuitBreaker.target],
        set_={
            "failures": case(
                (CircuitBreaker.state == CLOSED, CircuitBreaker.failures + 1), else_=CircuitBreaker.failures
            ),
            "state": case((opens_now, OPEN), else_=CircuitBreaker.state),
            "opened_at": case((opens_now, now), else_=CircuitBreaker.opened_at),
            "open_until": case((opens_now, until), else_=CircuitBreaker.open_until),
            "updated_at": now,
        },
    )
    return str(session.execute(statement.returning(CircuitBreaker.state)).scalar_one())


def record_success(session: Session, target: str, *, probe: bool) -> bool:
    """A successful probe closes the breaker; in the closed state a success resets the count.

    Returns True when the breaker was closed by this call.
    """
    now = utcnow()
    if probe:
        closed = session.execute(
            update(CircuitBreaker)
            .where(CircuitBreaker.target == target, CircuitBreaker.state == HALF_OPEN)
            .values(state=CLOSED, failures=0, opened_at=None, open_until=None, probe_started_at=None, updated_at=now)
            .returning(CircuitBreaker.target)
            .execution_options(synchronize_session=False)
        ).first()
        return closed is not None
    session.execute(
        update(CircuitBreaker)
        .where(CircuitBreaker.target == target, CircuitBreaker.state == CLOSED, CircuitBreaker.failures != 0)
        .values(failures=0, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return False


def release_probe(session: Session, target: str) -> None:
    """The probe ended without a verdict (it was interrupted): let the next caller probe at once."""
    now = utcnow()
    session.execute(
        update(CircuitBreaker)
        .where(CircuitBreaker.target == target, CircuitBreaker.state == HALF_OPEN)
        .values(state=OPEN, open_until=now, probe_started_at=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )


def list_breakers(session: Session) -> list[CircuitBreaker]:
    return list(session.scalars(select(CircuitBreaker).order_by(CircuitBreaker.target)))


def breaker_view(breaker: CircuitBreaker) -> dict[str, Any]:
    """The public JSON shape of one breaker (metrics, dashboard)."""
    now = utcnow()
    open_until = as_utc(breaker.open_until)
    return {
        "target": breaker.target,
        "state": breaker.state,
        "failures": breaker.failures,
        "opened_at": iso(breaker.opened_at),
        "open_until": iso(breaker.open_until),
        "retry_in": max(0.0, (open_until - now).total_seconds()) if open_until else 0.0,
        "updated_at": iso(breaker.updated_at),
    }
