"""The dashboard overview's charts, read from the database: throughput, durations, queue depths, tokens.

Each function takes a ``Session`` and a :class:`Window` (a time range cut into equal slots) and
answers with one grouped query (two for throughput), so a chart costs the same with ten tasks or
a hundred thousand. Times are bucketed in SQL as seconds since the epoch (UTC), which both
PostgreSQL and SQLite (``interlock dev``) can compute; the browser shows them in its own time zone.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVarTuple

from sqlalchemy import BigInteger, ColumnElement, Integer, Select, cast, extract, func, select
from sqlalchemy.orm import Session

from .base import as_utc
from .queue_samples import QueueSample
from .task_calls import LLM, TaskCall
from .tasks import TERMINAL_STATES, Task, TaskState

__all__ = [
    "Window",
    "throughput",
    "duration_percentiles",
    "queue_depth_history",
    "token_usage",
    "active_counts",
    "PERCENTILES",
]

Ts = TypeVarTuple("Ts")

#: The duration percentiles the overview charts.
PERCENTILES = (0.5, 0.95, 0.99)


@dataclass(frozen=True)
class Window:
    """``[since, until)`` cut into slots of ``step`` seconds (aligned to the epoch)."""

    since: datetime
    until: datetime
    step: int

    @classmethod
    def ending(cls, until: datetime, *, seconds: float, points: int = 120, least: int = 60) -> Window:
        """The last ``seconds`` before ``until``, in at most about ``points`` slots of a round length."""
        step = next((s for s in NICE_STEPS if s >= max(least, seconds / points)), NICE_STEPS[-1])
        return cls(until - timedelta(seconds=seconds), until, step)

    def slots(self) -> list[int]:
        """The start of every slot, in seconds since the epoch."""
        first = int(self.since.timestamp()) // self.step * self.step
        return list(range(first, int(self.until.timestamp()) + 1, self.step))


#: Slot lengths a window picks from (seconds): a minute up to a day.
NICE_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def _slot(session: Session, column: Any, step: int) -> ColumnElement[int]:
    """``column`` (a timestamp) as the start of its slot, in seconds since the epoch."""
    if session.get_bind().dialect.name == "postgresql":
        seconds: ColumnElement[int] = cast(func.floor(extract("epoch", column)), BigInteger)
    else:
        seconds = cast(func.strftime("%s", column), Integer)
    return (seconds // step) * step


def _visible(query: Select[*Ts], tenants: Collection[str] | None) -> Select[*Ts]:
    return query if tenants is None else query.where(Task.tenant.in_(list(tenants)))


def throughput(session: Session, window: Window, *, tenants: Collection[str] | None) -> list[dict[str, int]]:
    """Tasks submitted, succeeded, failed and cancelled per slot (every slot, zeros included)."""
    rows: dict[int, dict[str, int]] = {
        t: {"t": t, "submitted": 0, "succeeded": 0, "failed": 0, "cancelled": 0} for t in window.slots()
    }
    created = _slot(session, Task.created_at, window.step)
    submitted = _visible(
        select(created, func.count())
        .where(Task.created_at >= window.since, Task.created_at < window.until)
        .group_by(created),
        tenants,
    )
    for slot, count in session.execute(submitted):
        rows.setdefault(int(slot), {"t": int(slot), "submitted": 0, "succeeded": 0, "failed": 0, "cancelled": 0})
        rows[int(slot)]["submitted"] = int(count)
    finished = _slot(session, Task.finished_at, window.step)
    ended = _visible(
        select(finished, Task.state, func.count())
        .where(Task.finished_at >= window.since, Task.finished_at < window.until, Task.state.in_(TERMINAL_STATES))
        .group_by(finished, Task.state),
        tenants,
    )
    names = {TaskState.SUCCESS: "succeeded", TaskState.FAILURE: "failed", TaskState.CANCELLED: "cancelled"}
    for slot, state, count in session.execute(ended):
        row = rows.setdefault(int(slot), {"t": int(slot), "submitted": 0, "succeeded": 0, "failed": 0, "cancelled": 0})
        row[names[TaskState(state)]] = int(count)
    return [rows[t] for t in sorted(rows)]


def duration_percentiles(session: Session, window: Window, *, tenants: Collection[str] | None) -> list[dict[str, Any]]:
    """Per workflow, of the tasks that ended in the window: how many, and the percentiles of their
    duration from submission to end (what a caller waits, queue and retries included), in seconds.
    """
    ended = (Task.finished_at >= window.since, Task.finished_at < window.until, Task.state.in_(TERMINAL_STATES))
    if session.get_bind().dialect.name == "postgresql":
        seconds = extract("epoch", Task.finished_at - Task.created_at)
        columns = [func.percentile_cont(p).within_group(seconds) for p in PERCENTILES]
        query = _visible(select(Task.workflow, func.count(), *columns).where(*ended).group_by(Task.workflow), tenants)
        return [
            {"workflow": workflow, "count": int(count), **_named([float(v) for v in values])}
            for workflow, count, *values in session.execute(query.order_by(Task.workflow))
        ]
    # SQLite (``interlock dev``) has no percentile function: the durations are few there.
    durations: dict[str, list[float]] = defaultdict(list)
    for workflow, created, finished in session.execute(
        _visible(select(Task.workflow, Task.created_at, Task.finished_at).where(*ended), tenants)
    ):
        start, end = as_utc(created), as_utc(finished)
        if start is not None and end is not None:
            durations[workflow].append((end - start).total_seconds())
    return [
        {"workflow": workflow, "count": len(values), **_named(_percentiles(values))}
        for workflow, values in sorted(durations.items())
    ]


def _named(values: list[float]) -> dict[str, float]:
    return {f"p{round(p * 100)}": round(v, 3) for p, v in zip(PERCENTILES, values, strict=True)}


def _percentiles(values: list[float]) -> list[float]:
    """Linear interpolation between ranks, as PostgreSQL's ``percentile_cont``."""
    if len(values) == 1:
        return [values[0]] * len(PERCENTILES)
    cuts = statistics.quantiles(values, n=100, method="inclusive")  # cuts[i]: percentile i + 1
    return [cuts[round(p * 100) - 1] for p in PERCENTILES]


