"""The task operations (``models.task_lifecycle``) keep one contract on PostgreSQL and on SQLite.

On PostgreSQL most calls take the one-statement path; on SQLite every call is a transaction. The
callers (submission, claiming, progress, finishing) rely on the same answers from both.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from interlock.settings import Settings
from models import task_lifecycle
from models.base import utcnow
from models.database import make_engine, make_sessionmaker
from models.migrations import upgrade
from models.task_lifecycle import ClaimOutcome
from models.task_queries import task_events
from models.task_transitions import Transition, reclaim_lapsed
from models.tasks import Task, TaskEvent, TaskState
from models.tenants import add_usage, set_limits


@dataclass(frozen=True)
class Idempotency:
    key: str
    body_hash: str


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgres), "sqlite"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    if request.param == "postgresql":
        url = request.getfixturevalue("database_url")
    else:
        url = f"sqlite:///{tmp_path / 'interlock.db'}"
        upgrade(Settings.from_env({}, database_url=url))
    engine = make_engine(url)
    yield make_sessionmaker(engine)
    engine.dispose()


def _tenant(sessions: sessionmaker[Session], *, cap: int | None = None, tokens: int | None = None) -> str:
    """A tenant of its own (the PostgreSQL database is shared by the run), with these limits."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    with sessions.begin() as session:
        if cap is not None or tokens is not None:
            set_limits(session, name, max_concurrency=cap, monthly_tokens=tokens)
    return name


def _create(sessions: sessionmaker[Session], tenant: str, **extra: object) -> task_lifecycle.Creation:
    fields = {"workflow": "agent", "actor": "agent", "queue": "default", "input": {"query": "q"}}
    return task_lifecycle.create(sessions, task_id=str(uuid.uuid4()), tenant=tenant, **fields, **extra)


def _claim(
    sessions: sessionmaker[Session], task_id: str, admitted_at: float | None = None
) -> task_lifecycle.Claim | None:
    return task_lifecycle.claim(
        sessions, task_id, owner="worker-a", lease_seconds=30.0, max_deliveries=3, admitted_at=admitted_at
    )


def _row(sessions: sessionmaker[Session], task_id: str) -> Task:
    with sessions() as session:
        task = session.get(Task, task_id)
    assert task is not None
    return task


def _states(sessions: sessionmaker[Session], task_id: str) -> list[tuple[str, str]]:
    with sessions() as session:
        return [(e.kind, e.state) for e in task_events(session, task_id)]


def test_create_writes_the_task_with_its_first_event(sessions: sessionmaker[Session]) -> None:
    created = _create(sessions, _tenant(sessions))
    assert created.task is not None
    assert created.over_budget is None
    assert created.earlier is None
    assert _row(sessions, created.task.id).state == TaskState.PENDING
    assert _states(sessions, created.task.id) == [("state", "PENDING")]


def test_a_spent_budget_refuses_new_work_but_not_a_running_tasks_children(sessions: sessionmaker[Session]) -> None:
    tenant = _tenant(sessions, tokens=10)
    with sessions.begin() as session:
        add_usage(session, tenant, 10)
    refused = _create(sessions, tenant)
    assert refused.task is None
    assert refused.over_budget is not None
    assert "monthly token budget" in refused.over_budget
    with sessions() as session:
        assert session.scalars(select(Task).where(Task.tenant == tenant)).all() == []
    child = _create(sessions, tenant, parent_id=str(uuid.uuid4()))
    assert child.task is not None


def test_an_idempotency_key_creates_one_task(sessions: sessionmaker[Session]) -> None:
    tenant = _tenant(sessions)
    first = _create(sessions, tenant, idempotency=Idempotency("key-1", "hash-a"))
    again = _create(sessions, tenant, idempotency=Idempotency("key-1", "hash-b"))
    assert first.task is not None
    assert again.task is None
    assert again.earlier is not None
    assert (again.earlier.task_id, again.earlier.body_hash) == (first.task.id, "hash-a")
    with sessions() as session:
        assert [t.id for t in session.scalars(select(Task).where(Task.tenant == tenant))] == [first.task.id]


