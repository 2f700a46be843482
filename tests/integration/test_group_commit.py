"""The process's writer (models.group_commit) on the real PostgreSQL: batches, outcomes, fencing."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from models import call_batches, checkpoints, group_commit, task_batches, task_lifecycle
from models.base import utcnow
from models.database import make_engine, make_sessionmaker
from models.group_commit import GroupCommit
from models.scheduled import ScheduledMessage
from models.security import IdempotencyKey
from models.task_calls import TaskCall
from models.task_lifecycle import ClaimOutcome
from models.task_transitions import Transition
from models.tasks import Task, TaskEvent, TaskState
from models.tenants import tokens_used

pytestmark = pytest.mark.postgres

OWNER = "worker-a"


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on an engine of their own, so each test starts with a fresh writer."""
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    group_commit.close_writer(engine)
    engine.dispose()


def _writer(sessions: sessionmaker[Session]) -> GroupCommit:
    writer = group_commit.writer_for(sessions.kw["bind"])
    assert writer is not None
    return writer


def _tasks(sessions: sessionmaker[Session], n: int, *, claimed: bool) -> list[str]:
    ids = []
    for _ in range(n):
        created = task_lifecycle.create(
            sessions, task_id=str(uuid.uuid4()), workflow="agent", actor="agent", queue="default", input={"q": 1}
        )
        assert created.task is not None
        ids.append(created.task.id)
        if claimed:
            claim = _claim(sessions, created.task.id)
            assert claim is not None
            assert claim.outcome is ClaimOutcome.CLAIMED
    return ids


def _claim(sessions: sessionmaker[Session], task_id: str) -> task_lifecycle.Claim | None:
    return task_lifecycle.claim(sessions, task_id, owner=OWNER, lease_seconds=30.0, max_deliveries=3)


def _finish(
    sessions: sessionmaker[Session], task_id: str, *, owner: str = OWNER, result: Any = None
) -> tuple[Transition | None, str | None]:
    return task_lifecycle.finish(
        sessions,
        task_id,
        state=TaskState.SUCCESS,
        owner=owner,
        parent_id=None,
        then=lambda _session, _ended: "settled",
        result={"ok": True} if result is None else result,
    )


def _state_elsewhere(engine: Engine, task_id: str) -> str:
    """The task's state read on a connection of its own (not the writer's)."""
    with engine.connect() as connection:
        return str(connection.execute(text("SELECT state FROM tasks WHERE id = :id"), {"id": task_id}).scalar_one())


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@contextmanager
def _writer_held(sessions: sessionmaker[Session], engine: Engine) -> Iterator[None]:
    """Keep the writer busy: it waits on a row another transaction holds until the block ends.

    Whatever the threads hand it meanwhile is pending, and is written as one batch afterwards.
    """
    (blocker,) = _tasks(sessions, 1, claimed=True)
    outcome: list[Any] = []
    with engine.connect() as holder:
        holder.execute(text("SELECT 1 FROM tasks WHERE id = :id FOR UPDATE"), {"id": blocker})
        thread = threading.Thread(target=lambda: outcome.append(_finish(sessions, blocker)))
        thread.start()
        _wait(
            lambda: _blocked_on_lock(engine),
            "the writer never waited for the held row",
        )
        yield
        holder.rollback()
    thread.join()
    assert outcome[0][0] is not None


def _blocked_on_lock(engine: Engine) -> bool:
    with engine.connect() as connection:
        waiting = connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar_one()
    return bool(waiting)


