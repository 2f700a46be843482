"""API keys (stored only as a SHA-256 hash) and idempotency keys of submissions.

Data-access functions take a ``Session`` and never commit: the caller owns the transaction.
A key is 32 random bytes, so a plain SHA-256 is enough to store it: it cannot be guessed or
brute-forced from the hash, and a lookup by hash compares it without a timing side channel.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Connection, ForeignKey, String, Table, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from .base import Base, JSONType, as_utc, utcnow

__all__ = [
    "KeyIdentity",
    "identify_key",
    "ApiKey",
    "IdempotencyKey",
    "SCOPES",
    "SYSTEM_TENANT",
    "NewKey",
    "Reservation",
    "create_key",
    "list_keys",
    "revoke_key",
    "get_key",
    "find_key",
    "hash_key",
    "reserve_idempotency_key",
    "IDEMPOTENCY_WINDOW",
]

#: ``admin`` includes every other scope.
SCOPES = ("submit", "read", "admin", "metrics")
#: Owner of work that no key started: webhook and scheduler events and their tasks.
SYSTEM_TENANT = "system"
KEY_PREFIX = "ilk_"
IDEMPOTENCY_WINDOW = timedelta(hours=24)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    scopes: Mapped[list[str]] = mapped_column(JSONType)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class IdempotencyKey(Base):
    """``Idempotency-Key`` of a submission: one task per (tenant, key), written with the task."""

    __tablename__ = "idempotency_keys"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    body_hash: Mapped[str] = mapped_column(String(64))
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class NewKey:
    """A freshly created key: ``key`` is shown once and never stored."""

    key: str
    record: ApiKey


def create_key(session: Session, *, tenant: str, scopes: list[str]) -> NewKey:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(unknown) or 'none'}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", tenant):
        raise ValueError("a tenant is a name of 1 to 64 letters, digits, '_', '.' or '-'")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(
        id=str(uuid.uuid4()), tenant=tenant, scopes=sorted(set(scopes)), hash=hash_key(key), created_at=utcnow()
    )
    session.add(record)
    return NewKey(key, record)


def list_keys(session: Session, *, tenant: str | None = None) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.created_at)
    if tenant is not None:
        query = query.where(ApiKey.tenant == tenant)
    return list(session.scalars(query))


def get_key(session: Session, key_id: str) -> ApiKey | None:
    return session.get(ApiKey, key_id) if len(key_id) <= 36 else None


def revoke_key(session: Session, key_id: str, *, tenant: str | None = None) -> bool:
    """Revoke a key (of ``tenant``, when given); False if there is no such unrevoked key."""
    if len(key_id) > 36:
        return False
    query = update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
    if tenant is not None:
        query = query.where(ApiKey.tenant == tenant)
    return bool(session.execute(query.values(revoked_at=utcnow())).rowcount)  # type: ignore[attr-defined]


def find_key(session: Session, key: str, *, touch: bool = True) -> ApiKey | None:
    """The unrevoked key whose hash matches ``key``; records its use."""
    record = session.scalars(select(ApiKey).where(ApiKey.hash == hash_key(key), ApiKey.revoked_at.is_(None))).first()
    if record is not None and touch:
        now = utcnow()
        last = as_utc(record.last_used_at)
        if last is None or now - last > timedelta(minutes=1):
            record.last_used_at = now  # at most once a minute: no write per request
    return record


@dataclass(frozen=True)
class KeyIdentity:
    """Who an API key speaks for: what authentication needs, read without the ORM."""

    id: str
    tenant: str
    scopes: list[str]


_keys = cast(Table, ApiKey.__table__)
_KEY_BY_HASH = select(_keys.c.id, _keys.c.tenant, _keys.c.scopes, _keys.c.last_used_at).where(
    _keys.c.hash == bindparam("p_hash"), _keys.c.revoked_at.is_(None)
)
_TOUCH_KEY = update(_keys).where(_keys.c.id == bindparam("p_id")).values(last_used_at=bindparam("p_now"))


def identify_key(connection: Connection, key: str) -> KeyIdentity | None:
    """:func:`find_key` for every request: one prepared lookup (and a write at most once a minute)."""
    row = connection.execute(_KEY_BY_HASH, {"p_hash": hash_key(key)}).first()
    if row is None:
        return None
    now = utcnow()
    last = as_utc(row.last_used_at)
    if last is None or now - last > timedelta(minutes=1):
        connection.execute(_TOUCH_KEY, {"p_id": row.id, "p_now": now})
    return KeyIdentity(row.id, row.tenant, list(row.scopes))


@dataclass(frozen=True)
class Reservation:
    """The outcome of claiming an idempotency key: ours to fill, or the earlier task's id."""

    won: bool
    task_id: str
    body_hash: str


def reserve_idempotency_key(session: Session, *, tenant: str, key: str, body_hash: str, task_id: str) -> Reservation:
    """Claim (tenant, key) for ``task_id`` in the caller's transaction, or return who has it.

    ``INSERT ... ON CONFLICT DO NOTHING``: a concurrent claimant whose transaction is still open
    makes this statement wait for it (the unique index), so the loser reads the winner's row.
    A claim older than the idempotency window is replaced.
    """
    now = utcnow()
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    values = {"tenant": tenant, "key": key, "body_hash": body_hash, "task_id": task_id, "created_at": now}
    statement = insert(IdempotencyKey).values(**values).on_conflict_do_nothing().returning(IdempotencyKey.key)
    if session.execute(statement).first() is not None:
        return Reservation(True, task_id, body_hash)
    existing = session.execute(
        select(IdempotencyKey).where(IdempotencyKey.tenant == tenant, IdempotencyKey.key == key).with_for_update()
    ).scalar_one()
    if as_utc(existing.created_at) < now - IDEMPOTENCY_WINDOW:  # type: ignore[operator]
        existing.body_hash, existing.task_id, existing.created_at = body_hash, task_id, now
        return Reservation(True, task_id, body_hash)
    return Reservation(False, existing.task_id, existing.body_hash)
