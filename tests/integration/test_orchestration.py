"""Multi-agent workflows: children on their own queues, durable fan-in, failures that end things."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import select

from models.tasks import TERMINAL_STATES, Task
from testkit.fakes.openai_server import FakeOpenAIServer, message_text
from tests.support import llm_calls, parse_sse, wait_for_state, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


@pytest.fixture
def no_limits(settings):
    return settings.replace(rate_limits="")


def _children(stack, parent_id: str) -> dict[str, Task]:
    with stack.runtime.sessions() as session:
        return {t.workflow: t for t in session.scalars(select(Task).where(Task.parent_id == parent_id))}


def test_multi_agent_reviewer_gets_both_results(no_limits, fake_llm, make_stack) -> None:
    stack = make_stack(no_limits)
    parent = stack.submit(query="compare brokers", workflow="multi_agent")
    task = wait_for_state(stack.runtime.sessions, parent, {"SUCCESS", "FAILURE"}, timeout=60)
    assert task.state == "SUCCESS", task.error
    children = _children(stack, parent)
    assert set(children) == {"planner", "research", "scraper", "reviewer"}
    assert {c.queue for c in children.values()} == {"planner", "research", "scraper", "reviewer"}
    reviewed = children["reviewer"].input["context"]["content"]
    assert reviewed["research"]["data"]["summary"].startswith("fake-llm answer")
    assert reviewed["scraper"] == {"agent": "scraper", "status": "success", "data": []}
    assert task.result["result"]["reviewed"] == ["research", "scraper"]
    assert llm_calls(fake_llm, "[agent:planner]") == 1
    assert llm_calls(fake_llm, "[agent:reviewer]") == 1

    status = stack.client.simulate_get(f"/agent/status/{parent}").json
    assert {c["agent"] for c in status["children"]} == set(children)
    assert all(c["state"] == "SUCCESS" and c["progress"] == 100 for c in status["children"])


def test_multi_agent_progress_never_goes_back(no_limits, fake_llm, make_stack) -> None:
    """Seen by polling the status and in the stream: the parent's progress only ever rises."""
    research_may_answer = threading.Event()

    def hold_research(body: dict[str, Any]) -> str:
        if "[agent:research]" in message_text(body):
            research_may_answer.wait(25)  # below the LLM timeout: the call is held, not failed
        return FakeOpenAIServer._default_reply(body)

    fake_llm.reply = hold_research
    stack = make_stack(no_limits.replace(llm_timeout=30.0))
    try:
        parent = stack.submit(query="watch my progress", workflow="multi_agent")
        streamed: dict[str, Any] = {}
        reader = threading.Thread(
            target=lambda: streamed.update(response=stack.client.simulate_get(f"/agent/stream/{parent}"))
        )
        reader.start()
        polled: list[int] = []

        def status() -> dict[str, Any]:
            body = stack.client.simulate_get(f"/agent/status/{parent}").json
            polled.append(body["progress"])
            return body

        # The scraper ends while research is held: the parent has moved on from 30 toward 70 with them.
        midway = wait_until(lambda: (body := status())["progress"] > 30 and body, timeout=60, what="progress > 30")
        assert midway["current_step"] == "gather", midway
        assert midway["progress"] < 70, midway
        research_may_answer.set()
        done = wait_until(lambda: (body := status())["state"] in TERMINAL_STATES and body, timeout=60, what="the end")
        assert done["state"] == "SUCCESS"
        assert done["progress"] == 100
        reader.join(timeout=60)

        assert polled == sorted(polled), polled
        frames = parse_sse(streamed["response"].text)
        assert frames[-1]["data"]["state"] == "SUCCESS"
        seen = [f["data"]["progress"] for f in frames if f["data"]["progress"] >= 0]  # -1: not a progress event
        assert seen == sorted(seen), [(f["event"], f["data"]["progress"], f["data"]["step"]) for f in frames]
        assert {30, 70, 100} <= set(seen)
    finally:
        research_may_answer.set()


def test_a_failed_member_fails_the_parent_with_its_error(no_limits, fake_llm, make_stack) -> None:
    fake_llm.fail_next(1, status=401, match="[agent:research]")
    stack = make_stack(no_limits)
    parent = stack.submit(query="doomed", workflow="multi_agent")
    task = wait_for_state(stack.runtime.sessions, parent, "FAILURE", timeout=60)
    assert "research member" in (task.error or "")
    assert "401" in (task.error or "")
    assert "reviewer" not in _children(stack, parent)


def test_chord_aggregates_partial_results(no_limits, fake_llm, make_stack) -> None:
    fake_llm.fail_next(1, status=401, match="[agent:research]")
    stack = make_stack(no_limits)
    parent = stack.submit(query="fan out", workflow="chord")
    task = wait_for_state(stack.runtime.sessions, parent, "SUCCESS", timeout=60)
    assert task.result["total_agents"] == 3
    assert task.result["successful"] == 2
    assert task.result["combined_data"] == [None, [], None]
    assert set(_children(stack, parent)) == {"research", "scraper", "tools", "aggregate"}
