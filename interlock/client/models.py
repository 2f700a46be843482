"""The API's JSON answers as typed, frozen values; each keeps the JSON it came from as ``raw``.

Fields a newer API adds are kept in ``raw`` (and the client keeps working); a field the client
needs and the answer lacks is an :class:`~interlock.client.errors.InvalidResponse`. States are
the API's strings (``PENDING``, ``PROCESSING``, ``RETRY``, ``SUCCESS``, ``FAILURE``, ``CANCELLED``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "TERMINAL_STATES",
    "Submitted",
    "ChildTask",
    "TaskStatus",
    "TaskEvent",
    "Cancellation",
    "Checkpoint",
    "WorkflowHistory",
    "DeadLetter",
    "DeadLetterQueue",
    "QueueReplay",
    "Purged",
]

#: The states a task never leaves.
TERMINAL_STATES = frozenset({"SUCCESS", "FAILURE", "CANCELLED"})


def _raw() -> Any:
    """The answer as received: printed by the CLI, and where fields a newer API adds are found."""
    return field(default_factory=dict, repr=False, compare=False)


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class Submitted:
    """A task the API accepted (``202``), or the earlier one an ``Idempotency-Key`` names (``replayed``)."""

    task_id: str
    status_url: str
    replayed: bool = False
    raw: Mapping[str, Any] = _raw()

    @classmethod
    def from_json(cls, body: Mapping[str, Any], *, replayed: bool = False) -> Submitted:
        task_id = str(body["task_id"])
        return cls(task_id, str(body.get("status_url") or f"/agent/status/{task_id}"), replayed, body)


@dataclass(frozen=True)
class ChildTask:
    task_id: str
    agent: str
    state: str
    progress: int


@dataclass(frozen=True)
class TaskStatus:
    """``GET /agent/status/{id}``: where the task is, and its result or error once it ended."""

    task_id: str
    state: str
    progress: int
    workflow: str | None = None
    queue: str | None = None
    current_step: str | None = None
    attempts: int = 0
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None
    result: Any = None
    error: str | None = None
    children: tuple[ChildTask, ...] = ()
    raw: Mapping[str, Any] = _raw()

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> TaskStatus:
        return cls(
            task_id=str(body["task_id"]),
            state=str(body["state"]),
            progress=int(body.get("progress") or 0),
            workflow=_optional_str(body.get("workflow")),
            queue=_optional_str(body.get("queue")),
            current_step=_optional_str(body.get("current_step")),
            attempts=int(body.get("attempts") or 0),
            created_at=_time(body.get("created_at")),
            started_at=_time(body.get("started_at")),
            finished_at=_time(body.get("finished_at")),
            updated_at=_time(body.get("updated_at")),
            result=body.get("result"),
            error=_optional_str(body.get("error")),
            children=tuple(
                ChildTask(str(c["task_id"]), str(c.get("agent") or ""), str(c["state"]), int(c.get("progress") or 0))
                for c in body.get("children") or ()
            ),
            raw=body,
        )


@dataclass(frozen=True)
class TaskEvent:
    """One event of ``GET /agent/stream/{id}``: its id (for ``Last-Event-ID``), kind and data."""

    id: int
    kind: str
    state: str
    progress: int
    step: str | None = None
    data: Any = None
    created_at: datetime | None = None

    @property
    def finished(self) -> bool:
        """The task's terminal state event: the stream's last."""
        return self.kind == "state" and self.state in TERMINAL_STATES

    @classmethod
    def from_sse(cls, event_id: str, kind: str, body: Mapping[str, Any]) -> TaskEvent:
        return cls(
            id=int(event_id),
            kind=kind,
            state=str(body["state"]),
            progress=int(body.get("progress") or 0),
            step=_optional_str(body.get("step")),
            data=body.get("data"),
            created_at=_time(body.get("created_at")),
        )


@dataclass(frozen=True)
class Cancellation:
    """``POST /agent/cancel/{id}``: ``CANCELLED`` (it had not started) or ``CANCELLING`` (it stops within a second)."""

    task_id: str
    state: str
    children_cancelled: tuple[str, ...] = ()
    raw: Mapping[str, Any] = _raw()

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Cancellation:
        children = tuple(str(c) for c in body.get("children_cancelled") or ())
        return cls(str(body["task_id"]), str(body["state"]), children, body)


@dataclass(frozen=True)
class Checkpoint:
    stage: str
    state: str
    duration_ms: int | None = None
    error: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class WorkflowHistory:
    """``GET /agent/history/{id}``: a checkpointed workflow's stages, oldest first."""

    workflow_id: str
    workflow: str
    state: str
    checkpoints: tuple[Checkpoint, ...] = ()
    raw: Mapping[str, Any] = _raw()

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> WorkflowHistory:
        checkpoints = tuple(
            Checkpoint(
                stage=str(c["stage"]),
                state=str(c["state"]),
                duration_ms=c.get("duration_ms"),
                error=_optional_str(c.get("error")),
                created_at=_time(c.get("created_at")),
                updated_at=_time(c.get("updated_at")),
            )
            for c in body.get("checkpoints") or ()
        )
        return cls(str(body["workflow_id"]), str(body["workflow"]), str(body["state"]), checkpoints, body)


@dataclass(frozen=True)
class DeadLetter:
    task_id: str | None
    actor: str | None
    attempts: int | None = None
    state: str | None = None
    error: str | None = None
    dead_at: datetime | None = None


@dataclass(frozen=True)
class DeadLetterQueue:
    """One work queue's dead letters (``GET /dlq``)."""

    queue: str
    messages: tuple[DeadLetter, ...] = ()
    raw: Mapping[str, Any] = _raw()

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> DeadLetterQueue:
        messages = tuple(
            DeadLetter(
                task_id=_optional_str(m.get("task_id")),
                actor=_optional_str(m.get("actor")),
                attempts=m.get("attempts"),
                state=_optional_str(m.get("state")),
                error=_optional_str(m.get("error")),
                dead_at=_time(m.get("dead_at")),
            )
            for m in body.get("messages") or ()
        )
        return cls(str(body["queue"]), messages, body)


@dataclass(frozen=True)
class QueueReplay:
    """``POST /dlq/replay?queue=Q``: the tasks re-enqueued, and those whose state did not allow it."""

    queue: str
    replayed: tuple[str, ...] = ()
    refused: tuple[str | None, ...] = ()
    raw: Mapping[str, Any] = _raw()

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> QueueReplay:
        replayed = tuple(str(t) for t in body.get("replayed") or ())
        refused = tuple(_optional_str(t) for t in body.get("refused") or ())
        return cls(str(body["queue"]), replayed, refused, body)


@dataclass(frozen=True)
class Purged:
    """``DELETE /dlq/{id}`` or ``DELETE /dlq?queue=Q``: how many dead letters were dropped."""

    queue: str
    purged: int
    task_ids: tuple[str | None, ...] = ()
    raw: Mapping[str, Any] = _raw()

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Purged:
        ids = body.get("task_ids")
        task_ids = tuple(_optional_str(t) for t in ids) if ids is not None else (_optional_str(body.get("task_id")),)
        return cls(str(body["queue"]), int(body["purged"]), task_ids, body)
