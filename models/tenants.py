"""Per-tenant limits: a concurrency cap and a monthly token budget, with the tokens used per month.

Data-access functions take a ``Session`` and never commit: the caller owns the transaction.
A tenant without a row has no limits.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, cast

from sqlalchemy import BigInteger, Insert, Integer, Select, String, Table, and_, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, Session, mapped_column

from .base import Base, utcnow
from .tasks import Task, TaskState

__all__ = [
    "TenantLimits",
    "TenantUsage",
    "set_limits",
    "get_limits",
    "list_limits",
    "add_usage",
    "tokens_used",
    "budget_exhausted",
    "may_start",
    "month_of",
]


class TenantLimits(Base):
    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: Tasks of this tenant running at once (holding a lease); ``None``: no cap.
    max_concurrency: Mapped[int | None] = mapped_column(Integer)
    #: LLM tokens per calendar month (UTC); ``None``: no budget.
    monthly_tokens: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TenantUsage(Base):
    __tablename__ = "tenant_usage"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)  # YYYY-MM (UTC)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)


def month_of(moment: datetime | None = None) -> str:
    return (moment or utcnow()).strftime("%Y-%m")


def set_limits(session: Session, name: str, *, max_concurrency: int | None, monthly_tokens: int | None) -> TenantLimits:
    limits = session.get(TenantLimits, name)
    if limits is None:
        limits = TenantLimits(name=name)
        session.add(limits)
    limits.max_concurrency = max_concurrency
    limits.monthly_tokens = monthly_tokens
    limits.updated_at = utcnow()
    return limits


def get_limits(session: Session, name: str) -> TenantLimits | None:
    return session.get(TenantLimits, name)


def list_limits(session: Session) -> list[dict[str, Any]]:
    month = month_of()
    rows = []
    for limits in session.scalars(select(TenantLimits).order_by(TenantLimits.name)):
        rows.append(
            {
                "tenant": limits.name,
                "max_concurrency": limits.max_concurrency,
                "monthly_tokens": limits.monthly_tokens,
                "month": month,
                "tokens_used": tokens_used(session, limits.name, month),
            }
        )
    return rows


def add_usage(session: Session, tenant: str, tokens: int, *, month: str | None = None) -> None:
    """Count ``tokens`` against this month's (or ``month``'s) budget (one atomic upsert)."""
    if tokens <= 0:
        return
    statement = _usage_upsert(session.get_bind().dialect.name)
    session.execute(statement, {"p_tenant": tenant, "p_month": month or month_of(), "p_tokens": tokens})


@functools.cache
def _usage_upsert(dialect: str) -> Insert:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    usage = cast(Table, TenantUsage.__table__)
    statement = insert(usage).values(
        tenant=bindparam("p_tenant"), month=bindparam("p_month"), tokens=bindparam("p_tokens")
    )
    return statement.on_conflict_do_update(
        index_elements=["tenant", "month"], set_={"tokens": usage.c.tokens + statement.excluded.tokens}
    )


def tokens_used(session: Session, tenant: str, month: str | None = None) -> int:
    used = session.scalar(
        select(TenantUsage.tokens).where(TenantUsage.tenant == tenant, TenantUsage.month == (month or month_of()))
    )
    return int(used or 0)


def budget_exhausted(session: Session | Connection, tenant: str) -> str | None:
    """Why ``tenant`` may spend no more tokens this month, or ``None`` while it may.

    Asked before every LLM call: one prepared statement (the budget with this month's usage), no ORM objects.
    """
    month = month_of()
    row = session.execute(_BUDGET, {"p_tenant": tenant, "p_month": month}).first()
    if row is None or row.monthly_tokens is None:
        return None
    used, budget = int(row.used), int(row.monthly_tokens)
    if used < budget:
        return None
    return (
        f"tenant {tenant!r} has used its monthly token budget ({used} of {budget} tokens "
        f"in {month}); raise it with `interlock tenants set {tenant} --monthly-tokens N` or wait for next month"
    )


def _budget_statement() -> Select[tuple[int | None, int]]:
    limits, usage = cast(Table, TenantLimits.__table__), cast(Table, TenantUsage.__table__)
    this_month = and_(usage.c.tenant == limits.c.name, usage.c.month == bindparam("p_month"))
    return (
        select(limits.c.monthly_tokens, func.coalesce(usage.c.tokens, 0).label("used"))
        .select_from(limits.outerjoin(usage, this_month))
        .where(limits.c.name == bindparam("p_tenant"))
    )


_BUDGET = _budget_statement()


def may_start(session: Session, task_id: str) -> bool:
    """Whether the task's tenant is under its concurrency cap; call in the claiming transaction.

    The tenant's row is locked, so two workers cannot both take the last slot.
    """
    # One round trip in the common case (no cap): the tenant's limits row, found through the task.
    row = session.execute(
        select(TenantLimits.name, TenantLimits.max_concurrency)
        .where(TenantLimits.name == select(Task.tenant).where(Task.id == task_id).scalar_subquery())
        .with_for_update()
    ).first()
    if row is None or row.max_concurrency is None:
        return True
    tenant, cap = row.name, row.max_concurrency
    running = session.scalar(
        select(func.count())
        .select_from(Task)
        .where(
            Task.tenant == tenant,
            Task.id != task_id,
            Task.state == TaskState.PROCESSING,
            Task.lease_owner.is_not(None),
            Task.lease_expires_at > utcnow(),
        )
    )
    return bool(int(running or 0) < cap)
