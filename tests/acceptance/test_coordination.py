"""Agents on their own queues, cluster-wide limits and crash-proof fan-in, with real worker processes."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time

import pytest
import requests
from sqlalchemy import func, select

from models.tasks import Task, TaskEvent
from tests.processes import Proc, base_env
from tests.services import MANAGEMENT_URL
from tests.support import get_task, wait_for_state, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.slow]


def test_limit_holds_across_two_worker_processes(settings, tmp_path, make_stack) -> None:
    settings = settings.replace(agent_modules="tests.workflows", rate_limits="default=5/s", maintenance_interval=0.1)
    stack = make_stack(settings, worker=False)
    env = base_env(settings.to_env())
    task_ids = [stack.submit(query=f"limited {n}", workflow="test_echo") for n in range(40)]
    with Proc(["worker", "--processes", "2", "--threads", "4"], env=env, log=tmp_path / "w.log"):
        for task_id in task_ids:
            wait_for_state(stack.runtime.sessions, task_id, "SUCCESS", timeout=60)
    with stack.runtime.sessions() as session:
        starts = sorted(
            e.data["rate_limit_admitted_at"]
            for e in session.scalars(
                select(TaskEvent).where(TaskEvent.task_id.in_(task_ids), TaskEvent.state == "PROCESSING")
            )
            if e.kind == "state"
        )
        workers = {
            e.data["worker"].split(":")[1]
            for e in session.scalars(select(TaskEvent).where(TaskEvent.task_id.in_(task_ids)))
            if e.kind == "state" and e.state == "PROCESSING"
        }
    assert len(starts) == 40
    assert len(workers) == 2  # both processes took work
    busiest = max(sum(1 for u in starts if t <= u < t + 1.0) for t in starts)
    assert busiest <= 5, busiest
    assert starts[-1] - starts[0] >= (40 / 5) - 1 - 0.5


def test_fifty_chords_survive_sigkills_and_each_callback_runs_once(settings, fake_llm, tmp_path, make_stack) -> None:
    settings = settings.replace(rate_limits="", maintenance_interval=0.2)
    fake_llm.latency = 0.2
    stack = make_stack(settings, worker=False)
    env = base_env(settings.to_env())
    rng = random.Random(11)
    with Proc(["worker", "--processes", "2", "--threads", "8"], env=env, log=tmp_path / "w.log") as worker:
        parents = [stack.submit(query=f"chord {n}", workflow="chord") for n in range(50)]
        killed: set[int] = set()
        deadline = time.monotonic() + 60
        while len(killed) < 5 and time.monotonic() < deadline:
            with stack.runtime.sessions() as session:
                owners = session.scalars(select(Task.lease_owner).where(Task.lease_owner.is_not(None))).all()
            pids = {int(owner.split(":")[1]) for owner in owners} - killed
            if not pids:
                continue
            time.sleep(rng.uniform(0.0, 0.4))  # a random moment, not a wait for work
            victim = rng.choice(sorted(pids))
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
            killed.add(victim)
        assert len(killed) == 5, "not enough busy moments to kill"

        def all_done() -> bool:
            with stack.runtime.sessions() as session:
                states = session.scalars(select(Task.state).where(Task.id.in_(parents))).all()
            return all(state in ("SUCCESS", "FAILURE") for state in states)

        try:
            wait_until(all_done, timeout=120, interval=0.5, what="every chord to end")
        except AssertionError:
            raise AssertionError(_stuck_report(stack, parents)) from None
        for parent in parents:
            task = get_task(stack.runtime.sessions, parent)
            assert task.state == "SUCCESS", (task.error, worker.output()[-2000:])
            assert task.result["total_agents"] == 3
            assert task.result["successful"] == 3
        with stack.runtime.sessions() as session:
            callbacks = session.execute(
                select(Task.parent_id, func.count())
                .where(Task.workflow == "aggregate", Task.state == "SUCCESS")
                .group_by(Task.parent_id)
            ).all()
            completions = session.scalar(
                select(func.count())
                .select_from(TaskEvent)
                .join(Task, Task.id == TaskEvent.task_id)
                .where(Task.workflow == "aggregate", TaskEvent.state == "SUCCESS")
            )
        assert sorted(p for p, _ in callbacks) == sorted(parents)
        assert all(n == 1 for _, n in callbacks)
        assert completions == 50  # one recorded completion per callback, never two


def test_worker_with_queues_serves_only_those(settings, tmp_path, broker_url, make_stack) -> None:
    settings = settings.replace(rate_limits="")
    stack = make_stack(settings, worker=False)
    env = base_env(settings.to_env())
    research = stack.submit(query="not for you", workflow="research")
    scraper = stack.submit(query="for you", workflow="scraper")
    with Proc(["worker", "--queues", "scraper", "--processes", "1"], env=env, log=tmp_path / "w.log") as worker:
        wait_for_state(stack.runtime.sessions, scraper, "SUCCESS", timeout=30)
        assert "with 5 threads" in worker.output()  # the scraper queue's configured concurrency
        assert get_task(stack.runtime.sessions, research).state == "PENDING"
        assert stack.broker.get_queue_message_counts("research")[0] == 1
    # A worker for every queue: each agent's queue and dead-letter queue is visible in RabbitMQ.
    stack = make_stack(settings)
    wait_for_state(stack.runtime.sessions, research, "SUCCESS", timeout=30)
    vhost = broker_url.rsplit("/", 1)[1]
    queues = requests.get(f"{MANAGEMENT_URL}/queues/{vhost}", auth=("guest", "guest"), timeout=10).json()
    names = {q["name"]: q for q in queues}
    for agent in ("research", "scraper", "reviewer", "planner", "tools"):
        assert agent in names, sorted(names)
        assert f"{agent}.XQ" in names, sorted(names)
        assert names[agent]["durable"]
        assert names[agent]["arguments"]["x-max-priority"] == settings.queue_max_priority


def _stuck_report(stack, parents: list[str]) -> list[object]:
    """What the unfinished chords and their children look like, for the failure message."""
    report: list[object] = []
    with stack.runtime.sessions() as session:
        stuck = session.scalars(select(Task).where(Task.id.in_(parents), Task.state != "SUCCESS")).all()
        for task in stuck[:3]:
            kids = session.scalars(select(Task).where(Task.parent_id == task.id)).all()
            report.append((task.state, task.lease_owner, task.wake_pending, [(k.workflow, k.state) for k in kids]))
    return report
