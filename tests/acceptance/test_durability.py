"""Crashes, poison messages and RabbitMQ's consumer_timeout, with real worker processes."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import time

import pytest
from sqlalchemy import select

from models.checkpoints import load_checkpoints
from models.tasks import TaskEvent, TaskState
from tests.processes import Proc, base_env
from tests.support import events, get_task, stage_calls, wait_for_state, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.slow]


def _request_times(fake_llm, stage: str, query: str) -> list[float]:
    prefix = f"[stage:{stage}] Query: {query}\n"
    return [r["wall"] for r in list(fake_llm.requests) if r["body"]["messages"][-1]["content"].startswith(prefix)]


def _worker_pids(stack, task_ids: list[str]) -> set[int]:
    """Pids of worker processes currently holding a lease on one of ``task_ids``."""
    pids = set()
    for task_id in task_ids:
        task = get_task(stack.runtime.sessions, task_id)
        if task is not None and task.state == TaskState.PROCESSING and task.lease_owner:
            pids.add(int(task.lease_owner.split(":")[1]))
    return pids


def test_checkpointed_workflows_survive_five_sigkills(settings, fake_llm, tmp_path, make_stack) -> None:
    # A killed process's tasks restart at once (its leases are released), so five quick kills can
    # hit the same task again and again; the poison cap is tested on its own below.
    settings = settings.replace(max_deliveries=20)
    fake_llm.latency = 0.3
    stack = make_stack(settings, worker=False)
    env = base_env(settings.to_env())
    rng = random.Random(7)
    with Proc(["worker", "--processes", "2", "--threads", "4"], env=env, log=tmp_path / "w.log") as worker:
        queries = [f"wf-{n:02d}" for n in range(20)]
        task_ids = [stack.submit(query=q, workflow="checkpointed") for q in queries]
        killed: set[int] = set()
        while len(killed) < 5:
            pids = wait_until(lambda: _worker_pids(stack, task_ids) - killed, timeout=60, what="a busy worker")
            time.sleep(rng.uniform(0.0, 0.6))  # a random moment inside the work, not a wait for it
            victim = rng.choice(sorted(pids))
            os.kill(victim, signal.SIGKILL)
            killed.add(victim)
        for task_id in task_ids:
            task = wait_for_state(stack.runtime.sessions, task_id, {"SUCCESS", "FAILURE"}, timeout=120)
            assert task.state == "SUCCESS", (task.error, worker.output()[-2000:])
        # A stage interrupted by a kill runs again (it never finished); a stage that completed
        # is never run again: no LLM request for it starts after its checkpoint was written.
        for query, task_id in zip(queries, task_ids, strict=True):
            with stack.runtime.sessions() as session:
                completed = {c.stage: c.updated_at.timestamp() for c in load_checkpoints(session, task_id)}
            for stage in ("reasoning", "analyzing", "reflecting"):
                starts = _request_times(fake_llm, stage, query)
                assert starts, (query, stage)
                assert max(starts) < completed[stage], (query, stage, starts, completed[stage])
        wait_until(lambda: worker.output().count("died with exit code") == 5, timeout=10, what="5 restarts")


def test_poison_task_is_dead_lettered_and_the_worker_keeps_serving(settings, tmp_path, make_stack) -> None:
    settings = settings.replace(agent_modules="tests.workflows", max_deliveries=3, lease_seconds=1.5)
    stack = make_stack(settings, worker=False)
    env = base_env(settings.to_env())
    dead_before = stack.broker.get_queue_message_counts("default")[2]
    with Proc(["worker", "--processes", "1", "--threads", "2"], env=env, log=tmp_path / "w.log") as worker:
        poison = stack.submit(query="die", workflow="test_self_kill", context={"fixed_flag": str(tmp_path / "x")})
        task = wait_for_state(stack.runtime.sessions, poison, "FAILURE", timeout=90)
        assert "started 3 times" in (task.error or ""), task.error
        assert "INTERLOCK_MAX_DELIVERIES=3" in (task.error or "")
        wait_until(
            lambda: stack.broker.get_queue_message_counts("default")[2] == dead_before + 1,
            timeout=15,
            what="the poison message in default.XQ",
        )
        assert worker.output().count("died with exit code") == 3
        healthy = stack.submit(query="still serving")
        assert wait_for_state(stack.runtime.sessions, healthy, "SUCCESS", timeout=30)


def test_worker_process_is_recycled_after_max_tasks(settings, tmp_path, make_stack) -> None:
    settings = settings.replace(agent_modules="tests.workflows", max_tasks_per_child=2)
    stack = make_stack(settings, worker=False)
    env = base_env(settings.to_env())
    with Proc(["worker", "--processes", "1", "--threads", "1"], env=env, log=tmp_path / "w.log") as worker:
        task_ids = [stack.submit(query=f"echo {n}", workflow="test_echo") for n in range(6)]
        for task_id in task_ids:
            wait_for_state(stack.runtime.sessions, task_id, "SUCCESS", timeout=60)
        with stack.runtime.sessions() as session:
            starts = session.scalars(
                select(TaskEvent).where(TaskEvent.task_id.in_(task_ids), TaskEvent.state == "PROCESSING")
            ).all()
        pids = {e.data["worker"].split(":")[1] for e in starts if e.kind == "state"}
        assert len(pids) >= 3, pids
        assert "recycling this worker process after 2 tasks" in worker.output()


def _rabbit_eval(expression: str) -> str:
    done = subprocess.run(["rabbitmqctl", "eval", expression], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def short_consumer_timeout():
    """RabbitMQ's consumer_timeout lowered to 5 s for channels opened from now on; restored after."""
    before = _rabbit_eval("application:get_env(rabbit, consumer_timeout).")
    _rabbit_eval("application:set_env(rabbit, consumer_timeout, 5000).")
    yield
    if before.startswith("{ok,"):
        _rabbit_eval(f"application:set_env(rabbit, consumer_timeout, {before[4:-1]}).")
    else:
        _rabbit_eval("application:unset_env(rabbit, consumer_timeout).")


