"""The LLM and tool calls a task made: one row per call, for its timeline, its tokens and its cost.

A worker writes a row when a call begins (the step it runs in, when) and completes it when the call
ends (answered, failed or abandoned): how long it took and, for an LLM call, the tokens the provider
counted. The
task's page draws them in its waterfall; the overview adds up tokens per hour. Rows go with their
task (``ON DELETE CASCADE``, and :mod:`models.retention` deletes them explicitly for SQLite).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import ForeignKey, Index, Integer, String, Table, Text, func, insert, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from .base import Base, BigIntId

__all__ = [
    "TaskCall",
    "CallUsage",
    "record_call",
    "start_call",
    "finish_call",
    "calls_of",
    "usage_by_task",
    "combined",
    "LLM",
    "TOOL",
]

#: The kinds of call.
LLM = "llm"
TOOL = "tool"
#: How many calls of one task a page shows at most.
MAX_CALLS = 2000


class TaskCall(Base):
    __tablename__ = "task_calls"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    #: The durable step it ran in (``ctx.step``), ``None`` outside one.
    step: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    #: The model asked (an LLM call) or the tool's name.
    name: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(index=True)
    #: ``None`` while the call is under way (or when its process died during it).
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    #: Why it failed or was abandoned (a time limit, a cancellation); ``None`` when it answered.
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_task_calls_task_id_id", "task_id", "id"),)


_CALLS = cast(Table, TaskCall.__table__)
_INSERT = insert(_CALLS)


def record_call(
    session: Session,
    *,
    task_id: str,
    attempt: int,
    step: str | None,
    kind: str,
    name: str,
    started_at: datetime,
    duration_ms: int,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    error: str | None = None,
) -> None:
    """Insert one call (a single INSERT: it may run on an autocommit connection)."""
    session.execute(
        _INSERT,
        {
            "task_id": task_id,
            "attempt": attempt,
            "step": step,
            "kind": kind,
            "name": name[:128],
            "started_at": started_at,
            "duration_ms": max(0, duration_ms),
            "prompt_tokens": max(0, prompt_tokens),
            "completion_tokens": max(0, completion_tokens),
            "error": error,
        },
    )


def start_call(
    session: Session, *, task_id: str, attempt: int, step: str | None, kind: str, name: str, started_at: datetime
) -> int:
    """Insert a call that has just begun (its page shows it in flight); returns its id for :func:`finish_call`."""
    values = {"task_id": task_id, "attempt": attempt, "step": step, "kind": kind, "name": name[:128]}
    statement = _INSERT.values(**values, started_at=started_at, prompt_tokens=0, completion_tokens=0)
    return int(session.execute(statement.returning(_CALLS.c.id)).scalar_one())


def finish_call(
    session: Session,
    call_id: int,
    *,
    duration_ms: int,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    error: str | None = None,
) -> None:
    """Record how a call begun with :func:`start_call` ended (one UPDATE)."""
    session.execute(
        update(_CALLS)
        .where(_CALLS.c.id == call_id)
        .values(
            duration_ms=max(0, duration_ms),
            prompt_tokens=max(0, prompt_tokens),
            completion_tokens=max(0, completion_tokens),
            error=error,
        )
    )


def calls_of(session: Session, task_id: str, *, limit: int = MAX_CALLS) -> list[TaskCall]:
    """The task's calls in the order they ended."""
    query = select(TaskCall).where(TaskCall.task_id == task_id).order_by(TaskCall.id).limit(limit)
    return list(session.scalars(query))


@dataclass(frozen=True)
class CallUsage:
    """What one task's LLM calls to one model add up to."""

    calls: int
    prompt_tokens: int
    completion_tokens: int


def usage_by_task(session: Session, task_ids: Collection[str]) -> dict[str, dict[str, CallUsage]]:
    """LLM calls and tokens of each of ``task_ids`` by model (one grouped query, however many tasks)."""
    if not task_ids:
        return {}
    rows = session.execute(
        select(
            TaskCall.task_id,
            TaskCall.name,
            func.count(),
            func.coalesce(func.sum(TaskCall.prompt_tokens), 0),
            func.coalesce(func.sum(TaskCall.completion_tokens), 0),
        )
        .where(TaskCall.task_id.in_(list(task_ids)), TaskCall.kind == LLM)
        .group_by(TaskCall.task_id, TaskCall.name)
    )
    usage: dict[str, dict[str, CallUsage]] = {}
    for task_id, model, n, p, c in rows:
        usage.setdefault(task_id, {})[model] = CallUsage(int(n), int(p), int(c))
    return usage


def combined(usages: Iterable[Mapping[str, CallUsage]]) -> dict[str, CallUsage]:
    """Several tasks' usage added up, by model (a task and everything below it)."""
    total: dict[str, CallUsage] = {}
    for usage in usages:
        for model, used in usage.items():
            before = total.get(model, CallUsage(0, 0, 0))
            total[model] = CallUsage(
                before.calls + used.calls,
                before.prompt_tokens + used.prompt_tokens,
                before.completion_tokens + used.completion_tokens,
            )
    return total
