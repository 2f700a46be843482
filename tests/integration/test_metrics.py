"""Prometheus metrics of the API and of a multi-process worker, parsed as Prometheus would."""

from __future__ import annotations

import uuid

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from actors.maintenance import task_message
from models.tasks import create_task
from tests.conftest import start_stack, stop_stack
from tests.processes import Proc, base_env, wait_http
from tests.support import events, free_port, wait_for_state, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """``{(sample name, labels): value}`` of a Prometheus text exposition."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(parsed: dict, name: str, **labels: str) -> float:
    return parsed.get((name, frozenset(labels.items())), 0.0)


def test_api_metrics_count_requests_submissions_and_tasks(stack) -> None:
    task_ids = [stack.submit(query=f"count {n}") for n in range(3)]
    for task_id in task_ids:
        wait_for_state(stack.runtime.sessions, task_id, "SUCCESS")
    stack.client.simulate_get("/agent/status/nope")
    response = stack.client.simulate_get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    parsed = samples(response.text)
    assert value(parsed, "interlock_tasks", workflow="agent", state="SUCCESS") == 3
    assert value(parsed, "interlock_submissions_total", workflow="agent") == 3
    assert value(parsed, "interlock_http_requests_total", route="/agent/execute", method="POST", status="202") == 3
    assert (
        value(parsed, "interlock_http_requests_total", route="/agent/status/{task_id}", method="GET", status="404") == 1
    )
    assert value(parsed, "interlock_http_request_duration_seconds_count", route="/agent/execute", method="POST") == 3


def test_worker_metrics_are_summed_over_two_processes(settings, fake_llm, tmp_path) -> None:
    fake_llm.latency = 0.15
    port = free_port()
    settings = settings.replace(worker_metrics_port=port, worker_metrics_host="127.0.0.1", rate_limits="")
    stack = start_stack(settings, worker=False)
    try:
        with Proc(
            ["worker", "--processes", "2", "--threads", "1"], env=base_env(settings.to_env()), log=tmp_path / "w.log"
        ) as worker:
            url = f"http://127.0.0.1:{port}/metrics"
            wait_http(url, proc=worker)
            task_ids = [stack.submit(query=f"metered {n}") for n in range(8)]
            task_ids.append(_send_under_the_old_actor_name(stack))
            tasks = [wait_for_state(stack.runtime.sessions, t, {"SUCCESS", "FAILURE"}, timeout=60) for t in task_ids]
            assert {t.state for t in tasks} == {"SUCCESS"}
            pids = {
                e.data["worker"]
                for t in task_ids
                for e in events(stack.runtime.sessions, t)
                if e.kind == "state" and e.state == "PROCESSING"
            }
            assert len(pids) == 2, pids  # both processes ran some of them
            tokens = sum(t.result["metadata"]["usage"]["total_tokens"] for t in tasks)

            def scraped() -> dict | None:
                parsed = samples(requests.get(url, timeout=5).text)
                done = value(parsed, "interlock_worker_tasks_total", actor="execute_agent_workflow", outcome="success")
                return parsed if done == 9 else None

            # The message sent under the actor's former name counts under its current name.
            parsed = wait_until(scraped, timeout=10, what="9 successes in the worker metrics")
            assert (
                value(
                    parsed,
                    "interlock_worker_task_duration_seconds_count",
                    actor="execute_agent_workflow",
                    outcome="success",
                )
                == 9
            )
            assert not any(dict(labels).get("actor") == "interlock.agent" for _, labels in parsed)
            assert value(parsed, "interlock_worker_llm_tokens_total", model="test-model", kind="total") == tokens > 0
            assert value(parsed, "interlock_worker_tasks_total", actor="execute_agent_workflow", outcome="failure") == 0
    finally:
        stop_stack(stack)


def _send_under_the_old_actor_name(stack) -> str:
    """An agent task as the release before the actor's rename queued it."""
    task_id = str(uuid.uuid4())
    with stack.runtime.sessions.begin() as session:
        create_task(
            session,
            task_id=task_id,
            workflow="agent",
            actor="interlock.agent",
            queue="default",
            input={"query": "metered before the rename", "context": {}},
        )
    stack.broker.enqueue(task_message(queue="default", actor="interlock.agent", task_id=task_id))
    return task_id
