"""Prometheus metrics of the API and of a multi-process worker, parsed as Prometheus would."""

from __future__ import annotations

import ipaddress
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import update

from actors.messages import task_message
from models.base import utcnow
from models.task_transitions import create_task
from models.tasks import Task
from tests.processes import Proc, base_env, wait_http
from tests.support import events, free_port, parse_metrics, sample, wait_for_state, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


def test_api_metrics_count_requests_submissions_and_tasks(stack) -> None:
    task_ids = [stack.submit(query=f"count {n}") for n in range(3)]
    for task_id in task_ids:
        wait_for_state(stack.runtime.sessions, task_id, "SUCCESS")
    stack.client.simulate_get("/agent/status/nope")
    response = stack.client.simulate_get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    parsed = parse_metrics(response.text)
    assert sample(parsed, "interlock_tasks", workflow="agent", state="SUCCESS") == 3
    assert sample(parsed, "interlock_submissions_total", workflow="agent") == 3
    assert sample(parsed, "interlock_http_requests_total", route="/agent/execute", method="POST", status="202") == 3
    assert (
        sample(parsed, "interlock_http_requests_total", route="/agent/status/{task_id}", method="GET", status="404")
        == 1
    )
    assert sample(parsed, "interlock_http_request_duration_seconds_count", route="/agent/execute", method="POST") == 3


def test_api_metrics_tell_how_long_the_oldest_pending_task_has_waited(settings, make_stack) -> None:
    stack = make_stack(settings, worker=False)
    oldest = stack.submit(query="waits in research", workflow="research")
    stack.submit(query="queued later", workflow="research")
    with stack.runtime.sessions.begin() as session:
        ten_minutes_ago = utcnow() - timedelta(minutes=10)
        session.execute(update(Task).where(Task.id == oldest).values(updated_at=ten_minutes_ago))
    parsed = parse_metrics(stack.client.simulate_get("/metrics").text)
    assert 600 <= sample(parsed, "interlock_queue_oldest_pending_seconds", queue="research") < 3600
    assert ("interlock_queue_oldest_pending_seconds", frozenset({("queue", "default")})) not in parsed

    make_stack(settings)  # a worker takes them: nothing is pending any more
    wait_for_state(stack.runtime.sessions, oldest, "SUCCESS")
    wait_until(
        lambda: "interlock_queue_oldest_pending_seconds{" not in stack.client.simulate_get("/metrics").text,
        timeout=30,
        what="no queue age once nothing is pending",
    )


def test_worker_metrics_are_summed_over_two_processes(settings, fake_llm, tmp_path, make_stack) -> None:
    fake_llm.latency = 0.15
    port = free_port()
    settings = settings.replace(worker_metrics_port=port, worker_metrics_host="127.0.0.1", rate_limits="")
    stack = make_stack(settings, worker=False)
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
            parsed = parse_metrics(requests.get(url, timeout=5).text)
            done = sample(parsed, "interlock_worker_tasks_total", actor="execute_agent_workflow", outcome="success")
            return parsed if done == 9 else None

        # The message sent under the actor's former name counts under its current name.
        parsed = wait_until(scraped, timeout=10, what="9 successes in the worker metrics")
        assert (
            sample(
                parsed,
                "interlock_worker_task_duration_seconds_count",
                actor="execute_agent_workflow",
                outcome="success",
            )
            == 9
        )
        assert not any(dict(labels).get("actor") == "interlock.agent" for _, labels in parsed)
        assert sample(parsed, "interlock_worker_llm_tokens_total", model="test-model", kind="total") == tokens > 0
        assert sample(parsed, "interlock_worker_tasks_total", actor="execute_agent_workflow", outcome="failure") == 0
        # Every claim and finish went through a process's group commit (9 of each, in batches).
        for kind in ("claim", "finish"):
            assert sample(parsed, "interlock_worker_write_batch_size_sum", kind=kind) == 9
            assert 1 <= sample(parsed, "interlock_worker_write_batch_size_count", kind=kind) <= 9


@pytest.mark.filterwarnings("ignore:Unknown REQUEST_METHOD")  # wsgiref's validator, which is right
def test_made_up_methods_and_paths_do_not_grow_the_metrics(settings, make_stack) -> None:
    """gunicorn passes any token as a method; every label must still take a bounded set of values."""
    stack = make_stack(settings, worker=False)
    for n in range(300):
        stack.client.simulate_request(f"Q{n:06d}ZZ", "/healthz")
        stack.client.simulate_get(f"/no/such/route/{n}")
        stack.client.simulate_get(f"/agent/status/{n:036d}")
    text = stack.client.simulate_get("/metrics").text
    parsed = parse_metrics(text)
    labels = [dict(key) for name, key in parsed if name.startswith("interlock_http_request")]
    assert {lab["method"] for lab in labels} <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
    assert {lab["route"] for lab in labels} <= {"/healthz", "unmatched", "/agent/status/{task_id}", "/metrics"}
    assert sample(parsed, "interlock_http_requests_total", route="/healthz", method="other", status="400") == 300
    assert sample(parsed, "interlock_http_requests_total", route="unmatched", method="GET", status="404") == 300
    assert len(text) < 20_000, len(text)


def _listening_addresses(port: int) -> set[str]:
    """The local addresses with a socket listening on ``port`` (what ``ss -ltn`` shows), IPv4 and IPv6."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # little-endian words
                found.add(str(ipaddress.ip_address(words)))
    return found


def test_worker_metrics_listen_on_loopback_by_default(settings, tmp_path) -> None:
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux's /proc/net/tcp to see the listening address")
    port = free_port()
    env = base_env(settings.replace(worker_metrics_port=port).to_env())
    del env["INTERLOCK_WORKER_METRICS_HOST"]  # the default, as a user who never heard of it runs it
    with Proc(["worker", "--processes", "1", "--threads", "1"], env=env, log=tmp_path / "w.log") as worker:
        wait_http(f"http://127.0.0.1:{port}/metrics", proc=worker)
        assert _listening_addresses(port) == {"127.0.0.1"}
        assert f"worker metrics at http://127.0.0.1:{port}/metrics" in worker.output()


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
