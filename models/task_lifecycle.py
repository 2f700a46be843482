"""The operations on every task's path: create, claim, report progress, finish.

Each operation is one function that takes the ``sessionmaker`` and commits what it did. Whether it
runs as one statement on an autocommit connection (PostgreSQL: one round trip, see
:mod:`models.task_statements`) or in a transaction is decided here, never by the caller: the
one-statement path is taken when the database can make the change and its event in one statement
and the change needs nothing else (a submission's idempotency key included); otherwise (SQLite, a
tenant with limits, a parent to wake) the same change is made in a transaction.

Changes that must commit together with the caller's other work take a ``Session`` instead and
live in :mod:`models.task_transitions`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .base import utcnow
from .database import writes_in_one_statement
from .scheduled import schedule_message
from .security import Reservation, reserve_idempotency_key
from .task_batches import CLAIMS, CREATES, FINISHES, PROGRESS_REPORTS, write
from .task_statements import (
    CLAIM,
    PROGRESS,
    STATE,
)
from .task_transitions import Transition, create_task, finish_task, insert_event, lock_in_order, task_values
from .tasks import TERMINAL_STATES, Task, TaskState
from .tenants import budget_exhausted, may_start

__all__ = [
    "Claim",
    "ClaimOutcome",
    "Creation",
    "IdempotentRequest",
    "create",
    "claim",
    "report_progress",
    "finish",
]

T = TypeVar("T")


# -- create -----------------------------------------------------------------------------------


class IdempotentRequest(Protocol):
    """An ``Idempotency-Key`` and a hash of the request body it came with."""

    @property
    def key(self) -> str: ...

    @property
    def body_hash(self) -> str: ...


@dataclass(frozen=True)
class Creation:
    """What :func:`create` did: the new task, or why there is none (then nothing was written)."""

    task: Task | None = None
    #: Why the tenant may start no new work (its monthly token budget is used).
    over_budget: str | None = None
    #: The idempotency key belongs to an earlier request: who has it (its task id and body hash).
    earlier: Reservation | None = None


class _KeyTaken(Exception):
    def __init__(self, reservation: Reservation) -> None:
        self.reservation = reservation


def create(
    sessions: sessionmaker[Session],
    *,
    task_id: str,
    workflow: str,
    actor: str,
    queue: str,
    input: dict[str, Any],
    priority: int = 0,
    parent_id: str | None = None,
    tenant: str = "system",
    idempotency: IdempotentRequest | None = None,
    message: dict[str, Any] | None = None,
) -> Creation:
    """Create and commit a PENDING task and its first event (and ``message``, the task's message, in
    the outbox: committed with the task, published by a relay).

    Refused (nothing written) when a top-level task's tenant has used its monthly token budget (a
    child is never refused: its parent's work must be able to end), and when ``idempotency``'s key
    is held by an earlier request: of concurrent requests with one key exactly one creates a task,
    the others wait for its commit and get its reservation.

    PostgreSQL: written with the key and the message by the process's writer, in one statement with
    other threads' submissions (:data:`models.task_batches.CREATES`; submissions with one key are one
    write, whose outcome all get). A top-level task of a tenant with a token budget (its check
    needs a transaction) and SQLite take a transaction.
    """
    fields: dict[str, Any] = dict(task_id=task_id, workflow=workflow, actor=actor, queue=queue, input=input)
    fields.update(priority=priority, parent_id=parent_id, tenant=tenant)
    if writes_in_one_statement(sessions):
        batched = _create_in_a_batch(sessions, fields, idempotency, message)
        if batched is not None:
            return batched
    try:
        with sessions.begin() as session:
            exhausted = budget_exhausted(session, tenant) if parent_id is None else None
            if exhausted is not None:
                return Creation(over_budget=exhausted)
            task = create_task(session, **fields)
            if message is not None:
                schedule_message(session, queue=queue, message=message, due_at=task.created_at, task_id=task_id)
            if idempotency is not None:
                session.flush()
                reservation = reserve_idempotency_key(
                    session, tenant=tenant, key=idempotency.key, body_hash=idempotency.body_hash, task_id=task_id
                )
                if not reservation.won:
                    raise _KeyTaken(reservation)
    except _KeyTaken as taken:
        return Creation(earlier=taken.reservation)
    return Creation(task)


def _create_in_a_batch(
    sessions: sessionmaker[Session],
    fields: dict[str, Any],
    idempotency: IdempotentRequest | None,
    message: dict[str, Any] | None,
) -> Creation | None:
    """PostgreSQL: the task, its event, its message and its key in the process's next batch of
    submissions; ``None`` (nothing written) for a budgeted tenant, which takes a transaction."""
    values = task_values(**fields)
    params = {name: fields[name] for name in ("workflow", "actor", "queue", "priority", "input", "parent_id", "tenant")}
    key, body_hash = (None, None) if idempotency is None else (idempotency.key, idempotency.body_hash)
    params.update(id=values["id"], now=values["created_at"], message=message, key=key, body_hash=body_hash)
    row = write(sessions, CREATES, params)
    if row is None:
        return None
    holder = row.holder or row.id  # an idempotency key's holder, or (no key) the task written
    if holder == values["id"]:
        return Creation(Task(**values))
    if idempotency is None:
        return None  # a task id submitted twice at once: the transaction below reports it
    return Creation(earlier=Reservation(False, holder, row.body_hash))


# -- claim ------------------------------------------------------------------------------------


class ClaimOutcome(enum.Enum):
    CLAIMED = "claimed"
    MISSING = "missing"
    FINISHED = "finished"
    LEASED = "leased"
    EXHAUSTED = "exhausted"


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    attempts: int = 0
    state: str | None = None
    input: dict[str, Any] | None = None
    parent_id: str | None = None


def claim(
    sessions: sessionmaker[Session],
    task_id: str,
    *,
    owner: str,
    lease_seconds: float,
    max_deliveries: int,
    admitted_at: float | None = None,
) -> Claim | None:
    """Take the task's lease for ``owner`` unless it is finished or another live worker holds it.

    ``None`` when the task's tenant is at its concurrency cap: the task must wait its turn.
    One conditional UPDATE, so two workers that got the same message (a redelivery, a reclaimed
    lease) cannot both run it. Every start counts, crash redeliveries included.

    PostgreSQL: one statement for a tenant without a concurrency cap (batched with other threads'
    claims by the process's writer, :mod:`models.group_commit`); a capped tenant, a duplicate
    delivery and SQLite are decided in a transaction (the cap's row locked).
    """
    if writes_in_one_statement(sessions):
        claimed = _claim_in_one_statement(sessions, task_id, owner, lease_seconds, max_deliveries, admitted_at)
        if claimed is not None:
            return claimed
    with sessions.begin() as session:
        if not may_start(session, task_id):
            return None
        return _claim_in(session, task_id, owner, lease_seconds, max_deliveries, admitted_at)


def _claim_in(
    session: Session, task_id: str, owner: str, lease_seconds: float, max_deliveries: int, admitted_at: float | None
) -> Claim:
    """The claim in the caller's transaction, saying why it failed when it did."""
    now = utcnow()
    claimed = session.execute(
        CLAIM,
        {"p_id": task_id, "p_now": now, "p_owner": owner, "p_expires": now + timedelta(seconds=lease_seconds)},
    ).first()
    if claimed is None:
        row = session.execute(select(Task.state).where(Task.id == task_id)).first()
        if row is None:
            return Claim(ClaimOutcome.MISSING)
        if row.state in TERMINAL_STATES:
            return Claim(ClaimOutcome.FINISHED, state=row.state)
        return Claim(ClaimOutcome.LEASED, state=row.state)
    attempts, progress, step, task_input, parent_id = claimed
    if attempts > max_deliveries:
        return Claim(ClaimOutcome.EXHAUSTED, attempts=attempts)
    insert_event(
        session,
        task_id,
        kind="state",
        state=TaskState.PROCESSING,
        progress=progress,
        step=step,
        data={"attempt": attempts, "worker": owner}
        | ({"rate_limit_admitted_at": admitted_at} if admitted_at is not None else {}),
        at=now,
    )
    return Claim(
        ClaimOutcome.CLAIMED, attempts=attempts, state=TaskState.PROCESSING, input=task_input, parent_id=parent_id
    )


def _claim_in_one_statement(
    sessions: sessionmaker[Session],
    task_id: str,
    owner: str,
    lease_seconds: float,
    max_deliveries: int,
    admitted_at: float | None,
) -> Claim | None:
    """PostgreSQL: the claim for a tenant without a concurrency cap, or ``None`` (undecided).

    Through the process's writer (batched with other threads' claims) when there is one.
    """
    now = utcnow()
    params = {
        "p_id": task_id,
        "p_now": now,
        "p_owner": owner,
        "p_expires": now + timedelta(seconds=lease_seconds),
        "p_max": max_deliveries,
        "p_admitted": admitted_at,
    }
    row = write(sessions, CLAIMS, params)
    if row is None:
        return None
    if row.attempts > max_deliveries:
        return Claim(ClaimOutcome.EXHAUSTED, attempts=row.attempts)
    return Claim(
        ClaimOutcome.CLAIMED,
        attempts=row.attempts,
        state=TaskState.PROCESSING,
        input=row.input,
        parent_id=row.parent_id,
    )


# -- progress ---------------------------------------------------------------------------------


def report_progress(
    sessions: sessionmaker[Session], task_id: str, *, progress: int, step: str, data: dict[str, Any] | None = None
) -> str | None:
    """Store a progress update and its event; returns the task's state (to notice cancellation).

    A report below the task's progress (or repeating it) changes nothing: progress never
    decreases. PostgreSQL: one statement (batched; of one task's reports in a batch only the
    furthest is written); SQLite: a transaction.
    """
    now = utcnow()
    params: dict[str, Any] = {"p_id": task_id, "p_progress": progress, "p_step": step, "p_now": now}
    if writes_in_one_statement(sessions):
        reported: str | None = write(sessions, PROGRESS_REPORTS, params | {"p_data": data})
        return reported
    with sessions.begin() as session:
        state: str | None = session.execute(PROGRESS, params).scalar_one_or_none()
        if state is None:
            current: str | None = session.execute(STATE, {"p_id": task_id}).scalar_one_or_none()
            return current
        insert_event(session, task_id, kind="progress", state=state, progress=progress, step=step, data=data, at=now)
        return state


# -- finish -----------------------------------------------------------------------------------


def finish(
    sessions: sessionmaker[Session],
    task_id: str,
    *,
    state: TaskState,
    owner: str,
    parent_id: str | None,
    then: Callable[[Session, Transition | None], T],
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> tuple[Transition | None, T | None]:
    """Record the end of a task by the holder of its lease (fencing: anyone else changes nothing).

    ``then(session, ended)`` runs in the finishing transaction, with the transition or ``None``
    when the task was not ``owner``'s to finish (its lease lapsed, or it was cancelled while it
    ran): there the caller wakes the parent, or releases a cancelled task's lease. Returns the
    transition and what ``then`` returned.

    PostgreSQL, a task without a parent (``parent_id``, as claimed): one statement (batched with
    other threads' finishes by the process's writer), and ``then``
    is called only if that statement changed nothing. A child's end and its parent's wake-up are
    one transaction, as are SQLite's changes; it locks both rows first, in id order
    (:func:`~models.task_transitions.lock_in_order`), so no other writer can deadlock with it.
    """
    if parent_id is None and writes_in_one_statement(sessions):
        success = state == TaskState.SUCCESS
        params: dict[str, Any] = {
            "p_id": task_id,
            "p_owner": owner,
            "p_state": state,
            "p_error": error,
            "p_now": utcnow(),
            "p_data": {"result": result} if success else {"error": error},
        }
        if success:
            params["p_result"] = result
        row = write(sessions, FINISHES, params)
        if row is not None:
            return Transition(row.progress, row.current_step, row.parent_id), None
    with sessions.begin() as session:
        lock_in_order(session, (task_id, parent_id))
        ended = finish_task(session, task_id, state=state, owner=owner, result=result, error=error)
        return ended, then(session, ended)