def test_long_workflow_and_long_backoff_complete_once_despite_consumer_timeout(
    settings, fake_llm, short_consumer_timeout, caplog, make_stack
) -> None:
    # One stage holds its delivery for ~75 s (RabbitMQ checks about once a minute), and another
    # task waits ~70 s in retry backoff. Each must complete exactly once.
    settings = settings.replace(llm_timeout=120.0, stage_time_limit=300.0, time_limit=600.0, soft_time_limit=580.0)
    fake_llm.hang_next(1, seconds=75, match="[stage:reasoning] Query: long-run\n")
    fake_llm.fail_next(1, status=429, retry_after=70, match="Analyze this query: long-backoff")
    caplog.set_level(logging.INFO)
    stack = make_stack(settings)
    long_run = stack.submit(query="long-run", workflow="checkpointed")
    backoff = stack.submit(query="long-backoff")
    for task_id in (long_run, backoff):
        wait_for_state(stack.runtime.sessions, task_id, "SUCCESS", timeout=200)
    assert get_task(stack.runtime.sessions, long_run).attempts == 1
    assert get_task(stack.runtime.sessions, backoff).attempts == 2
    assert stage_calls(fake_llm, "reasoning", "long-run") == 1
    retry = [e for e in events(stack.runtime.sessions, backoff) if e.state == "RETRY"]
    assert retry[0].data["retry_in_ms"] == 70_000
    # RabbitMQ did close the channel and redeliver: the duplicate was recognised and skipped.
    messages = [r.getMessage() for r in caplog.records]
    assert any("consumer encountered a connection error" in m.lower() for m in messages), "channel never closed"
    assert any("duplicate delivery skipped" in m for m in messages), "no redelivery seen"
