"""Events and what keeps them honest: webhook deliveries seen, schedule slots claimed, sources watched.

Data-access functions take a ``Session`` and never commit: the caller owns the transaction.
Uniqueness is the database's job: a webhook delivery id and a (job, slot) pair are primary keys,
claimed with ``INSERT ... ON CONFLICT DO NOTHING``, so concurrent processes cannot both win.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Index, String, Text, delete, inspect, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from .base import Base, JSONType, utcnow

__all__ = [
    "Event",
    "WebhookDelivery",
    "ScheduleSlot",
    "MonitorState",
    "add_event",
    "get_event",
    "list_events",
    "claim_delivery",
    "delivery_event_id",
    "release_delivery",
    "claim_slot",
    "record_slot_outcome",
    "get_monitor_state",
    "save_monitor_state",
    "purge_events",
    "purge_deliveries",
    "purge_slots",
]


class Event(Base):
    """One published event. ``task_ids`` are the tasks it started when it was published."""

    __tablename__ = "events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    type: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(128))
    data: Mapped[dict[str, Any]]
    task_ids: Mapped[list[str]] = mapped_column(JSONType)
    published_by: Mapped[str | None] = mapped_column(String(36))
    #: The publishing key's tenant; webhooks and the scheduler publish as the system.
    tenant: Mapped[str] = mapped_column(String(64), default="system", server_default="system", index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)

    __table_args__ = (Index("ix_events_type_created_at", "type", "created_at"),)


class WebhookDelivery(Base):
    """A webhook delivery already processed: (provider, delivery id) is the dedupe key.

    A key recorded with a window (a hash of a body, for providers that sign nothing else)
    stops counting at ``expires_at``; one without counts until the retention cleanup.
    """

    __tablename__ = "webhook_deliveries"

    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36))
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    expires_at: Mapped[datetime | None] = mapped_column(index=True)


class ScheduleSlot(Base):
    """A scheduled job's fire time, claimed by exactly one scheduler."""

    __tablename__ = "schedule_slots"

    job: Mapped[str] = mapped_column(String(64), primary_key=True)
    slot: Mapped[datetime] = mapped_column(primary_key=True)
    claimed_by: Mapped[str] = mapped_column(String(128))
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    task_id: Mapped[str | None] = mapped_column(String(36))
    event_id: Mapped[str | None] = mapped_column(String(36))


class MonitorState(Base):
    """What the monitor last saw of one source (a URL or a SQL query), keyed by a hash of it."""

    __tablename__ = "monitor_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    etag: Mapped[str | None] = mapped_column(String(512))
    last_modified: Mapped[str | None] = mapped_column(String(128))
    sha256: Mapped[str | None] = mapped_column(String(64))
    checked_at: Mapped[datetime] = mapped_column(default=utcnow)
    changed_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)


