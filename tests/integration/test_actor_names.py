"""The agent workflow's actor has the reference article's name, and messages sent under its old one still run."""

from __future__ import annotations

import uuid

import pytest

from actors.messages import task_message
from models.task_transitions import create_task
from models.tasks import Task
from tests.stack import Stack
from tests.support import wait_for_state, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

#: The name the actor had before it took the article's: messages may still be queued under it.
OLD_ACTOR = "interlock.agent"


def test_a_dead_lettered_agent_task_shows_the_articles_actor_name(stack: Stack, fake_llm) -> None:
    fake_llm.fail_next(1, status=401)  # a permanent error: dead-lettered at once
    task_id = stack.submit(query="bad key")
    wait_for_state(stack.runtime.sessions, task_id, "FAILURE")

    def listed() -> dict | None:
        body = stack.client.simulate_get("/dlq").json
        return next((m for q in body["queues"] for m in q["messages"] if m["task_id"] == task_id), None)

    letter = wait_until(listed, timeout=15, what="the agent task in GET /dlq")
    assert letter["actor"] == "execute_agent_workflow"
    with stack.runtime.sessions() as session:
        assert session.get(Task, task_id).actor == "execute_agent_workflow"


def test_a_message_queued_under_the_old_actor_name_still_completes(stack: Stack, fake_llm) -> None:
    # As left by the previous release: the row and the message both name the old actor.
    task_id = str(uuid.uuid4())
    with stack.runtime.sessions.begin() as session:
        create_task(
            session,
            task_id=task_id,
            workflow="agent",
            actor=OLD_ACTOR,
            queue="default",
            input={"query": "queued before the upgrade", "context": {}},
        )
    stack.broker.enqueue(task_message(queue="default", actor=OLD_ACTOR, task_id=task_id))

    task = wait_for_state(stack.runtime.sessions, task_id, {"SUCCESS", "FAILURE"})
    assert task.state == "SUCCESS", task.error
    status = stack.client.simulate_get(f"/agent/status/{task_id}").json
    assert status["state"] == "SUCCESS"
    assert status["result"]["status"] == "success"
