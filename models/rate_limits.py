"""Counters behind Dramatiq's rate limiters and barriers, and sliding windows for agent limits.

Both are shared by every worker process on every host through the database.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base

__all__ = ["RateLimitCounter", "RateWindow"]


class RateLimitCounter(Base):
    """A Dramatiq rate-limiter key: an integer with an expiry."""

    __tablename__ = "rate_limit_counters"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class RateWindow(Base):
    """A sliding-window log: the recent ``[unix_time, weight]`` admissions of one limit key."""

    __tablename__ = "rate_windows"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    entries: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]