def queue_depth_history(session: Session, window: Window) -> dict[str, list[dict[str, int]]]:
    """Per queue, the deepest sample in each slot (ready, delayed, dead), oldest first. Operators only:
    queues hold every tenant's work.
    """
    slot = _slot(session, QueueSample.at, window.step)
    query = (
        select(
            QueueSample.queue,
            slot,
            func.max(QueueSample.ready),
            func.max(QueueSample.delayed),
            func.max(QueueSample.dead),
        )
        .where(QueueSample.at >= window.since, QueueSample.at < window.until)
        .group_by(QueueSample.queue, slot)
        .order_by(QueueSample.queue, slot)
    )
    history: dict[str, list[dict[str, int]]] = defaultdict(list)
    for queue, t, ready, delayed, dead in session.execute(query):
        history[queue].append({"t": int(t), "ready": int(ready), "delayed": int(delayed), "dead": int(dead)})
    return dict(history)


def token_usage(session: Session, window: Window, *, tenants: Collection[str] | None) -> list[dict[str, Any]]:
    """LLM calls and tokens per slot and model (by when each call started)."""
    slot = _slot(session, TaskCall.started_at, window.step)
    query = (
        select(
            slot,
            TaskCall.name,
            func.count(),
            func.coalesce(func.sum(TaskCall.prompt_tokens), 0),
            func.coalesce(func.sum(TaskCall.completion_tokens), 0),
        )
        .where(TaskCall.kind == LLM, TaskCall.started_at >= window.since, TaskCall.started_at < window.until)
        .group_by(slot, TaskCall.name)
        .order_by(slot, TaskCall.name)
    )
    if tenants is not None:
        query = query.join(Task, Task.id == TaskCall.task_id).where(Task.tenant.in_(list(tenants)))
    return [
        {"t": int(t), "model": model, "calls": int(n), "prompt_tokens": int(p), "completion_tokens": int(c)}
        for t, model, n, p, c in session.execute(query)
    ]


def active_counts(session: Session, *, tenants: Collection[str] | None) -> dict[str, int]:
    """How many tasks wait (PENDING, RETRY) and run (PROCESSING) now, by state."""
    query = _visible(
        select(Task.state, func.count())
        .where(Task.state.in_([TaskState.PENDING, TaskState.RETRY, TaskState.PROCESSING]))
        .group_by(Task.state),
        tenants,
    )
    counts = {state.value: 0 for state in (TaskState.PENDING, TaskState.RETRY, TaskState.PROCESSING)}
    counts.update({state: int(count) for state, count in session.execute(query)})
    return counts