def test_claim_takes_the_lease_once_and_waits_at_the_tenants_cap(sessions: sessionmaker[Session]) -> None:
    tenant = _tenant(sessions, cap=1)
    first, second = (_create(sessions, tenant).task for _ in range(2))
    assert first is not None
    assert second is not None
    claim = _claim(sessions, first.id, admitted_at=12.5)
    assert claim is not None
    assert claim.outcome is ClaimOutcome.CLAIMED
    assert claim.attempts == 1
    assert claim.input == {"query": "q"}
    duplicate = _claim(sessions, first.id)
    assert duplicate is not None
    assert duplicate.outcome is ClaimOutcome.LEASED
    assert _claim(sessions, second.id) is None
    missing = _claim(sessions, str(uuid.uuid4()))
    assert missing is not None
    assert missing.outcome is ClaimOutcome.MISSING
    with sessions() as session:
        started = session.scalars(select(TaskEvent).where(TaskEvent.task_id == first.id, TaskEvent.kind == "state"))
        assert [e.data for e in started if e.state == TaskState.PROCESSING] == [
            {"attempt": 1, "worker": "worker-a", "rate_limit_admitted_at": 12.5}
        ]


def test_progress_never_goes_back_and_reports_the_state(sessions: sessionmaker[Session]) -> None:
    task = _create(sessions, _tenant(sessions)).task
    assert task is not None
    assert task_lifecycle.report_progress(sessions, task.id, progress=50, step="half", data={"n": 1}) == "PENDING"
    assert task_lifecycle.report_progress(sessions, task.id, progress=40, step="back") == "PENDING"
    assert task_lifecycle.report_progress(sessions, str(uuid.uuid4()), progress=40, step="x") is None
    assert _row(sessions, task.id).progress == 50
    assert _states(sessions, task.id) == [("state", "PENDING"), ("progress", "PENDING")]


def test_finish_is_fenced_and_settles_in_the_same_transaction(sessions: sessionmaker[Session]) -> None:
    tenant = _tenant(sessions)
    parent, child, lost = (_create(sessions, tenant).task for _ in range(3))
    assert parent is not None
    assert child is not None
    assert lost is not None
    with sessions.begin() as session:
        session.execute(update(Task).where(Task.id == child.id).values(parent_id=parent.id))
    for task in (parent, child, lost):
        assert _claim(sessions, task.id) is not None
    seen: list[Transition | None] = []

    def settle(session: Session, ended: Transition | None) -> str:
        seen.append(ended)
        session.execute(text("SELECT 1"))  # in the finishing transaction
        return "settled"

    ended, settled = task_lifecycle.finish(
        sessions, child.id, state=TaskState.FAILURE, owner="worker-a", parent_id=parent.id, then=settle, error="no"
    )
    assert ended is not None
    assert ended.parent_id == parent.id
    assert settled == "settled"
    assert seen == [ended]  # a child's end always reaches ``then``: its parent is woken there

    ended, _ = task_lifecycle.finish(
        sessions, parent.id, state=TaskState.SUCCESS, owner="worker-a", parent_id=None, then=settle, result={"ok": 1}
    )
    assert ended is not None
    assert ended.progress == 100
    assert ended.step == "complete"

    seen.clear()
    ended, settled = task_lifecycle.finish(
        sessions, lost.id, state=TaskState.SUCCESS, owner="worker-b", parent_id=None, then=settle, result={}
    )
    assert ended is None
    assert settled == "settled"
    assert seen == [None]
    assert _row(sessions, parent.id).result == {"ok": 1}
    assert _row(sessions, child.id).error == "no"
    assert _row(sessions, lost.id).state == TaskState.PROCESSING


def test_a_lapsed_lease_is_reclaimed_with_the_retries_already_made(sessions: sessionmaker[Session]) -> None:
    task = _create(sessions, _tenant(sessions)).task
    assert task is not None
    assert _claim(sessions, task.id) is not None
    with sessions.begin() as session:
        session.execute(update(Task).where(Task.id == task.id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    with sessions.begin() as session:
        reclaimed = [r for r in reclaim_lapsed(session) if r.task.id == task.id]
    assert [(r.lost_owner, r.retries) for r in reclaimed] == [("worker-a", 0)]
    row = _row(sessions, task.id)
    assert row.state == TaskState.RETRY
    assert row.lease_owner is None
    assert _states(sessions, task.id)[-1] == ("state", "RETRY")
