"""Cancellation: a queued task never starts, a running one stops at its next step, children follow."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from interlock.worker import start_worker
from models.tasks import Task
from tests.conftest import start_stack, stop_stack
from tests.support import events, get_task, llm_calls, wait_for_state, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


def _cancel(stack, task_id: str):
    return stack.client.simulate_post(f"/agent/cancel/{task_id}")


def test_cancelled_queued_task_never_starts(settings) -> None:
    stack = start_stack(settings, worker=False)
    worker = None
    try:
        task_id = stack.submit(query="never run me")
        answer = _cancel(stack, task_id)
        assert answer.status_code == 202, answer.text
        assert answer.json["state"] == "CANCELLED"
        assert _cancel(stack, task_id).status_code == 409
        assert _cancel(stack, "00000000-0000-0000-0000-000000000000").status_code == 404

        worker, worker_broker, worker_runtime = start_worker(settings, queues=None, threads=2)
        later = stack.submit(query="run me")
        wait_for_state(stack.runtime.sessions, later, "SUCCESS", timeout=30)
        wait_until(lambda: stack.broker.get_queue_message_counts("default")[0] == 0, timeout=10, what="queue drained")
        assert get_task(stack.runtime.sessions, task_id).state == "CANCELLED"
        kinds = [(e.kind, e.state) for e in events(stack.runtime.sessions, task_id)]
        assert kinds == [("state", "PENDING"), ("state", "CANCELLED")]
        assert stack.broker.get_queue_message_counts("default")[2] == 0  # nothing dead-lettered
    finally:
        if worker is not None:
            worker.stop()
            worker_broker.close()
            worker_runtime.close()
        stop_stack(stack)


def test_running_task_stops_at_its_next_progress_step(stack, fake_llm) -> None:
    fake_llm.hang_next(1, seconds=3, match="Analyze this query: stop me")
    task_id = stack.submit(query="stop me")
    wait_until(
        lambda: (t := get_task(stack.runtime.sessions, task_id)) and t.current_step == "reasoning",
        timeout=30,
        what="the reasoning step",
    )
    answer = _cancel(stack, task_id)
    assert answer.status_code == 202, answer.text
    assert answer.json["state"] == "CANCELLING"
    wait_until(
        lambda: any(e.kind == "stopped" for e in events(stack.runtime.sessions, task_id)),
        timeout=30,
        what="the workflow to stop",
    )
    task = get_task(stack.runtime.sessions, task_id)
    assert task.state == "CANCELLED" and task.lease_owner is None and task.result is None
    assert llm_calls(fake_llm, "Query: stop me") == 0  # the synthesis call was never made
    steps = [e.step for e in events(stack.runtime.sessions, task_id) if e.kind == "progress"]
    assert steps[-1] == "tool_execution" and "synthesis" not in steps
    # Acknowledged, not dead-lettered.
    assert stack.broker.get_queue_message_counts("default")[2] == 0


def test_cancelling_a_workflow_cancels_its_children(settings, fake_llm) -> None:
    fake_llm.hang_next(1, seconds=3, match="[agent:planner] Goal: halt the plan")
    stack = start_stack(settings.replace(rate_limits=""))
    try:
        parent = stack.submit(query="halt the plan", workflow="multi_agent")

        def planner() -> Task | None:
            with stack.runtime.sessions() as session:
                child = session.scalars(select(Task).where(Task.parent_id == parent)).first()
            return child if child is not None and child.current_step == "planning" else None

        child = wait_until(planner, timeout=30, what="the planner to run")
        answer = _cancel(stack, parent)
        assert answer.status_code == 202, answer.text
        assert answer.json["state"] in {"CANCELLED", "CANCELLING"}  # suspended (usually) or about to be
        assert answer.json["children_cancelled"] == [child.id]
        wait_until(
            lambda: any(e.kind == "stopped" for e in events(stack.runtime.sessions, child.id)),
            timeout=30,
            what="the planner to stop",
        )
        with stack.runtime.sessions() as session:
            children = session.scalars(select(Task).where(Task.parent_id == parent)).all()
        assert [(c.workflow, c.state) for c in children] == [("planner", "CANCELLED")]
        assert get_task(stack.runtime.sessions, parent).state == "CANCELLED"
        assert get_task(stack.runtime.sessions, child.id).lease_owner is None
    finally:
        stop_stack(stack)