def _insert_ignore(session: Session, model: type[Base], values: dict[str, Any]) -> bool:
    """Insert a row unless its key exists; True if this call inserted it."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    key = inspect(model).primary_key[0]
    # RETURNING, not rowcount: SQLAlchemy does not report a rowcount for this INSERT.
    statement = insert(model).values(**values).on_conflict_do_nothing().returning(key)
    return session.execute(statement).first() is not None


# -- events ---------------------------------------------------------------------------------


def add_event(
    session: Session,
    *,
    event_id: str,
    event_type: str,
    source: str,
    data: dict[str, Any],
    expires_at: datetime,
    task_ids: list[str],
    published_by: str | None = None,
    tenant: str = "system",
) -> Event:
    event = Event(
        tenant=tenant,
        id=event_id,
        type=event_type,
        source=source,
        data=data,
        task_ids=task_ids,
        published_by=published_by,
        created_at=utcnow(),
        expires_at=expires_at,
    )
    session.add(event)
    return event


def get_event(session: Session, event_id: str) -> Event | None:
    return session.get(Event, event_id)


def list_events(
    session: Session,
    *,
    event_type: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
    tenants: Collection[str] | None = None,
) -> list[Event]:
    """Events, newest first, optionally of one type, created at or after ``since``, of ``tenants``."""
    query = select(Event)
    if tenants is not None:
        query = query.where(Event.tenant.in_(tenants))
    if event_type is not None:
        query = query.where(Event.type == event_type)
    if since is not None:
        query = query.where(Event.created_at >= since)
    return list(session.scalars(query.order_by(Event.created_at.desc(), Event.id).limit(limit)))


# -- webhook deliveries ---------------------------------------------------------------------


def claim_delivery(
    session: Session, *, provider: str, delivery_id: str, event_id: str, window: timedelta | None = None
) -> bool:
    """Record a delivery; False if it was recorded before (a redelivery, a retry or a replay).

    With ``window`` the record counts for that long: a claim after it expired takes the key over.
    A concurrent claim of the same delivery waits on the key until the first transaction ends.
    """
    now = utcnow()
    values = {
        "provider": provider,
        "delivery_id": delivery_id,
        "event_id": event_id,
        "received_at": now,
        "expires_at": now + window if window is not None else None,
    }
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert(WebhookDelivery) if dialect == "postgresql" else sqlite.insert(WebhookDelivery)
    statement = insert.values(**values).on_conflict_do_update(
        index_elements=[WebhookDelivery.provider, WebhookDelivery.delivery_id],
        set_={"event_id": event_id, "received_at": now, "expires_at": values["expires_at"]},
        where=WebhookDelivery.expires_at < now,  # only an expired record is taken over
    )
    # RETURNING, not rowcount: SQLAlchemy does not report a rowcount for this INSERT.
    return session.execute(statement.returning(WebhookDelivery.provider)).first() is not None


def delivery_event_id(session: Session, *, provider: str, delivery_id: str) -> str | None:
    row = session.get(WebhookDelivery, (provider, delivery_id))
    return row.event_id if row is not None else None


def release_delivery(session: Session, *, provider: str, delivery_id: str) -> None:
    """Forget a delivery whose event could not be published, so that its retry is processed."""
    session.execute(
        delete(WebhookDelivery).where(WebhookDelivery.provider == provider, WebhookDelivery.delivery_id == delivery_id)
    )


# -- schedule slots -------------------------------------------------------------------------


def claim_slot(session: Session, *, job: str, slot: datetime, owner: str) -> bool:
    """Claim one fire time of a job; only one claimant across all schedulers gets True."""
    return _insert_ignore(
        session, ScheduleSlot, {"job": job, "slot": slot, "claimed_by": owner, "claimed_at": utcnow()}
    )


def record_slot_outcome(
    session: Session, *, job: str, slot: datetime, task_id: str | None, event_id: str | None
) -> None:
    row = session.get(ScheduleSlot, (job, slot))
    if row is not None:
        row.task_id = task_id
        row.event_id = event_id


# -- monitor state --------------------------------------------------------------------------


def get_monitor_state(session: Session, key: str) -> MonitorState | None:
    return session.get(MonitorState, key)


def save_monitor_state(
    session: Session,
    *,
    key: str,
    source: str,
    etag: str | None,
    last_modified: str | None,
    sha256: str | None,
    changed: bool,
    error: str | None = None,
) -> None:
    now = utcnow()
    row = session.get(MonitorState, key)
    if row is None:
        row = MonitorState(key=key, source=source)
        session.add(row)
    if error is None:
        row.etag, row.last_modified, row.sha256 = etag, last_modified, sha256
    row.checked_at = now
    row.error = error
    if changed:
        row.changed_at = now


# -- retention ------------------------------------------------------------------------------


def purge_events(session: Session, *, created_before: datetime, limit: int = 5000) -> int:
    """Delete up to ``limit`` events that expired or were created before ``created_before``."""
    expired = or_(Event.expires_at < utcnow(), Event.created_at < created_before)
    ids = select(Event.id).where(expired).limit(limit).scalar_subquery()
    return int(session.execute(delete(Event).where(Event.id.in_(ids))).rowcount)  # type: ignore[attr-defined]


def purge_deliveries(session: Session, *, received_before: datetime) -> int:
    """Delete delivery records received before ``received_before`` or whose window has passed."""
    statement = delete(WebhookDelivery).where(
        or_(WebhookDelivery.received_at < received_before, WebhookDelivery.expires_at < utcnow())
    )
    return int(session.execute(statement).rowcount)  # type: ignore[attr-defined]


def purge_slots(session: Session, *, claimed_before: datetime) -> int:
    statement = delete(ScheduleSlot).where(ScheduleSlot.claimed_at < claimed_before)
    return int(session.execute(statement).rowcount)  # type: ignore[attr-defined]
