"""A worker process that dies gives its leases up at once: its tasks need not wait for them to lapse."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select, text, update

from actors.runtime import Runtime
from interlock.cli.worker import Supervisor, worker_owner
from interlock.settings import Settings
from models.base import utcnow
from models.leases import expire_leases
from models.task_transitions import create_task
from models.tasks import Task, TaskEvent, TaskState
from tests.processes import Proc, base_env
from tests.support import get_task, wait_for_state, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]  # the settings fixture makes a vhost


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime.open(settings)
    yield runtime
    runtime.close()


def _leased_task(runtime: Runtime, *, owner: str, state: str = TaskState.PROCESSING) -> str:
    task_id = str(uuid.uuid4())
    with runtime.sessions.begin() as session:
        create_task(session, task_id=task_id, workflow="w", actor="a", queue="default", input={})
        session.execute(
            update(Task)
            .where(Task.id == task_id)
            .values(state=state, lease_owner=owner, lease_expires_at=utcnow() + timedelta(seconds=60))
        )
    return task_id


def _lease_left(runtime: Runtime, task_id: str) -> float:
    task = get_task(runtime.sessions, task_id)
    assert task is not None
    assert task.lease_expires_at is not None
    return (task.lease_expires_at - utcnow()).total_seconds()


def _lease_end(runtime: Runtime, task_id: str) -> datetime:
    task = get_task(runtime.sessions, task_id)
    assert task is not None
    assert task.lease_expires_at is not None
    return task.lease_expires_at


def _finished_at(runtime: Runtime, task_id: str) -> datetime:
    task = get_task(runtime.sessions, task_id)
    assert task is not None
    assert task.finished_at is not None
    return task.finished_at


def _dead_process() -> multiprocessing.process.BaseProcess:
    process = multiprocessing.get_context("spawn").Process(target=os.getpid)
    process.start()
    process.join(timeout=30)
    assert process.exitcode == 0
    return process


def test_expire_leases_touches_only_the_named_owners_running_tasks(runtime: Runtime) -> None:
    dead, alive = "host:1:dead0000", "host:1:alive000"  # same host and pid, another process
    running = _leased_task(runtime, owner=dead)
    other = _leased_task(runtime, owner=alive)
    others_lease = _lease_end(runtime, other)
    with runtime.sessions.begin() as session:
        assert expire_leases(session, owners=[dead]) == 1
        assert expire_leases(session, owners=[]) == 0
    assert _lease_left(runtime, running) <= 0
    assert _lease_end(runtime, other) == others_lease


def test_supervisor_releases_an_exited_childs_leases_once(settings: Settings, runtime: Runtime, caplog) -> None:
    caplog.set_level(logging.INFO)
    supervisor = Supervisor(settings, queues=None, processes=1, threads=1)
    child = _dead_process()
    assert child.pid is not None
    supervisor.owners[child.pid] = worker_owner(child.pid, "feedbeef")
    task_id = _leased_task(runtime, owner=worker_owner(child.pid, "feedbeef"))
    reused_pid = _leased_task(runtime, owner=worker_owner(child.pid, "0ther000"))  # the pid, reused
    reused_pids_lease = _lease_end(runtime, reused_pid)

    assert supervisor.release_leases([child]) == 1
    assert _lease_left(runtime, task_id) <= 0
    assert _lease_end(runtime, reused_pid) == reused_pids_lease
    assert supervisor.release_leases([child]) == 0  # known owners are released once
    assert f"released 1 task lease(s) of exited worker process(es) [{child.pid}]" in caplog.text
    assert supervisor._engine is not None
    supervisor._engine.dispose()


def test_supervisor_goes_on_when_the_database_is_unreachable(settings: Settings, caplog) -> None:
    unreachable = settings.replace(database_url="postgresql://nobody@127.0.0.1:1/nothing")
    supervisor = Supervisor(unreachable, queues=None, processes=1, threads=1)
    child = _dead_process()
    assert child.pid is not None
    supervisor.owners[child.pid] = worker_owner(child.pid, "feedbeef")

    assert supervisor.release_leases([child]) == 0
    assert "could not release the task leases of exited worker process(es)" in caplog.text


# -- a real `interlock worker` --------------------------------------------------------------------


def _holders(runtime: Runtime, task_ids: list[str]) -> dict[str, int]:
    """Each running task's worker pid."""
    with runtime.sessions() as session:
        rows = session.execute(
            select(Task.id, Task.lease_owner).where(Task.id.in_(task_ids), Task.state == TaskState.PROCESSING)
        ).all()
    return {task_id: int(owner.split(":")[1]) for task_id, owner in rows if owner}


@pytest.mark.slow
def test_tasks_of_a_killed_worker_process_finish_long_before_its_leases_would_lapse(
    settings: Settings, bench_runs: Engine, tmp_path, make_stack
) -> None:
    settings = settings.replace(agent_modules="testkit.workflows", lease_seconds=60.0)
    stack = make_stack(settings, worker=False)
    env = base_env(settings.to_env())
    with Proc(["worker", "--processes", "2", "--threads", "2"], env=env, log=tmp_path / "w.log") as worker:
        # Both processes serving before any task is sent: each then takes two (prefetch = threads).
        wait_until(lambda: worker.output().count("worker process serving") == 2, timeout=60, what="2 processes")
        task_ids = [stack.submit(query=f"long {n}", workflow="bench_work", context={"sleep": 5}) for n in range(4)]

        def all_running() -> dict[str, int] | None:
            holders = _holders(stack.runtime, task_ids)
            return holders if len(holders) == 4 and len(set(holders.values())) == 2 else None

        holders = wait_until(all_running, timeout=60, what="both worker processes running two tasks each")
        victim = min(holders.values())
        orphans = sorted(t for t, pid in holders.items() if pid == victim)
        survivors = sorted(t for t, pid in holders.items() if pid != victim)
        lapse = min(_lease_end(stack.runtime, t) for t in orphans)  # a dead process renews no lease
        os.kill(victim, signal.SIGKILL)

        for task_id in task_ids:
            task = wait_for_state(stack.runtime.sessions, task_id, {"SUCCESS", "FAILURE"}, timeout=60)
            assert task.state == "SUCCESS", (task.error, worker.output()[-3000:])
        # Its tasks ran again and finished before its leases would have lapsed: released, not waited out.
        assert all(_finished_at(stack.runtime, t) < lapse for t in orphans)
        assert "released" in worker.output()
        assert f"[{victim}]" in worker.output()

        with stack.runtime.sessions() as session:
            successes = dict(
                session.execute(
                    select(TaskEvent.task_id, func.count())
                    .where(TaskEvent.task_id.in_(task_ids), TaskEvent.state == "SUCCESS")
                    .group_by(TaskEvent.task_id)
                ).all()
            )
            attempts = dict(session.execute(select(Task.id, Task.attempts).where(Task.id.in_(task_ids))).all())
        with bench_runs.connect() as connection:
            done_marks = dict(
                connection.execute(
                    text("SELECT task_id, count(*) FROM bench_runs WHERE kind = 'done' GROUP BY task_id")
                ).all()
            )
        assert successes == dict.fromkeys(task_ids, 1)
        assert {t: done_marks.get(t) for t in task_ids} == dict.fromkeys(task_ids, 1)
        # Only the dead process's tasks ran again; the live process's leases were left alone.
        assert {t: attempts[t] for t in orphans} == dict.fromkeys(orphans, 2)
        assert {t: attempts[t] for t in survivors} == dict.fromkeys(survivors, 1)
