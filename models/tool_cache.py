"""Cached tool results: one row per (tool, digest of its canonical arguments), until it expires.

Data-access functions take a ``Session`` and never commit: the caller owns the transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from .base import Base, utcnow

__all__ = ["ToolCacheEntry", "get_cached", "store_cached", "purge_expired_cache"]


class ToolCacheEntry(Base):
    __tablename__ = "tool_cache"

    tool: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


def get_cached(session: Session, tool: str, key: str) -> dict[str, Any] | None:
    """The stored result, unless it has expired."""
    return session.scalar(
        select(ToolCacheEntry.value).where(
            ToolCacheEntry.tool == tool, ToolCacheEntry.key == key, ToolCacheEntry.expires_at > utcnow()
        )
    )


def store_cached(session: Session, tool: str, key: str, value: dict[str, Any], *, expires_at: datetime) -> None:
    """Insert or replace the entry (two workers may race on the same arguments; last one wins)."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    now = utcnow()
    statement = insert(ToolCacheEntry).values(tool=tool, key=key, value=value, created_at=now, expires_at=expires_at)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[ToolCacheEntry.tool, ToolCacheEntry.key],
            set_={"value": statement.excluded.value, "created_at": now, "expires_at": expires_at},
        )
    )


def purge_expired_cache(session: Session) -> int:
    """Delete expired entries (the cleanup job); returns how many went."""
    result = session.execute(delete(ToolCacheEntry).where(ToolCacheEntry.expires_at <= utcnow()))
    return int(result.rowcount)  # type: ignore[attr-defined]
