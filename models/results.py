"""Dramatiq actor results, kept in the database (Dramatiq's result-backend interface sits on top)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String, delete
from sqlalchemy.orm import Mapped, Session, mapped_column

from .base import Base, utcnow

__all__ = ["ActorResult", "purge_expired_results"]


class ActorResult(Base):
    __tablename__ = "actor_results"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[dict[str, Any]]
    expires_at: Mapped[datetime] = mapped_column(index=True)


def purge_expired_results(session: Session) -> int:
    deleted = session.execute(delete(ActorResult).where(ActorResult.expires_at < utcnow()))
    return int(deleted.rowcount)  # type: ignore[attr-defined]
