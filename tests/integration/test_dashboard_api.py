"""The dashboard's JSON: a task's waterfall, tokens and cost, the overview's charts, workers, the
paged task list with 10,000 tasks, and bad input, on the real services."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert

from actors.agents.checkpointed import STAGES
from interlock.settings import Settings
from models.base import utcnow
from models.security import create_key
from models.tasks import Task
from testkit.fakes.openai_server import FakeOpenAIServer
from tests.stack import MakeStack, Stack
from tests.support import wait_for_state, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

PRICES = "test-model=0.15/0.60"


@pytest.fixture
def priced(settings: Settings) -> Settings:
    return settings.replace(llm_prices=PRICES, queue_sample_interval=1.0)


def key(stack: Stack, tenant: str, *scopes: str) -> dict[str, str]:
    with stack.runtime.sessions.begin() as session:
        return {"Authorization": f"Bearer {create_key(session, tenant=tenant, scopes=list(scopes)).key}"}


def page(stack: Stack, task_id: str, **headers: str) -> dict[str, Any]:
    response = stack.client.simulate_get(f"/dashboard/api/tasks/{task_id}", headers=headers or None)
    assert response.status_code == 200, response.text
    return dict(response.json)


def test_a_task_page_shows_every_step_in_order_with_its_llm_calls_tokens_and_cost(
    priced: Settings, make_stack: MakeStack
) -> None:
    stack = make_stack(priced)
    task_id = stack.submit(query="waterfall", workflow="checkpointed")
    wait_for_state(stack.runtime.sessions, task_id, "SUCCESS")
    body = page(stack, task_id)
    rows = body["timeline"]["rows"]
    assert [r["kind"] for r in rows[:2]] == ["queue", "attempt"]
    assert [r["label"] for r in rows if r["kind"] == "step"] == list(STAGES)
    starts = [r["start"] for r in rows if r["kind"] == "step"]
    assert starts == sorted(starts)
    llm = [r for r in rows if r["kind"] == "llm"]
    assert [r["step"] for r in llm] == ["reasoning", "analyzing", "reflecting"]  # the steps that ask the model
    assert all(r["depth"] == 2 and r["prompt_tokens"] > 0 and r["completion_tokens"] > 0 for r in llm)
    own = body["usage"]["task"]
    assert own["llm_calls"] == 3
    assert own["total_tokens"] == sum(r["prompt_tokens"] + r["completion_tokens"] for r in llm)
    expected = sum(r["prompt_tokens"] * 0.15 + r["completion_tokens"] * 0.60 for r in llm) / 1e6
    assert own["cost_usd"] == pytest.approx(expected)
    assert body["actions"] == {"cancel": False, "resume": False, "replay": False}
    assert body["children"] == []
    assert body["task"]["input"] == {"query": "waterfall", "context": {}}


def test_a_failed_llm_call_shows_in_its_step_with_the_retry_and_its_backoff(
    priced: Settings, make_stack: MakeStack, fake_llm: FakeOpenAIServer
) -> None:
    fake_llm.fail_next(1, status=500, match="[stage:analyzing]")
    stack = make_stack(priced)
    task_id = stack.submit(query="flaky", workflow="checkpointed")
    wait_for_state(stack.runtime.sessions, task_id, "SUCCESS")
    rows = page(stack, task_id)["timeline"]["rows"]
    outline = [(r["kind"], r.get("label"), r["status"]) for r in rows if r["kind"] in ("attempt", "backoff", "step")]
    assert outline[:5] == [
        ("attempt", "attempt 1", "retry"),
        ("step", "reasoning", "completed"),
        ("step", "searching", "completed"),
        ("step", "analyzing", "failed"),
        ("backoff", "retry backoff", "done"),
    ]
    assert outline[5] == ("attempt", "attempt 2", "SUCCESS")
    assert [s for _, s, _ in outline[6:]] == ["analyzing", "acting", "reflecting", "completed"]  # not run again
    failed_call = next(r for r in rows if r["kind"] == "llm" and r["status"] == "failed")
    assert "500" in failed_call["error"]
    assert failed_call["step"] == "analyzing"
    assert next(r for r in rows if r["kind"] == "backoff")["planned_ms"] > 0


def test_a_coordinator_page_has_its_children_as_a_tree_with_their_tokens(stack: Stack) -> None:
    task_id = stack.submit(query="plan a trip", workflow="multi_agent")
    wait_for_state(stack.runtime.sessions, task_id, "SUCCESS", timeout=60)
    body = page(stack, task_id)
    children = body["children"]
    assert [c["workflow"] for c in children] == ["planner", "research", "scraper", "reviewer"]
    assert all(c["state"] == "SUCCESS" for c in children)
    assert body["descendants"] == 4
    assert body["usage"]["task"]["llm_calls"] == 0  # the coordinator asks no model itself
    assert body["usage"]["with_children"]["total_tokens"] == sum(c["usage"]["total_tokens"] for c in children) > 0
    rows = body["timeline"]["rows"]
    assert [r["task_id"] for r in rows if r["kind"] == "child"] == [c["task_id"] for c in children]
    assert any(r["kind"] == "children" for r in rows)  # time spent waiting for them
    assert any(r["label"] == "attempt 1 (woken)" for r in rows)


def test_the_charts_count_the_tasks_durations_tokens_and_queue_depths(priced: Settings, make_stack: MakeStack) -> None:
    stack = make_stack(priced)
    done = [stack.submit(query=f"chart {n}") for n in range(3)]
    for task_id in done:
        wait_for_state(stack.runtime.sessions, task_id, "SUCCESS")

    def charts() -> dict[str, Any] | None:
        body = stack.client.simulate_get("/dashboard/api/charts?range=3600").json
        return body if body["queues"]["series"].get("default") else None

    body = wait_until(charts, timeout=15, what="a queue-depth sample of the default queue")
    assert body["step"] == 60
    assert sum(r["submitted"] for r in body["throughput"]) == 3
    assert sum(r["succeeded"] for r in body["throughput"]) == 3
    assert [d["workflow"] for d in body["durations"]] == ["agent"]
    agent = body["durations"][0]
    assert agent["count"] == 3
    assert 0 < agent["p50"] <= agent["p95"] <= agent["p99"]
    tokens = body["tokens"]["rows"]
    assert [r["model"] for r in tokens] == ["test-model"]
    assert tokens[0]["calls"] == 6  # reasoning and synthesis of each task
    assert tokens[0]["cost_usd"] == pytest.approx(
        (tokens[0]["prompt_tokens"] * 0.15 + tokens[0]["completion_tokens"] * 0.60) / 1e6
    )
    assert body["active"] == {"PENDING": 0, "RETRY": 0, "PROCESSING": 0}


def test_a_tenant_charts_only_its_own_work_and_sees_neither_queues_nor_workers(
    settings: Settings, make_stack: MakeStack
) -> None:
    stack = make_stack(settings.replace(auth="on"))
    acme = key(stack, "acme", "submit", "read")
    operator = key(stack, "system", "admin")  # the operator: every tenant
    mine = stack.client.simulate_post("/agent/execute", json={"query": "mine"}, headers=acme).json["task_id"]
    theirs = stack.client.simulate_post("/agent/execute", json={"query": "theirs"}, headers=operator).json["task_id"]
    for task_id in (mine, theirs):
        wait_for_state(stack.runtime.sessions, task_id, "SUCCESS")
    seen = stack.client.simulate_get("/dashboard/api/charts", headers=acme).json
    assert sum(r["submitted"] for r in seen["throughput"]) == 1
    assert seen["queues"] is None
    assert stack.client.simulate_get("/dashboard/api/workers", headers=acme).status_code == 403
    everything = stack.client.simulate_get("/dashboard/api/charts", headers=operator).json
    assert sum(r["submitted"] for r in everything["throughput"]) == 2
    assert stack.client.simulate_get(f"/dashboard/api/tasks/{theirs}", headers=acme).status_code == 404
    listed = stack.client.simulate_get("/dashboard/api/tasks?tenant=system", headers=acme).json["tasks"]
    assert listed == []  # a tenant's filter never widens what it sees
    filters = stack.client.simulate_get("/dashboard/api/overview?filters=true", headers=acme).json["filters"]
    assert filters["tenants"] == ["acme"]
    assert "agent" in filters["workflows"]
    everyone = stack.client.simulate_get("/dashboard/api/overview?filters=true", headers=operator).json["filters"]
    assert everyone["tenants"] == ["acme", "system"]


def test_workers_report_their_process_queues_threads_and_runs(settings: Settings, make_stack: MakeStack) -> None:
    stack = make_stack(settings)
    task_id = stack.submit(query="count me")
    wait_for_state(stack.runtime.sessions, task_id, "SUCCESS")

    def reported() -> list[dict[str, Any]] | None:
        workers = stack.client.simulate_get("/dashboard/api/workers").json["workers"]
        return workers if workers and workers[0]["tasks_done"] >= 1 else None

    (worker,) = wait_until(reported, timeout=15, what="the worker's heartbeat with its finished run")
    assert worker["pid"] > 0
    assert worker["threads"] == settings.worker_threads
    assert "default" in worker["queues"]
    assert not any(q.endswith((".DQ", ".XQ")) for q in worker["queues"])
    assert worker["stopped_at"] is None
    assert worker["in_flight"] == 0


def _bulk_tasks(stack: Stack, count: int) -> list[dict[str, Any]]:
    """``count`` tasks written directly (never queued): three workflows, four states, two tenants."""
    now = utcnow()
    rows = []
    for n in range(count):
        created = now - timedelta(seconds=count - n // 3)  # three tasks share each instant
        rows.append(
            {
                "id": str(uuid.uuid4()),
                "workflow": ("agent", "research", "planner")[n % 3],
                "actor": "x",
                "queue": "default",
                "priority": 0,
                "state": ("SUCCESS", "FAILURE", "PENDING", "CANCELLED")[n % 4],
                "progress": 0,
                "input": {"query": f"question {n} about {('cats', 'dogs', 'owls')[n % 5 % 3]}"},
                "attempts": 0,
                "tenant": ("acme", "system")[n // 7 % 2],
                "wake_pending": False,
                "created_at": created,
                "updated_at": created,
            }
        )
    with stack.runtime.sessions.begin() as session:
        session.execute(insert(Task), rows)
    return rows


def _walk(stack: Stack, query: str) -> tuple[list[str], list[float]]:
    """Every id the list shows for ``query``, page after page; and how long each page took."""
    ids: list[str] = []
    took: list[float] = []
    cursor = ""
    while True:
        started = time.monotonic()
        response = stack.client.simulate_get(f"/dashboard/api/tasks?limit=200&{query}{cursor}")
        took.append(time.monotonic() - started)
        assert response.status_code == 200, response.text
        ids += [t["task_id"] for t in response.json["tasks"]]
        if response.json["next"] is None:
            return ids, took
        cursor = f"&cursor={response.json['next']}"


def test_the_task_list_filters_and_pages_through_10000_tasks(settings: Settings, make_stack: MakeStack) -> None:
    stack = make_stack(settings, worker=False)
    rows = _bulk_tasks(stack, 10_000)
    newest_first = sorted(rows, key=lambda r: (r["created_at"], r["id"]), reverse=True)

    ids, took = _walk(stack, "")
    assert ids == [r["id"] for r in newest_first]  # every task once, in order, across ties of created_at
    assert len(took) == 50
    # The issue asks for a list that stays fast with 10,000 tasks: a page is one index walk (generous bound).
    assert max(took) < 2.0, took

    ids, _ = _walk(stack, "state=FAILURE,CANCELLED&workflow=research&tenant=acme")
    expected = [
        r["id"]
        for r in newest_first
        if r["state"] in ("FAILURE", "CANCELLED") and r["workflow"] == "research" and r["tenant"] == "acme"
    ]
    assert ids == expected
    assert len(expected) > 400

    ids, _ = _walk(stack, "q=OWLS")
    assert ids == [r["id"] for r in newest_first if "owls" in r["input"]["query"]]
    first = stack.client.simulate_get(f"/dashboard/api/tasks?q={rows[42]['id'][:13]}").json["tasks"]
    assert [t["task_id"] for t in first] == [rows[42]["id"]]  # the start of an id finds it


@pytest.mark.parametrize(
    ("path", "title"),
    [
        ("/dashboard/api/tasks?cursor=not-a-cursor", "Invalid cursor"),
        ("/dashboard/api/tasks?state=DONE", "Invalid state"),
        ("/dashboard/api/tasks?limit=0", "Invalid parameter"),
        ("/dashboard/api/tasks?q=" + "x" * 201, "Invalid q"),
        ("/dashboard/api/charts?range=10", "Invalid parameter"),
        ("/dashboard/api/charts?since=yesterday", "Invalid since"),
        ("/dashboard/api/charts?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "Invalid range"),
        ("/dashboard/api/tasks/no-such-task", "Unknown task"),
        ("/static/dashboard.html", "Unknown file"),  # only the listed files, never a path
    ],
)
def test_bad_dashboard_requests_get_a_4xx_with_a_reason(stack: Stack, path: str, title: str) -> None:
    response = stack.client.simulate_get(path)
    assert 400 <= response.status_code < 500, response.text
    assert response.json["title"].startswith(title), response.json
    assert response.json.get("description")


def test_the_dashboard_scripts_are_served_with_an_etag_and_revalidated(stack: Stack) -> None:
    script = stack.client.simulate_get("/static/chart.umd.min.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "Chart.js v4" in script.text[:200]
    again = stack.client.simulate_get("/static/chart.umd.min.js", headers={"If-None-Match": script.headers["etag"]})
    assert again.status_code == 304
    page_html = stack.client.simulate_get("/").text
    for name in ("app.css", "chart.umd.min.js", "app.js", "overview.js", "task.js"):
        assert f"/static/{name}" in page_html
        assert stack.client.simulate_get(f"/static/{name}").status_code == 200
