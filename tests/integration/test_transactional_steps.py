"""Transactional steps: a step's database writes commit with its checkpoint, so they happen once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from actors.context import TaskContext
from actors.errors import StageTimeLimitExceeded
from actors.runtime import Runtime
from interlock.settings import Settings
from models.checkpoints import COMPLETED, FAILED, WorkflowCheckpoint, load_checkpoints
from models.tasks import TaskEvent
from tests.processes import Proc, base_env
from tests.support import blocked_backend, get_task, kill_while_blocked, marks, wait_for_state, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]  # the settings fixture makes a vhost

EFFECTS = text("CREATE TABLE IF NOT EXISTS step_effects (task_id text NOT NULL, note text NOT NULL)")


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime.open(settings)
    with runtime.engine.begin() as connection:
        connection.execute(EFFECTS)
    yield runtime
    runtime.close()


def _context(runtime: Runtime, task_id: str, *, attempt: int = 1) -> TaskContext:
    """What a worker hands a workflow on its ``attempt``-th start of ``task_id``."""
    return TaskContext(
        task_id=task_id,
        input={"query": "effects"},
        attempt=attempt,
        runtime=runtime,
        soft_deadline=time.monotonic() + 60,
    )


def _note(session: Session, task_id: str, note: str) -> dict[str, Any]:
    session.execute(text("INSERT INTO step_effects VALUES (:task_id, :note)"), {"task_id": task_id, "note": note})
    return {"noted": note}


def _effects(runtime: Runtime, task_id: str) -> list[str]:
    with runtime.engine.connect() as connection:
        rows = connection.execute(text("SELECT note FROM step_effects WHERE task_id = :t"), {"t": task_id})
        return [row.note for row in rows]


def _checkpoint(runtime: Runtime, task_id: str, stage: str) -> WorkflowCheckpoint | None:
    with runtime.sessions() as session:
        return next((c for c in load_checkpoints(session, task_id) if c.stage == stage), None)


def test_effect_and_checkpoint_commit_in_one_transaction(runtime: Runtime) -> None:
    task_id = str(uuid.uuid4())
    seen: list[bool] = []

    def note_and_look(session: Session, note: str) -> dict[str, Any]:
        result = _note(session, task_id, note)
        seen.append(bool(_effects(runtime, task_id)))  # another connection: not committed yet
        return result

    ctx = _context(runtime, task_id)
    assert ctx.transactional_step("note", note_and_look, "first") == {"noted": "first"}

    assert seen == [False]
    assert _effects(runtime, task_id) == ["first"]
    checkpoint = _checkpoint(runtime, task_id, "note")
    assert checkpoint is not None
    assert checkpoint.status == COMPLETED
    assert checkpoint.state["result"] == {"noted": "first"}
    assert checkpoint.meta == {"attempt": 1, "failures": []}


def test_a_checkpoint_that_cannot_be_written_undoes_the_effect(runtime: Runtime) -> None:
    task_id = str(uuid.uuid4())

    def note_with_unstorable_result(session: Session) -> object:
        _note(session, task_id, "lost")
        return object()  # not JSON: the checkpoint, and with it the whole transaction, fails

    with pytest.raises(Exception, match="not JSON serializable"):
        _context(runtime, task_id).transactional_step("note", note_with_unstorable_result)
    assert _effects(runtime, task_id) == []
    checkpoint = _checkpoint(runtime, task_id, "note")
    assert checkpoint is not None
    assert checkpoint.status == FAILED


def test_failing_step_keeps_neither_and_is_recorded_like_a_step(runtime: Runtime) -> None:
    task_id = str(uuid.uuid4())

    def note_then_fail(session: Session) -> dict[str, Any]:
        _note(session, task_id, "rolled back")
        raise ValueError("the tool said no")

    with pytest.raises(ValueError, match="the tool said no"):
        _context(runtime, task_id, attempt=1).transactional_step("note", note_then_fail)
    assert _effects(runtime, task_id) == []
    failed = _checkpoint(runtime, task_id, "note")
    assert failed is not None
    assert failed.status == FAILED
    assert failed.error == "ValueError: the tool said no"
    assert "Traceback" in failed.meta["traceback"]
    assert "note_then_fail" in failed.meta["traceback"]
    assert [f["attempt"] for f in failed.meta["failures"]] == [1]

    # The retry runs the step again; this time it commits, keeping the earlier failure on record.
    retry = _context(runtime, task_id, attempt=2)
    assert retry.transactional_step("note", _note, task_id, "kept") == {"noted": "kept"}
    assert _effects(runtime, task_id) == ["kept"]
    done = _checkpoint(runtime, task_id, "note")
    assert done is not None
    assert done.status == COMPLETED
    assert done.error is None
    assert done.meta["attempt"] == 2
    assert [f["attempt"] for f in done.meta["failures"]] == [1]


def test_a_later_attempt_gets_the_stored_result_without_calling_fn(runtime: Runtime) -> None:
    task_id = str(uuid.uuid4())
    first = _context(runtime, task_id, attempt=1)
    assert first.transactional_step("note", _note, task_id, "once") == {"noted": "once"}

    def must_not_run(session: Session, *args: Any) -> None:
        raise AssertionError("a completed transactional step ran again")

    for attempt in (2, 3):  # a retry, a redelivery after a crash, a resume: all start a new context
        again = _context(runtime, task_id, attempt=attempt)
        assert again.transactional_step("note", must_not_run, task_id, "twice") == {"noted": "once"}
    assert first.transactional_step("note", must_not_run) == {"noted": "once"}  # replay in one attempt
    assert _effects(runtime, task_id) == ["once"]


def test_a_step_completed_by_another_run_meanwhile_is_not_run_again(runtime: Runtime) -> None:
    # Two runs of one task (a lease taken over from a stalled worker): the first read its
    # checkpoints before the second completed the step; the checkpoint is checked again under lock.
    task_id = str(uuid.uuid4())
    stalled = _context(runtime, task_id, attempt=1)
    assert stalled.completed_steps() == {}
    _context(runtime, task_id, attempt=2).transactional_step("note", _note, task_id, "winner")

    def must_not_run(session: Session) -> None:
        raise AssertionError("the step ran twice")

    assert stalled.transactional_step("note", must_not_run) == {"noted": "winner"}
    assert _effects(runtime, task_id) == ["winner"]


def test_stage_time_limit_interrupts_and_rolls_back(settings: Settings, runtime: Runtime) -> None:
    runtime.settings = settings.replace(stage_time_limit=0.5)
    task_id = str(uuid.uuid4())

    finished: list[bool] = []

    def note_then_hang(session: Session) -> None:
        _note(session, task_id, "rolled back")
        give_up = time.monotonic() + 10
        while time.monotonic() < give_up:  # busy work the watchdog interrupts
            time.sleep(0.01)
        finished.append(True)

    with pytest.raises(StageTimeLimitExceeded):
        _context(runtime, task_id).transactional_step("note", note_then_hang)
    assert finished == []  # stopped in the middle of its work, not found too slow once it ended
    assert _effects(runtime, task_id) == []
    failed = _checkpoint(runtime, task_id, "note")
    assert failed is not None
    assert failed.status == FAILED
    assert "StageTimeLimitExceeded" in (failed.error or "")


# -- crashes, with a real `interlock worker` ------------------------------------------------------


def _holder_pid(stack: Any, task_id: str) -> int:
    task = get_task(stack.runtime.sessions, task_id)
    assert task is not None
    assert task.lease_owner
    return int(task.lease_owner.split(":")[1])


@pytest.mark.slow
def test_worker_killed_inside_or_after_a_transactional_step_never_repeats_its_effect(
    settings: Settings, bench_runs: Engine, tmp_path, make_stack
) -> None:
    # W6's failure, made deterministic: a test transaction holds a lock the worker needs next; while
    # the worker waits, its process is SIGKILLed and its database session ended, then the lock is let go.
    settings = settings.replace(agent_modules="testkit.workflows")
    stack = make_stack(settings, worker=False)
    env = base_env(settings.to_env())
    with Proc(["worker", "--processes", "1", "--threads", "1"], env=env, log=tmp_path / "w.log") as worker:
        # 1. Killed inside the "done" step: its INSERT waits for a table lock, uncommitted.
        inside = stack.submit(query="killed inside", workflow="bench_work", context={"sleep": 2})
        wait_until(lambda: marks(bench_runs, inside) == ["start"], timeout=60, what="the start step")
        with bench_runs.connect() as blocker:
            blocker.execute(text("LOCK TABLE bench_runs IN EXCLUSIVE MODE"))
            backend = wait_until(lambda: blocked_backend(bench_runs, "INSERT INTO bench_runs%"), what="done step")
            kill_while_blocked(blocker, _holder_pid(stack, inside), backend)

        # 2. Killed after the "done" step committed, before the task's SUCCESS: finishing the
        # task waits for a row lock on it. Before transactional steps, the body ran again and
        # its done mark was written twice.
        after = stack.submit(query="killed after", workflow="bench_work", context={"sleep": 2})
        wait_until(lambda: marks(bench_runs, after) == ["start"], timeout=60, what="the start step")
        victim = _holder_pid(stack, after)
        with bench_runs.connect() as blocker:
            blocker.execute(text("SELECT id FROM tasks WHERE id = :t FOR UPDATE"), {"t": after})
            wait_until(lambda: marks(bench_runs, after) == ["start", "done"], what="the done step")
            backend = wait_until(lambda: blocked_backend(bench_runs, "%UPDATE tasks%finished_at%"), what="finish")
            kill_while_blocked(blocker, victim, backend)

        for task_id in (inside, after):
            task = wait_for_state(stack.runtime.sessions, task_id, {"SUCCESS", "FAILURE"}, timeout=60)
            assert task.state == "SUCCESS", (task.error, worker.output()[-3000:])
            assert task.attempts == 2  # the body was entered again after the kill ...
            assert marks(bench_runs, task_id) == ["start", "done"]  # ... and its effects happened once
            with stack.runtime.sessions() as session:
                successes = session.scalars(
                    select(TaskEvent).where(TaskEvent.task_id == task_id, TaskEvent.state == "SUCCESS")
                ).all()
                steps = {c.stage: c.status for c in load_checkpoints(session, task_id)}
            assert len(successes) == 1
            assert steps == {"start": COMPLETED, "done": COMPLETED}
        wait_until(lambda: worker.output().count("died with exit code") == 2, timeout=10, what="2 restarts")
