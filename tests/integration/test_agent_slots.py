"""Agent slots (issue 16): a worker process holds more agent tasks than it runs at once.

An agent task spends nearly all its time waiting on its LLM calls. With ``slots`` above
``threads`` the process takes ``slots`` messages, lets ``threads`` of them run up to their
first wait on a call (``actors.running.StartGate``), and the rest of the time they only wait:
so more LLM calls are in flight at once than there are running places, a task waiting on a call
does not keep the others from running, and limits and cancellation still stop a waiting call.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from interlock.cli.worker import start_worker
from interlock.settings import Settings
from models.task_calls import TaskCall
from models.tenants import TenantUsage
from tests.support import get_task, llm_calls, wait_for_state, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

THREADS = 2
SLOTS = 8


@pytest.fixture
def slotted(settings: Settings) -> Iterator[Any]:
    """Starts a worker with ``THREADS`` running places and ``SLOTS`` tasks at once; stops it after the test."""
    started: list[tuple[Any, Any, Any]] = []

    def start(settings: Settings) -> Any:
        worker, broker, runtime = start_worker(settings, queues=None, threads=THREADS, slots=SLOTS)
        started.append((worker, broker, runtime))
        return runtime

    yield start
    for worker, broker, runtime in started:
        worker.stop()
        broker.close()
        runtime.close()


def test_more_llm_calls_overlap_than_running_places_and_tokens_add_up(settings, fake_llm, make_stack, slotted) -> None:
    fake_llm.latency = 1.0
    stack = make_stack(settings, worker=False)
    task_ids = [stack.submit(query=f"slot {n}") for n in range(SLOTS)]
    slotted(settings)
    ended = {"SUCCESS", "FAILURE"}
    tasks = [wait_for_state(stack.runtime.sessions, task_id, ended, timeout=90) for task_id in task_ids]

    assert [task.state for task in tasks] == ["SUCCESS"] * SLOTS, [task.error for task in tasks]
    # Two running places, yet the fake LLM answered more than two calls at once.
    assert fake_llm.max_in_flight > THREADS, fake_llm.max_in_flight
    with stack.runtime.sessions() as session:
        for task in tasks:
            calls = list(session.scalars(select(TaskCall).where(TaskCall.task_id == task.id)))
            assert len(calls) == 2
            assert all(call.kind == "llm" and call.error is None for call in calls)
            assert all(call.duration_ms is not None and call.duration_ms >= 1000 for call in calls)
            usage = task.result["metadata"]["usage"]
            assert usage["prompt_tokens"] == sum(call.prompt_tokens for call in calls) > 0
            assert usage["completion_tokens"] == sum(call.completion_tokens for call in calls) > 0
            assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        counted = session.scalar(select(func.sum(TenantUsage.tokens)))
        assert counted == sum(task.result["metadata"]["usage"]["total_tokens"] for task in tasks)


def test_a_task_waiting_on_its_call_leaves_its_place_and_cancelling_still_stops_the_wait(
    settings, fake_llm, make_stack, slotted
) -> None:
    # One running place: the first task's reasoning call hangs; the second still runs to the end.
    fake_llm.hang_next(1, seconds=60, match="Analyze this query: hangs")
    stack = make_stack(settings, worker=False)
    hung = stack.submit(query="hangs")
    slotted(settings.replace(worker_threads=1, llm_timeout=120.0))
    wait_until(lambda: llm_calls(fake_llm, "Analyze this query: hangs", status=None) == 1, what="the hung call")
    quick = stack.submit(query="quick")
    assert wait_for_state(stack.runtime.sessions, quick, {"SUCCESS", "FAILURE"}).state == "SUCCESS"
    waiting = get_task(stack.runtime.sessions, hung)
    assert waiting is not None
    assert waiting.state == "PROCESSING"

    answer = stack.client.simulate_post(f"/agent/cancel/{hung}")
    assert answer.status_code == 202, answer.text
    cancelled = wait_for_state(stack.runtime.sessions, hung, {"CANCELLED", "SUCCESS", "FAILURE"})
    assert cancelled.state == "CANCELLED"

    def abandoned() -> str | None:  # the worker records the call's end once its wait stopped
        with stack.runtime.sessions() as session:
            [call] = session.scalars(select(TaskCall).where(TaskCall.task_id == hung))
        return call.error

    # The hung call would answer after 60 s; the wait on it ends long before.
    assert "cancel" in wait_until(abandoned, timeout=30, what="the hung call abandoned").lower()


def test_the_hard_time_limit_still_ends_a_waiting_call(settings, fake_llm, make_stack, slotted) -> None:
    fake_llm.hang_next(1, seconds=60, match="Analyze this query: too slow")
    stack = make_stack(settings, worker=False)
    task_id = stack.submit(query="too slow")
    slotted(settings.replace(time_limit=4.0, soft_time_limit=3.0, llm_timeout=60.0))
    task = wait_for_state(stack.runtime.sessions, task_id, {"SUCCESS", "FAILURE"})
    assert task.state == "FAILURE", task.result
    assert "time limit exceeded" in (task.error or ""), task.error
    assert task.attempts == 1
