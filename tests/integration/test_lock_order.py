"""Row locks in one global order: a child's end, a cancellation of its family and a poisoned child never deadlock.

Each test makes the interleaving that used to deadlock happen for sure: a test transaction holds
the parent's row; the cancellation of the parent starts and waits for it, then the child's end
(or its dead-lettering) starts and waits too; the parent's row is let go. Locking one row, then
the next, the cancellation took the parent and waited for the child, which the child's end held
while it waited for the parent: PostgreSQL aborted one of them (and the worker's retry loop ran
the finish again). Locked in id order up front, one simply waits for the other. The writes are
called without any retry, so a deadlock fails the test. Both orders of the two ids are tried.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest
from sqlalchemy import Engine, text, update

from actors.cancellation import cancel_task
from actors.middleware.claiming import Claiming
from actors.middleware.current_run import TaskRun
from actors.middleware.poison import fail_poisoned
from actors.runtime import Runtime
from interlock.settings import Settings
from models.base import utcnow
from models.task_transitions import create_task
from models.tasks import Task, TaskState
from tests.support import get_task, wait_until

pytestmark = [pytest.mark.postgres]


@pytest.fixture
def runtime(database_url: str) -> Iterator[Runtime]:
    runtime = Runtime.open(Settings.from_env({}, database_url=database_url))
    yield runtime
    runtime.close()


def _family(runtime: Runtime, *, child_first: bool) -> tuple[str, str]:
    """A suspended coordinator and its running child (leased by ``runtime.owner``); ids ordered as asked."""
    low, high = (f"{prefix}{str(uuid.uuid4())[8:]}" for prefix in ("00000000", "ffffffff"))
    child, parent = (low, high) if child_first else (high, low)
    with runtime.sessions.begin() as session:
        for task_id, parent_id in ((parent, None), (child, parent)):
            create_task(
                session, task_id=task_id, workflow="w", actor="w", queue="default", input={}, parent_id=parent_id
            )
        session.flush()
        session.execute(update(Task).where(Task.id == parent).values(state=TaskState.PROCESSING))
        session.execute(
            update(Task)
            .where(Task.id == child)
            .values(state=TaskState.PROCESSING, lease_owner=runtime.owner, lease_expires_at=utcnow(), attempts=1)
        )
    return parent, child


def _lock_waits(engine: Engine) -> int:
    """Sessions of the test database waiting for a lock."""
    with engine.connect() as connection:
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        return int(connection.execute(text(query)).scalar_one())


def _deadlocks(engine: Engine) -> int:
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_stat_force_next_flush()"))
        query = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        return int(connection.execute(text(query)).scalar_one())


def _interleave(runtime: Runtime, held: str, first: Callable[[], object], second: Callable[[], object]) -> None:
    """Run ``first`` until it waits for row ``held`` (locked here), then ``second`` until it waits too, then let go.

    Fails with the error either raised (a deadlock).
    """
    errors: list[BaseException] = []

    def run(work: Callable[[], object]) -> None:
        try:
            work()
        except BaseException as exc:  # handed to the test's thread
            errors.append(exc)

    engine = runtime.engine
    deadlocks = _deadlocks(engine)
    threads = [threading.Thread(target=run, args=(work,), daemon=True) for work in (first, second)]
    with engine.connect() as blocker:
        blocker.execute(text("SELECT id FROM tasks WHERE id = :id FOR NO KEY UPDATE"), {"id": held})
        for waiting, thread in enumerate(threads, start=1):
            thread.start()
            wait_until(lambda n=waiting: _lock_waits(engine) == n or bool(errors), timeout=10, what="the lock wait")
        blocker.rollback()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert errors == []
    assert _deadlocks(engine) == deadlocks


def _cancel(runtime: Runtime, task_id: str) -> Callable[[], object]:
    def cancel() -> object:
        with runtime.sessions.begin() as session:
            return cancel_task(session, task_id)

    return cancel


@pytest.mark.parametrize("child_first", [True, False], ids=["child-id-lower", "parent-id-lower"])
def test_a_child_ending_while_its_parent_is_cancelled_does_not_deadlock(runtime: Runtime, child_first: bool) -> None:
    parent, child = _family(runtime, child_first=child_first)
    run = TaskRun(child, 1, {}, 0.0, parent_id=parent)

    def finish() -> object:
        # What Claiming writes when the child's workflow returns, without the retry around it.
        return Claiming(runtime)._finish(run, TaskState.SUCCESS, {"status": "success"}, None)

    _interleave(runtime, parent, _cancel(runtime, parent), finish)

    # The cancellation came first: the child was cancelled while it ran, so its finish only let go of its lease.
    ended = get_task(runtime.sessions, child)
    assert ended is not None
    assert (ended.state, ended.lease_owner) == (TaskState.CANCELLED, None)
    assert get_task(runtime.sessions, parent).state == TaskState.CANCELLED  # type: ignore[union-attr]


@pytest.mark.parametrize("child_first", [True, False], ids=["child-id-lower", "parent-id-lower"])
def test_a_poisoned_child_failing_while_its_parent_is_cancelled_does_not_deadlock(
    runtime: Runtime, child_first: bool
) -> None:
    parent, child = _family(runtime, child_first=child_first)
    message = SimpleNamespace(fail=lambda: None)

    _interleave(runtime, parent, _cancel(runtime, parent), lambda: fail_poisoned(runtime, message, child, 5))

    assert get_task(runtime.sessions, child).state == TaskState.CANCELLED  # type: ignore[union-attr]
    assert get_task(runtime.sessions, parent).state == TaskState.CANCELLED  # type: ignore[union-attr]
