"""The agent workflow end to end on RabbitMQ and PostgreSQL, with the real openai client."""

from __future__ import annotations

import pytest

from tests.stack import Stack
from tests.support import events, wait_for_state

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

STEPS = [(10, "initializing"), (25, "reasoning"), (50, "tool_execution"), (75, "synthesis")]


def test_submitted_task_succeeds_with_progress_in_order(stack: Stack, fake_llm) -> None:
    task_id = stack.submit(query="What is durable execution?")
    task = wait_for_state(stack.runtime.sessions, task_id, "SUCCESS")

    history = events(stack.runtime.sessions, task_id)
    states = [e.state for e in history if e.kind == "state"]
    assert states == ["PENDING", "PROCESSING", "SUCCESS"]
    progress = [(e.progress, e.step) for e in history if e.kind == "progress"]
    assert progress == STEPS
    assert history[-1].progress == 100
    assert history[-1].step == "complete"

    assert task.result["status"] == "success"
    assert task.result["result"].startswith("fake-llm answer to:")
    assert task.result["metadata"]["model"] == "test-model"
    assert task.result["metadata"]["usage"]["total_tokens"] > 0
    assert fake_llm.count() == 2

    status = stack.client.simulate_get(f"/agent/status/{task_id}").json
    assert status["state"] == "SUCCESS"
    assert status["progress"] == 100
    result = stack.client.simulate_get(f"/agent/result/{task_id}")
    assert result.status_code == 200
    assert result.json["status"] == "complete"


def test_server_error_is_retried_then_succeeds(stack: Stack, fake_llm) -> None:
    fake_llm.fail_next(1, status=500)
    task_id = stack.submit(query="retry me")
    task = wait_for_state(stack.runtime.sessions, task_id, "SUCCESS")
    assert task.attempts == 2
    history = events(stack.runtime.sessions, task_id)
    states = [e.state for e in history if e.kind == "state"]
    assert states == ["PENDING", "PROCESSING", "RETRY", "PROCESSING", "SUCCESS"]
    # The retry passes its earlier progress reports again; they are not recorded, so progress never goes back.
    progress = [e.progress for e in history if e.progress >= 0]
    assert progress == sorted(progress), progress
    assert [(e.progress, e.step) for e in history if e.kind == "progress"] == STEPS


def test_rate_limited_call_waits_for_retry_after(stack: Stack, fake_llm) -> None:
    fake_llm.fail_next(1, status=429, retry_after=1)
    task_id = stack.submit(query="slow down")
    wait_for_state(stack.runtime.sessions, task_id, "SUCCESS")
    retry = next(e for e in events(stack.runtime.sessions, task_id) if e.state == "RETRY")
    assert retry.data["retry_in_ms"] == 1000
    assert "429" in retry.data["error"]


def test_timeouts_are_transient(settings, fake_llm, make_stack) -> None:
    running = make_stack(settings.replace(llm_timeout=0.5))
    fake_llm.hang_next(1, seconds=3)
    task_id = running.submit(query="hang once")
    task = wait_for_state(running.runtime.sessions, task_id, "SUCCESS")
    assert task.attempts == 2


def test_exhausted_retries_fail_and_dead_letter(stack: Stack, fake_llm) -> None:
    before = stack.broker.get_queue_message_counts("default")[2]
    fake_llm.fail_next(10, status=503)
    task_id = stack.submit(query="always broken")
    task = wait_for_state(stack.runtime.sessions, task_id, "FAILURE")
    assert task.attempts == 1 + stack.settings.max_retries
    assert "503" in (task.error or "")

    def dead_lettered() -> bool:
        return stack.broker.get_queue_message_counts("default")[2] == before + 1

    from tests.support import wait_until

    wait_until(dead_lettered, timeout=10, what="the message in default.XQ")
    result = stack.client.simulate_get(f"/agent/result/{task_id}").json
    assert result["status"] == "failed"
    assert "503" in result["error"]


def test_permanent_error_is_not_retried(stack: Stack, fake_llm) -> None:
    fake_llm.fail_next(1, status=401)
    task_id = stack.submit(query="bad key")
    task = wait_for_state(stack.runtime.sessions, task_id, "FAILURE")
    assert task.attempts == 1
    assert "401" in (task.error or "")
    assert fake_llm.count(status=None) == 1


def test_soft_limit_is_seen_before_the_hard_limit(settings, fake_llm, make_stack) -> None:
    fake_llm.latency = 1.5
    running = make_stack(settings.replace(soft_time_limit=1.0, time_limit=20.0))
    task_id = running.submit(query="take your time")
    task = wait_for_state(running.runtime.sessions, task_id, "SUCCESS", timeout=20)
    assert task.result["status"] == "partial"
    assert task.result["result"] == task.result["metadata"]["reasoning"]
    kinds = [e.kind for e in events(running.runtime.sessions, task_id)]
    assert "soft_time_limit" in kinds
    assert fake_llm.count() == 1  # synthesis was skipped, not cut off by the hard limit
