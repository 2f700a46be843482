"""The dashboard's server-side sessions and the sign-in form's one-time tokens.

Both are random tokens handed to the browser and stored here only as a SHA-256 hash (like API
keys: 32 random bytes cannot be guessed from their hash). Keeping them in the database means every
API replica knows every session, a session ends everywhere the moment it is deleted (sign-out,
expiry, a revoked key), and a sign-in token can be used once however many replicas there are.

Data-access functions take a ``Session`` and never commit: the caller owns the transaction.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Connection, ForeignKey, String, Table, bindparam, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from .base import Base, utcnow
from .security import ApiKey, KeyIdentity

__all__ = [
    "DashboardSession",
    "SignInToken",
    "start_session",
    "session_identity",
    "end_session",
    "issue_sign_in_token",
    "use_sign_in_token",
]

#: Expired rows removed per sign-in or form, so the tables stay small without a separate job.
PRUNE_BATCH = 100


class DashboardSession(Base):
    """A signed-in browser: the hash of its cookie, whose key it speaks for, until when."""

    __tablename__ = "dashboard_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class SignInToken(Base):
    """A sign-in form's CSRF token, deleted when a sign-in uses it (success or not)."""

    __tablename__ = "sign_in_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _prune(session: Session, model: type[DashboardSession] | type[SignInToken], now: datetime) -> None:
    expired = select(model.token_hash).where(model.expires_at <= now).limit(PRUNE_BATCH)
    session.execute(delete(model).where(model.token_hash.in_(expired.scalar_subquery())))


def start_session(session: Session, key_id: str, *, lifetime: timedelta) -> str:
    """A new session for ``key_id``; returns the cookie value (shown once, stored as a hash)."""
    now = utcnow()
    _prune(session, DashboardSession, now)
    token = secrets.token_urlsafe(32)
    session.add(DashboardSession(token_hash=_hash(token), key_id=key_id, created_at=now, expires_at=now + lifetime))
    return token


_sessions = cast(Table, DashboardSession.__table__)
_keys = cast(Table, ApiKey.__table__)
_IDENTITY = (
    select(_keys.c.id, _keys.c.tenant, _keys.c.scopes)
    .join(_sessions, _sessions.c.key_id == _keys.c.id)
    .where(
        _sessions.c.token_hash == bindparam("p_hash"),
        _sessions.c.expires_at > bindparam("p_now"),
        _keys.c.revoked_at.is_(None),
    )
)


def session_identity(connection: Connection, token: str) -> KeyIdentity | None:
    """The key an unexpired session speaks for, if the session exists and the key is not revoked."""
    row = connection.execute(_IDENTITY, {"p_hash": _hash(token), "p_now": utcnow()}).first()
    return KeyIdentity(row.id, row.tenant, list(row.scopes)) if row is not None else None


def end_session(session: Session, token: str) -> bool:
    """Delete the session whose cookie is ``token``; False if there was none."""
    result = session.execute(delete(DashboardSession).where(DashboardSession.token_hash == _hash(token)))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def issue_sign_in_token(session: Session, *, lifetime: timedelta) -> str:
    now = utcnow()
    _prune(session, SignInToken, now)
    token = secrets.token_urlsafe(24)
    session.add(SignInToken(token_hash=_hash(token), expires_at=now + lifetime))
    return token


def use_sign_in_token(session: Session, token: str) -> bool:
    """Consume ``token``: True once for a token that was issued and has not expired, then never again.

    One ``DELETE``: of two concurrent uses, the database lets only one delete the row.
    """
    result = session.execute(
        delete(SignInToken).where(SignInToken.token_hash == _hash(token), SignInToken.expires_at > utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
