"""Cancelling tasks: a queued task never starts, a running one stops waiting and ends.

Cancellation is a state in the task row, never a message: the claim refuses terminal states, so
a queued (or parked) message of a cancelled task is skipped wherever it is delivered. A running
task's worker sees the row say CANCELLED within about a second (its maintenance thread looks for
the tasks it runs, ``actors.middleware.maintenance.heartbeat``) and abandons the LLM or tool call the task
waits on; a workflow that waits on nothing sees it at its next ``ctx.progress()``. Either way it
raises ``TaskCancelled``. Children of a cancelled workflow are cancelled with it, recursively, in
the same transaction, running ones the same way.

A cancellation changes several rows (the task, its unfinished descendants, its parent's wake-up
flag), so it collects their ids first and locks them all in id order before changing any
(``models.task_transitions.lock_in_order``): a child finishing at that moment (which locks itself
and its parent the same way) waits for it or it for the child, and neither can deadlock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from actors.orchestration import wake_parent
from models.base import utcnow
from models.task_transitions import Transition, lock_in_order, transition
from models.tasks import TERMINAL_STATES, Task, TaskState

__all__ = ["CancelOutcome", "Cancellation", "cancel_task", "record_stopped"]


class CancelOutcome(enum.Enum):
    CANCELLED = "CANCELLED"  # it had not started (or was suspended): it never runs again
    CANCELLING = "CANCELLING"  # it is running: its call is abandoned, or it stops at its next step
    FINISHED = "FINISHED"
    MISSING = "MISSING"


@dataclass(frozen=True)
class Cancellation:
    outcome: CancelOutcome
    state: str | None = None
    children: tuple[str, ...] = ()


def _cancel_where(session: Session, task_id: str, condition: Any, data: dict[str, Any]) -> Transition | None:
    return transition(
        session,
        task_id,
        condition,
        values={"state": TaskState.CANCELLED, "error": "cancelled", "finished_at": utcnow()},
        event_state=TaskState.CANCELLED,
        data={"error": "cancelled", **data},
    )


def cancel_task(session: Session, task_id: str, *, reason: str = "cancel requested") -> Cancellation:
    """Cancel ``task_id`` and its unfinished descendants. The caller commits.

    The rows it may change (the task, its parent, its unfinished descendants) are locked first, in
    id order, in one statement.
    """
    if session.get_bind().dialect.name == "postgresql":
        lock_in_order(session, _family(session, task_id))
    return _cancel(session, task_id, reason=reason)


def _family(session: Session, task_id: str) -> list[str | None]:
    """The ids a cancellation of ``task_id`` may change: it, its parent, its unfinished descendants.

    One recursive query, read without locks (the caller locks them in order next). A descendant
    is reached through unfinished tasks only, as :func:`_cancel_children` walks them.
    """
    family = select(Task.id).where(Task.id == task_id).cte("family", recursive=True)
    family = family.union(select(Task.id).where(Task.parent_id == family.c.id, Task.state.not_in(TERMINAL_STATES)))
    parent = select(Task.parent_id).where(Task.id == task_id)
    return list(session.scalars(select(family.c.id).union_all(parent)))


def _cancel(session: Session, task_id: str, *, reason: str) -> Cancellation:
    """:func:`cancel_task` once its rows are locked."""
    not_running = or_(
        Task.state.in_((TaskState.PENDING, TaskState.RETRY)),
        # A suspended coordinator holds no lease: nothing runs it until a child wakes it.
        and_(Task.state == TaskState.PROCESSING, Task.lease_owner.is_(None)),
    )
    done = _cancel_where(session, task_id, not_running, {"reason": reason})
    outcome = CancelOutcome.CANCELLED
    if done is None:
        # The lease stays with the worker: it releases it when the workflow stops (record_stopped).
        done = _cancel_where(session, task_id, Task.state == TaskState.PROCESSING, {"reason": reason, "running": True})
        outcome = CancelOutcome.CANCELLING
    if done is None:
        state = session.execute(select(Task.state).where(Task.id == task_id)).scalar_one_or_none()
        if state is None:
            return Cancellation(CancelOutcome.MISSING)
        return Cancellation(CancelOutcome.FINISHED, state=state)
    children = _cancel_children(session, task_id, reason=f"parent {task_id} cancelled")
    wake_parent(session, done.parent_id)  # a coordinator whose child was cancelled alone hears of it
    return Cancellation(outcome, state=TaskState.CANCELLED, children=tuple(children))


def _cancel_children(session: Session, parent_id: str, *, reason: str) -> list[str]:
    cancelled: list[str] = []
    child_ids = session.scalars(
        select(Task.id).where(Task.parent_id == parent_id, Task.state.not_in(TERMINAL_STATES))
    ).all()
    for child_id in child_ids:
        result = _cancel(session, child_id, reason=reason)
        if result.outcome in (CancelOutcome.CANCELLED, CancelOutcome.CANCELLING):
            cancelled.append(child_id)
            cancelled.extend(result.children)
    return cancelled


def record_stopped(session: Session, task_id: str, *, owner: str, step: str | None = None) -> bool:
    """A cancelled task's workflow stopped: release the lease and record where it stopped.

    Returns ``False`` when the task was not cancelled while this worker held it.
    """
    stopped = transition(
        session,
        task_id,
        Task.state == TaskState.CANCELLED,
        Task.lease_owner == owner,
        values={"lease_owner": None, "lease_expires_at": None, "finished_at": utcnow()},
        event_state=TaskState.CANCELLED,
        data={"reason": "the workflow stopped after its cancellation"} | ({"step": step} if step else {}),
        kind="stopped",
    )
    return stopped is not None