def _in_threads(n: int, work: Callable[[int], Any]) -> list[Any]:
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        try:
            results[i] = work(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _in_one_batch(sessions: sessionmaker[Session], n: int, work: Callable[[int], Any], *, what: str) -> list[Any]:
    """``work(i)`` for i < n from n threads, all handed to the writer while it is held: one batch."""
    writer = _writer(sessions)
    results: list[Any] = []
    with _writer_held(sessions, sessions.kw["bind"]):
        worker = threading.Thread(target=lambda: results.extend(_in_threads(n, work)))
        worker.start()
        _wait(lambda: writer.pending() == n, what)
    worker.join()
    return results


def test_a_lone_write_is_made_at_once_in_a_batch_of_one(sessions: sessionmaker[Session]) -> None:
    (task_id,) = _tasks(sessions, 1, claimed=True)
    writer = _writer(sessions)
    before = Counter(writer.batch_sizes.get("finish", Counter()))
    ended, _ = _finish(sessions, task_id)
    assert ended is not None
    assert writer.batch_sizes["finish"] - before == Counter({1: 1})
    assert _state_elsewhere(sessions.kw["bind"], task_id) == TaskState.SUCCESS


def test_finishes_of_many_threads_share_commits_and_are_visible_when_they_return(
    sessions: sessionmaker[Session],
) -> None:
    engine = sessions.kw["bind"]
    n = 16
    ids = _tasks(sessions, n, claimed=True)
    writer = _writer(sessions)
    commits = writer.commits("finish")

    def finish_and_look(i: int) -> tuple[bool, str]:
        ended, _ = _finish(sessions, ids[i])
        return ended is not None, _state_elsewhere(engine, ids[i])

    results = _in_one_batch(sessions, n, finish_and_look, what="the finishes never all waited for the writer")
    assert results == [(True, TaskState.SUCCESS)] * n
    assert writer.commits("finish") - commits < n + 1  # the held one, then fewer commits than calls
    assert writer.batch_sizes["finish"][n] >= 1
    with sessions() as session:
        events = session.scalars(
            select(TaskEvent.task_id).where(TaskEvent.task_id.in_(ids), TaskEvent.state == TaskState.SUCCESS)
        ).all()
    assert sorted(events) == sorted(ids)


def test_claims_of_many_threads_share_commits(sessions: sessionmaker[Session]) -> None:
    engine = sessions.kw["bind"]
    n = 12
    ids = _tasks(sessions, n, claimed=False)
    writer = _writer(sessions)
    results = _in_one_batch(
        sessions, n, lambda i: _claim(sessions, ids[i]), what="the claims never all waited for the writer"
    )
    assert [claim.outcome for claim in results] == [ClaimOutcome.CLAIMED] * n
    assert all(claim.attempts == 1 and claim.input == {"q": 1} for claim in results)
    assert writer.batch_sizes["claim"][n] == 1
    for task_id in ids:
        assert _state_elsewhere(engine, task_id) == TaskState.PROCESSING
    again = _claim(sessions, ids[0])  # held now: the lease is taken once
    assert again is not None
    assert again.outcome is ClaimOutcome.LEASED


def test_one_bad_write_does_not_fail_its_batch(sessions: sessionmaker[Session]) -> None:
    engine = sessions.kw["bind"]
    ids = _tasks(sessions, 6, claimed=True)
    unwritable = {"when": object()}  # not JSON

    def finish(i: int) -> Any:
        return _finish(sessions, ids[i], result=unwritable if i == 2 else None)

    results = _in_one_batch(sessions, len(ids), finish, what="the finishes never all waited for the writer")
    assert isinstance(results[2], Exception)
    assert all(results[i][0] is not None for i in range(len(ids)) if i != 2)
    states = [_state_elsewhere(engine, task_id) for task_id in ids]
    assert states == [TaskState.SUCCESS] * 2 + [TaskState.PROCESSING] + [TaskState.SUCCESS] * 3


def test_a_fenced_finish_in_a_batch_changes_nothing(sessions: sessionmaker[Session]) -> None:
    ids = _tasks(sessions, 4, claimed=True)
    writer = _writer(sessions)

    def finish(i: int) -> Any:
        return _finish(sessions, ids[i], owner="worker-b" if i == 1 else OWNER)

    results = _in_one_batch(sessions, len(ids), finish, what="the finishes never all waited for the writer")
    assert writer.batch_sizes["finish"][len(ids)] == 1
    assert results[1] == (None, "settled")  # the caller learns it, and settles in a transaction
    assert all(results[i][0] is not None for i in (0, 2, 3))
    with sessions() as session:
        lost = session.get(Task, ids[1])
        assert lost is not None
        assert (lost.state, lost.lease_owner, lost.result) == (TaskState.PROCESSING, OWNER, None)
        assert session.scalars(select(TaskEvent.state).where(TaskEvent.task_id == ids[1])).all() == [
            TaskState.PENDING,
            TaskState.PROCESSING,
        ]


def test_progress_reports_of_one_task_in_a_batch_write_the_furthest(sessions: sessionmaker[Session]) -> None:
    (task_id, other) = _tasks(sessions, 2, claimed=True)
    writer = _writer(sessions)
    reports = [(task_id, 30, "b"), (task_id, 60, "c"), (task_id, 10, "a"), (other, 5, "x")]

    def report(i: int) -> str | None:
        target, percent, step = reports[i]
        return task_lifecycle.report_progress(sessions, target, progress=percent, step=step)

    results = _in_one_batch(sessions, len(reports), report, what="the reports never all waited for the writer")
    assert results == [TaskState.PROCESSING] * len(reports)
    assert writer.batch_sizes["progress"][2] == 1  # two tasks, one row each
    with sessions() as session:
        row = session.get(Task, task_id)
        assert row is not None
        assert (row.progress, row.current_step) == (60, "c")
        progress_events = session.execute(
            select(TaskEvent.progress, TaskEvent.step).where(TaskEvent.task_id == task_id, TaskEvent.kind == "progress")
        ).all()
    assert [tuple(e) for e in progress_events] == [(60, "c")]


def test_a_closed_writer_refuses_work_and_the_next_use_gets_a_new_one(sessions: sessionmaker[Session]) -> None:
    engine = sessions.kw["bind"]
    (first, second) = _tasks(sessions, 2, claimed=True)
    writer = _writer(sessions)
    thread = writer._thread
    assert thread is not None
    assert thread.is_alive()
    group_commit.close_writer(engine)
    assert not thread.is_alive()  # its thread ended (writers of other engines, other tests', may live on)
    with pytest.raises(group_commit.WriterClosed):
        writer.run(task_batches.FINISHES, {"p_id": first})
    ended, _ = _finish(sessions, second)  # a later use (a new runtime on this engine) gets a new writer
    assert ended is not None
    assert _writer(sessions) is not writer


@dataclass(frozen=True)
class _Key:
    key: str
    body_hash: str


def _submit(sessions: sessionmaker[Session], idempotency: _Key | None = None) -> task_lifecycle.Creation:
    task_id = str(uuid.uuid4())
    message = {"queue_name": "default", "message_id": task_id, "args": [task_id]}
    return task_lifecycle.create(
        sessions,
        task_id=task_id,
        workflow="agent",
        actor="agent",
        queue="default",
        input={"q": 1},
        idempotency=idempotency,
        message=message,
    )


def test_submissions_of_many_threads_share_a_commit_with_their_events_and_messages(
    sessions: sessionmaker[Session],
) -> None:
    n = 12
    writer = _writer(sessions)
    key = _Key(f"key-{uuid.uuid4()}", "hash-a")
    # Threads 0-9 without a key; 10 and 11 with one key (one write, both get its outcome).
    results = _in_one_batch(
        sessions,
        n,
        lambda i: _submit(sessions, key if i >= n - 2 else None),
        what="the submissions never all waited for the writer",
    )
    assert writer.batch_sizes["create"][n - 1] == 1  # one statement, one commit for all of them
    created = [result.task.id for result in results[: n - 2]]
    first, second = results[n - 2 :]
    winner = first if first.task is not None else second
    loser = second if winner is first else first
    assert winner.task is not None
    assert loser.task is None
    assert loser.earlier is not None
    assert (loser.earlier.won, loser.earlier.task_id, loser.earlier.body_hash) == (False, winner.task.id, "hash-a")
    ids = [*created, winner.task.id]
    with sessions() as session:
        assert sorted(session.scalars(select(Task.id).where(Task.id.in_(ids))).all()) == sorted(ids)
        events = session.execute(select(TaskEvent.task_id, TaskEvent.state).where(TaskEvent.task_id.in_(ids))).all()
        assert sorted(events) == sorted((task_id, TaskState.PENDING) for task_id in ids)
        parked = session.scalars(select(ScheduledMessage.task_id).where(ScheduledMessage.task_id.in_(ids))).all()
        assert sorted(parked) == sorted(ids)
        holder = session.get(IdempotencyKey, ("system", key.key))
        assert holder is not None
        assert holder.task_id == winner.task.id
    again = _submit(sessions, _Key(key.key, "hash-b"))  # later, in a batch of its own
    assert again.task is None
    assert again.earlier is not None
    assert (again.earlier.task_id, again.earlier.body_hash) == (winner.task.id, "hash-a")


def test_a_submission_of_a_budgeted_tenant_is_decided_in_a_transaction(sessions: sessionmaker[Session]) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    with sessions.begin() as session:
        session.execute(
            text("INSERT INTO tenants (name, monthly_tokens, updated_at) VALUES (:name, 0, now())"), {"name": tenant}
        )
    created = task_lifecycle.create(
        sessions, task_id=str(uuid.uuid4()), workflow="agent", actor="agent", queue="default", input={}, tenant=tenant
    )
    assert created.task is None
    assert created.over_budget is not None


def test_calls_of_many_threads_begin_and_end_in_shared_commits(sessions: sessionmaker[Session]) -> None:
    n = 8
    ids = _tasks(sessions, n, claimed=True)
    writer = _writer(sessions)
    now = utcnow()

    def begin(i: int) -> int:
        call = {"task_id": ids[i], "attempt": 1, "step": "s", "kind": "llm", "name": f"m{i}", "started_at": now}
        return int(task_batches.write(sessions, call_batches.CALL_STARTS, call))

    call_ids = _in_one_batch(sessions, n, begin, what="the call starts never all waited for the writer")
    assert writer.batch_sizes["call_start"][n] == 1
    with sessions() as session:
        in_flight = session.execute(select(TaskCall.id, TaskCall.task_id, TaskCall.name, TaskCall.duration_ms)).all()
    assert {(call_ids[i], ids[i], f"m{i}", None) for i in range(n)} <= {tuple(row) for row in in_flight}

    tenant = f"t-{uuid.uuid4().hex[:8]}"

    def end(i: int) -> None:
        ending = {"id": call_ids[i], "duration_ms": 10 + i, "prompt_tokens": i, "completion_tokens": 1, "error": None}
        ending.update(tenant=tenant, month="2026-12", tokens=i + 1)
        task_batches.write(sessions, call_batches.CALL_ENDS, ending)

    _in_one_batch(sessions, n, end, what="the call ends never all waited for the writer")
    assert writer.batch_sizes["call_end"][n] == 1
    with sessions() as session:
        assert tokens_used(session, tenant, "2026-12") == sum(i + 1 for i in range(n))  # their tokens, counted
    with sessions() as session:
        ended = session.execute(
            select(TaskCall.id, TaskCall.duration_ms, TaskCall.prompt_tokens).where(TaskCall.id.in_(call_ids))
        ).all()
    assert sorted(tuple(row) for row in ended) == sorted((call_ids[i], 10 + i, i) for i in range(n))


def test_checkpoints_of_many_threads_share_a_commit_and_overwrite_earlier_ones(
    sessions: sessionmaker[Session],
) -> None:
    n = 6
    ids = [str(uuid.uuid4()) for _ in range(n)]
    writer = _writer(sessions)

    def save(i: int, status: str, result: Any) -> None:
        saved = checkpoints.checkpoint_write(
            workflow_id=ids[i], stage="reasoning", status=status, state={"result": result}, meta={"attempt": 1}
        )
        task_batches.write(sessions, checkpoints.CHECKPOINT_WRITES, saved)

    _in_one_batch(sessions, n, lambda i: save(i, checkpoints.FAILED, None), what="the first checkpoints never waited")
    _in_one_batch(
        sessions, n, lambda i: save(i, checkpoints.COMPLETED, {"text": f"r{i}"}), what="the second ones never waited"
    )
    assert writer.batch_sizes["checkpoint"][n] == 2
    with sessions() as session:
        for i in range(n):
            outcomes = checkpoints.load_outcomes(session, ids[i])
            assert [(o.stage, o.status, o.state, o.metadata) for o in outcomes] == [
                ("reasoning", checkpoints.COMPLETED, {"result": {"text": f"r{i}"}}, {"attempt": 1})
            ]
