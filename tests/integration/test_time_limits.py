"""Time limits stop a task that is blocked in a call, within about a second of the limit.

INTERLOCK_TIME_LIMIT=5 and INTERLOCK_SOFT_TIME_LIMIT=3, as the issue tried them: an LLM that
answers after 15 s, a host that answers after 15 s, a host that trickles its page over 15 s.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from models.tasks import Task
from testkit.fakes.http_server import FakeWebServer
from tests.support import events, llm_calls, wait_for_state

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

#: What each task waits on (an LLM call, a host, busy code) would take this long.
SLOW = 15
#: The issue: "a hard limit of 5 s ends the task FAILURE within about a second of the limit". A task
#: whose limit did not interrupt its call runs for SLOW seconds; this bound, measured between the
#: task's own start and end times, lies between the two and is generous for a loaded machine.
WITHIN = 10.0


@pytest.fixture
def limited(settings):
    # The LLM's and the hosts' own timeouts are long: only the task's limits can stop the calls.
    return settings.replace(time_limit=5.0, soft_time_limit=3.0, llm_timeout=60.0, http_timeout=60.0, rate_limits="")


@pytest.fixture
def web() -> Iterator[FakeWebServer]:
    with FakeWebServer() as server:
        yield server


def _ran_for(task: Task) -> float:
    assert task.started_at is not None
    assert task.finished_at is not None
    return (task.finished_at - task.started_at).total_seconds()


def test_hard_limit_stops_an_llm_call_that_answers_too_late(limited, fake_llm, make_stack) -> None:
    fake_llm.hang_next(1, seconds=SLOW, match="Analyze this query: too slow")
    stack = make_stack(limited)
    task_id = stack.submit(query="too slow")
    task = wait_for_state(stack.runtime.sessions, task_id, {"SUCCESS", "FAILURE"}, timeout=30)
    assert task.state == "FAILURE", task.result
    assert "time limit exceeded" in (task.error or ""), task.error
    assert 5.0 <= _ran_for(task) <= WITHIN, _ran_for(task)
    assert task.attempts == 1  # the hard limit is final: not retried
    assert llm_calls(fake_llm, "Analyze this query: too slow", status=None) == 1
    status = stack.client.simulate_get(f"/agent/status/{task_id}").json
    assert status["state"] == "FAILURE"
    assert "time limit exceeded" in status["error"]


def test_soft_limit_returns_the_partial_answer_when_a_call_runs_into_it(limited, fake_llm, make_stack) -> None:
    # Reasoning answers at once; the synthesis call would take 15 s and is cut off at the soft limit.
    fake_llm.hang_next(1, seconds=SLOW, match="Query: partial please")
    stack = make_stack(limited)
    task_id = stack.submit(query="partial please")
    task = wait_for_state(stack.runtime.sessions, task_id, {"SUCCESS", "FAILURE"}, timeout=30)
    assert task.state == "SUCCESS", task.error
    assert task.result["status"] == "partial"
    assert task.result["result"] == task.result["metadata"]["reasoning"]
    assert _ran_for(task) >= 3.0, _ran_for(task)  # at the soft limit (SUCCESS shows: before the hard one)
    kinds = [e.kind for e in events(stack.runtime.sessions, task_id)]
    assert "soft_time_limit" in kinds


@pytest.mark.parametrize("path", [f"/slow?seconds={SLOW}", f"/trickle?seconds={SLOW}"])
def test_hard_limit_stops_a_tool_call_to_a_slow_host(
    limited, fake_llm, web: FakeWebServer, path: str, make_stack
) -> None:
    # No soft limit before the hard one: the tool call runs into the hard limit.
    stack = make_stack(limited.replace(soft_time_limit=5.0, tools_allow_hosts="127.0.0.1", cache_ttl_scrape=0.0))
    task_id = stack.submit(query="read a slow page", context={"urls": [web.url(path)]})
    task = wait_for_state(stack.runtime.sessions, task_id, {"SUCCESS", "FAILURE"}, timeout=30)
    assert task.state == "FAILURE", task.result
    assert "time limit exceeded" in (task.error or ""), task.error
    assert 5.0 <= _ran_for(task) <= WITHIN, _ran_for(task)
    assert task.attempts == 1
    assert web.count(path.split("?")[0]) == 1


def test_code_that_never_waits_on_a_call_is_stopped_by_the_same_limit(settings, make_stack) -> None:
    # Dramatiq's own time limit is the backstop there; the task ends the same way, not retried.
    stack = make_stack(settings.replace(agent_modules="tests.workflows", time_limit=2.0, soft_time_limit=2.0))
    task_id = stack.submit(query="busy", workflow="test_busy", context={"seconds": SLOW})
    task = wait_for_state(stack.runtime.sessions, task_id, {"SUCCESS", "FAILURE"}, timeout=30)
    assert task.state == "FAILURE", task.result
    assert "time limit exceeded" in (task.error or ""), task.error
    assert 2.0 <= _ran_for(task) <= WITHIN, _ran_for(task)  # Dramatiq looks once a second, after a second's grace
    assert task.attempts == 1
