"""A body that returned is not run again: its value is recorded before the task's end is written.

A worker killed after a task's body returned, but before the task's SUCCESS committed, left the
redelivered task to run the whole body again: its plain code (and any effect outside a step) twice,
and a result from the second run. Now the return is checkpointed (stage ``interlock:body``) first,
and the next start finishes the task with the recorded value.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from actors.context import TaskContext
from actors.runtime import Runtime
from interlock.settings import Settings
from models.checkpoints import BODY, COMPLETED, load_checkpoints
from models.tasks import TaskEvent
from tests.processes import Proc, base_env
from tests.support import blocked_backend, get_task, kill_while_blocked, marks, wait_for_state, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


@pytest.mark.slow
def test_worker_killed_between_the_body_return_and_the_end_does_not_run_the_body_again(
    settings: Settings, bench_runs: Engine, tmp_path, make_stack
) -> None:
    settings = settings.replace(agent_modules="tests.workflows")
    stack = make_stack(settings, worker=False)
    env = base_env(settings.to_env())
    with Proc(["worker", "--processes", "1", "--threads", "1"], env=env, log=tmp_path / "w.log") as worker:
        task_id = stack.submit(query="killed after its body", workflow="test_counted", context={"sleep": 1})
        wait_until(lambda: len(marks(bench_runs, task_id)) == 1, timeout=60, what="the body's start")
        task = get_task(stack.runtime.sessions, task_id)
        assert task is not None
        assert task.lease_owner
        victim = int(task.lease_owner.split(":")[1])
        with bench_runs.connect() as blocker:
            # Finishing the task waits for this row lock; meanwhile its body returned.
            blocker.execute(text("SELECT id FROM tasks WHERE id = :t FOR UPDATE"), {"t": task_id})
            wait_until(lambda: marks(bench_runs, task_id)[-1:] == ["done"], what="the done step")
            backend = wait_until(lambda: blocked_backend(bench_runs, "%UPDATE tasks%finished_at%"), what="finish")
            kill_while_blocked(blocker, victim, backend)

        ended = wait_for_state(stack.runtime.sessions, task_id, {"SUCCESS", "FAILURE"}, timeout=60)
        assert ended.state == "SUCCESS", (ended.error, worker.output()[-3000:])
        assert ended.attempts == 2  # redelivered and started again after the kill ...
        bodies = [mark for mark in marks(bench_runs, task_id) if mark.startswith("body ")]
        assert len(bodies) == 1, bodies  # ... but its body ran once
        [body] = bodies
        assert marks(bench_runs, task_id) == [body, "done"]
        assert ended.result == {"status": "success", "token": body.removeprefix("body ")}  # the first run's value
        with stack.runtime.sessions() as session:
            successes = session.scalars(
                select(TaskEvent).where(TaskEvent.task_id == task_id, TaskEvent.state == "SUCCESS")
            ).all()
            stages = {c.stage: c.status for c in load_checkpoints(session, task_id, with_body=True)}
            steps = {c.stage for c in load_checkpoints(session, task_id)}
        assert len(successes) == 1
        assert stages == {"done": COMPLETED, BODY: COMPLETED}
        assert steps == {"done"}  # the body's record is not a step
        wait_until(lambda: "died with exit code" in worker.output(), timeout=10, what="the restart")


# -- what it costs: nothing for a body that made no step or call ----------------------------------


@pytest.fixture
def runtime(settings: Settings) -> Any:
    runtime = Runtime.open(settings)
    yield runtime
    runtime.close()


def _context(runtime: Runtime, task_id: str, *, attempt: int) -> TaskContext:
    return TaskContext(task_id=task_id, input={}, attempt=attempt, runtime=runtime, soft_deadline=time.monotonic() + 60)


def test_a_body_without_steps_records_nothing_and_a_first_attempt_reads_nothing(runtime: Runtime) -> None:
    task_id = str(uuid.uuid4())
    ctx = _context(runtime, task_id, attempt=1)
    assert ctx.earlier_body() is None
    ctx.record_body({"status": "success"})
    with runtime.sessions() as session:
        assert load_checkpoints(session, task_id, with_body=True) == []


def test_a_body_with_a_step_records_its_value_for_the_next_attempt(runtime: Runtime) -> None:
    task_id = str(uuid.uuid4())
    first = _context(runtime, task_id, attempt=1)
    assert first.step("plan", lambda: {"plan": 1}) == {"plan": 1}
    first.record_body({"answer": 42})

    again = _context(runtime, task_id, attempt=2)
    earlier = again.earlier_body()
    assert earlier is not None
    assert (earlier.result, earlier.attempt) == ({"answer": 42}, 1)
    assert again.completed_steps() == {"plan": {"plan": 1}}  # the record is not a step
