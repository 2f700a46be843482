"""The heartbeat renews the leases of the tasks its process runs now, and notices their cancellation."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import datetime, timedelta

import pytest
from sqlalchemy import update

from actors.cancellation import cancel_task
from actors.errors import TaskCancelled
from actors.middleware.maintenance import heartbeat
from actors.running import RunningTask
from actors.runtime import Runtime
from interlock.settings import Settings
from models.base import utcnow
from models.task_transitions import create_task
from models.tasks import Task, TaskState
from tests.support import get_task

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]  # the settings fixture makes a vhost


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime.open(settings.replace(lease_seconds=30.0))
    yield runtime
    runtime.close()


def _leased(runtime: Runtime, *, owner: str, seconds: float = 1.0) -> str:
    task_id = str(uuid.uuid4())
    with runtime.sessions.begin() as session:
        create_task(session, task_id=task_id, workflow="w", actor="a", queue="default", input={})
        session.execute(
            update(Task)
            .where(Task.id == task_id)
            .values(
                state=TaskState.PROCESSING, lease_owner=owner, lease_expires_at=utcnow() + timedelta(seconds=seconds)
            )
        )
    return task_id


def _lease_end(runtime: Runtime, task_id: str) -> datetime:
    task = get_task(runtime.sessions, task_id)
    assert task is not None
    assert task.lease_expires_at is not None
    return task.lease_expires_at


def test_only_the_leases_of_tasks_running_here_are_renewed(runtime: Runtime) -> None:
    running = _leased(runtime, owner=runtime.owner)
    left_behind = _leased(runtime, owner=runtime.owner)  # its thread moved on after a failed write
    elsewhere = _leased(runtime, owner="another-host:1:feedbeef")
    runtime.running.add(RunningTask(running))
    runtime.running.add(RunningTask(elsewhere))  # a lease another process took over is not ours to renew
    leases = {task_id: _lease_end(runtime, task_id) for task_id in (left_behind, elsewhere)}

    renewed_from = utcnow()
    assert heartbeat(runtime, renew=True) == []
    assert _lease_end(runtime, running) >= renewed_from + timedelta(seconds=30)  # INTERLOCK_LEASE_SECONDS
    # The others keep the leases they had: left behind, it lapses, and reclaim re-publishes the task.
    assert {task_id: _lease_end(runtime, task_id) for task_id in leases} == leases


def test_a_cancelled_running_task_is_woken_out_of_its_wait(runtime: Runtime) -> None:
    task_id = _leased(runtime, owner=runtime.owner, seconds=30)
    task = RunningTask.starting_now(task_id, time_limit=60, soft_time_limit=60)
    runtime.running.add(task)
    assert heartbeat(runtime, renew=False) == []
    with runtime.sessions.begin() as session:
        cancel_task(session, task_id)

    assert heartbeat(runtime, renew=False) == [task_id]
    with pytest.raises(TaskCancelled):
        task.wait(Future(), what="LLM call")  # returns at once: nothing would ever complete it
    assert heartbeat(runtime, renew=True) == [task_id]  # the renewing heartbeat notices it too
