"""Cancellation: a queued task never starts, a running one stops waiting on its call, children follow."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from models.tasks import Task
from tests.support import events, get_task, llm_calls, wait_for_state, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


#: How long the LLM call that each running task is cancelled in would take to answer.
HANG = 30.0


def _cancel(stack, task_id: str):
    return stack.client.simulate_post(f"/agent/cancel/{task_id}")


def _answers_at(fake_llm, prefix: str) -> float:
    """When (``time.monotonic()``) the hung LLM call whose user message starts with ``prefix`` answers."""
    [hung] = [r for r in list(fake_llm.requests) if r["body"]["messages"][-1]["content"].startswith(prefix)]
    return hung["time"] + HANG


def test_cancelled_queued_task_never_starts(settings, make_stack) -> None:
    stack = make_stack(settings, worker=False)
    task_id = stack.submit(query="never run me")
    answer = _cancel(stack, task_id)
    assert answer.status_code == 202, answer.text
    assert answer.json["state"] == "CANCELLED"
    assert _cancel(stack, task_id).status_code == 409
    assert _cancel(stack, "00000000-0000-0000-0000-000000000000").status_code == 404

    make_stack(settings.replace(worker_threads=2))  # a worker starts
    later = stack.submit(query="run me")
    wait_for_state(stack.runtime.sessions, later, "SUCCESS", timeout=30)
    wait_until(lambda: stack.broker.get_queue_message_counts("default")[0] == 0, timeout=10, what="queue drained")
    assert get_task(stack.runtime.sessions, task_id).state == "CANCELLED"
    kinds = [(e.kind, e.state) for e in events(stack.runtime.sessions, task_id)]
    assert kinds == [("state", "PENDING"), ("state", "CANCELLED")]
    assert stack.broker.get_queue_message_counts("default")[2] == 0  # nothing dead-lettered


def test_running_task_stops_in_the_middle_of_its_llm_call(settings, fake_llm, make_stack) -> None:
    # The reasoning call would take 30 s (and the LLM timeout is longer): cancelling stops the wait.
    fake_llm.hang_next(1, seconds=HANG, match="Analyze this query: stop me")
    stack = make_stack(settings.replace(llm_timeout=60.0))
    task_id = stack.submit(query="stop me")
    wait_until(lambda: llm_calls(fake_llm, "Analyze this query: stop me") == 1, timeout=30, what="the call")
    answer = _cancel(stack, task_id)
    assert answer.status_code == 202, answer.text
    assert answer.json["state"] == "CANCELLING"
    wait_until(
        lambda: any(e.kind == "stopped" for e in events(stack.runtime.sessions, task_id)),
        timeout=HANG + 10,
        what="the workflow to stop",
    )
    # Issue 14: cancelling interrupts the call the task waits on. It stops within about a second (the
    # worker looks for cancellations twice a second); the bound is the call's own answer, far off.
    assert time.monotonic() < _answers_at(fake_llm, "Analyze this query: stop me")
    task = get_task(stack.runtime.sessions, task_id)
    assert task.state == "CANCELLED"
    assert task.lease_owner is None
    assert task.result is None
    assert task.attempts == 1
    assert llm_calls(fake_llm, "Query: stop me") == 0  # the synthesis call was never made
    steps = [e.step for e in events(stack.runtime.sessions, task_id) if e.kind == "progress"]
    assert steps[-1] == "reasoning"
    # Acknowledged, not dead-lettered.
    assert stack.broker.get_queue_message_counts("default")[2] == 0


def test_cancelling_a_workflow_interrupts_its_running_child(settings, fake_llm, make_stack) -> None:
    # The planner's LLM call would take 30 s; cancelling the workflow stops the planner waiting on it.
    fake_llm.hang_next(1, seconds=HANG, match="[agent:planner] Goal: halt the plan")
    stack = make_stack(settings.replace(rate_limits="", llm_timeout=60.0))
    parent = stack.submit(query="halt the plan", workflow="multi_agent")

    def planner() -> Task | None:
        with stack.runtime.sessions() as session:
            child = session.scalars(select(Task).where(Task.parent_id == parent)).first()
        return child if child is not None and child.current_step == "planning" else None

    child = wait_until(planner, timeout=30, what="the planner to run")
    wait_until(lambda: llm_calls(fake_llm, "[agent:planner]") == 1, timeout=30, what="the planner's LLM call")
    answer = _cancel(stack, parent)
    assert answer.status_code == 202, answer.text
    assert answer.json["state"] in {"CANCELLED", "CANCELLING"}  # suspended (usually) or about to be
    assert answer.json["children_cancelled"] == [child.id]
    stopped = wait_until(
        lambda: next((e for e in events(stack.runtime.sessions, child.id) if e.kind == "stopped"), None),
        timeout=HANG + 10,
        what="the planner to stop",
    )
    assert time.monotonic() < _answers_at(fake_llm, "[agent:planner]")  # as in the test above
    assert stopped.data["reason"] == "the workflow stopped after its cancellation"
    with stack.runtime.sessions() as session:
        children = session.scalars(select(Task).where(Task.parent_id == parent)).all()
    assert [(c.workflow, c.state, c.result) for c in children] == [("planner", "CANCELLED", None)]
    assert get_task(stack.runtime.sessions, parent).state == "CANCELLED"
    assert get_task(stack.runtime.sessions, child.id).lease_owner is None
    # The planner ended as a cancellation, not as a success whose result was thrown away.
    states = [e.state for e in events(stack.runtime.sessions, child.id) if e.kind in ("state", "stopped")]
    assert "SUCCESS" not in states
