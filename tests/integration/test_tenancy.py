"""What a tenant's key causes belongs to that tenant: events and their tasks, children and
callbacks, dead letters. Two tenants' admins against one API (auth on) on RabbitMQ and PostgreSQL."""

from __future__ import annotations

from itertools import combinations
from typing import Any

import pytest
from sqlalchemy import func, select

from interlock.settings import Settings
from models.base import as_utc
from models.events import Event
from models.security import create_key
from models.tasks import Task
from models.tenants import add_usage, set_limits
from tests.stack import MakeStack, Stack
from tests.support import get_task, wait_for_state, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


@pytest.fixture
def tenants(settings: Settings, make_stack: MakeStack) -> Stack:
    """The API with authentication on and an in-process worker that also runs tests.workflows."""
    return make_stack(settings.replace(auth="on", agent_modules="tests.workflows", max_retries=0))


def key(stack: Stack, tenant: str, *scopes: str) -> dict[str, str]:
    with stack.runtime.sessions.begin() as session:
        return {"Authorization": f"Bearer {create_key(session, tenant=tenant, scopes=list(scopes)).key}"}


def count(stack: Stack, model: Any, *conditions: Any) -> int:
    with stack.runtime.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*conditions)) or 0)


def listed_events(stack: Stack, headers: dict[str, str], event_type: str) -> list[dict[str, Any]]:
    answer = stack.client.simulate_get("/events", params={"type": event_type}, headers=headers)
    assert answer.status_code == 200, answer.text
    return list(answer.json["events"])


# -- events ---------------------------------------------------------------------------------


def test_an_event_a_tenant_publishes_and_what_follows_belong_to_that_tenant(tenants: Stack) -> None:
    acme, other = key(tenants, "acme", "admin"), key(tenants, "other", "admin")
    answer = tenants.client.simulate_post(
        "/events", json={"event_type": "new_data_arrived", "data": {"source": "acme-warehouse"}}, headers=acme
    )
    assert answer.status_code == 202, answer.text
    (task_id,) = answer.json["task_ids"]
    task = wait_for_state(tenants.runtime.sessions, task_id, "SUCCESS")
    assert task.tenant == "acme"
    assert tenants.client.simulate_get(f"/agent/status/{task_id}", headers=acme).status_code == 200
    for path in (f"/agent/status/{task_id}", f"/agent/result/{task_id}"):
        assert tenants.client.simulate_get(path, headers=other).status_code == 404, path

    # The handler's own event (ctx.publish) is acme's too: the other admin never sees acme's data.
    followed = wait_until(lambda: listed_events(tenants, acme, "data_processed"), what="data_processed for acme")
    assert followed[0]["tenant"] == "acme"
    assert followed[0]["data"]["source"] == "acme-warehouse"
    assert listed_events(tenants, other, "data_processed") == []
    assert listed_events(tenants, other, "new_data_arrived") == []
    operator = key(tenants, "system", "admin")
    assert [e["tenant"] for e in listed_events(tenants, operator, "data_processed")] == ["acme"]


def test_ctx_publish_starts_tasks_of_the_publishing_tasks_tenant(tenants: Stack) -> None:
    acme = key(tenants, "acme", "submit", "read")
    submitted = tenants.client.simulate_post(
        "/agent/execute",
        json={"query": "tell", "workflow": "test_publish", "context": {"event_type": "user_updated"}},
        headers=acme,
    )
    assert submitted.status_code == 202, submitted.text
    publisher = wait_for_state(tenants.runtime.sessions, submitted.json["task_id"], "SUCCESS")
    (downstream,) = publisher.result["task_ids"]
    handled = wait_for_state(tenants.runtime.sessions, downstream, "SUCCESS")
    assert handled.workflow == "agent_on_user_update"
    assert handled.tenant == "acme"
    with tenants.runtime.sessions() as session:
        event = session.get(Event, publisher.result["event_id"])
        assert event is not None
        assert event.tenant == "acme"
        assert event.published_by == publisher.id
    assert tenants.client.simulate_get(f"/agent/status/{downstream}", headers=acme).status_code == 200


def test_a_tenant_over_its_budget_cannot_publish_and_its_queued_event_stops(
    settings: Settings, fake_llm, make_stack
) -> None:
    api = make_stack(settings.replace(auth="on", max_retries=0), worker=False)
    acme = key(api, "acme", "admin")
    with api.runtime.sessions.begin() as session:
        set_limits(session, "acme", max_concurrency=None, monthly_tokens=1000)
    queued = api.client.simulate_post(
        "/events", json={"event_type": "new_data_arrived", "data": {"source": "queued"}}, headers=acme
    )
    assert queued.status_code == 202, queued.text
    with api.runtime.sessions.begin() as session:
        add_usage(session, "acme", 1000)  # spent elsewhere meanwhile

    refused = api.client.simulate_post(
        "/events", json={"event_type": "new_data_arrived", "data": {"source": "over"}}, headers=acme
    )
    assert refused.status_code == 429, refused.text
    assert "monthly token budget" in refused.json["description"]
    assert count(api, Event) == 1  # the refused event was not stored

    make_stack(settings.replace(max_retries=0, worker_threads=2))  # a worker starts
    task = wait_for_state(api.runtime.sessions, queued.json["task_ids"][0], {"SUCCESS", "FAILURE"}, timeout=60)
    assert task.state == "FAILURE"
    assert "monthly token budget" in (task.error or "")
    assert fake_llm.count(status=None) == 0  # no LLM call was made for acme

    # Its dead letter (the event as it reached the subscription's queue) is acme's to see.
    def dead_for_acme() -> list[str]:
        answer = api.client.simulate_get("/dlq", params={"queue": "events.agent_on_new_data"}, headers=acme)
        return [m["task_id"] for q in answer.json["queues"] for m in q["messages"]]

    assert wait_until(dead_for_acme, what="acme's dead letter") == [task.id]


def test_event_tasks_wait_for_their_tenants_concurrency_cap(settings: Settings, fake_llm, make_stack) -> None:
    fake_llm.latency = 0.3
    stack = make_stack(settings.replace(auth="on", worker_threads=4))
    with stack.runtime.sessions.begin() as session:
        set_limits(session, "acme", max_concurrency=1, monthly_tokens=None)
    acme = key(stack, "acme", "admin")
    task_ids = []
    for n in range(3):
        answer = stack.client.simulate_post(
            "/events", json={"event_type": "new_data_arrived", "data": {"n": n}}, headers=acme
        )
        assert answer.status_code == 202, answer.text
        task_ids += answer.json["task_ids"]
    tasks = [wait_for_state(stack.runtime.sessions, task_id, "SUCCESS", timeout=60) for task_id in task_ids]
    spans = [(as_utc(t.started_at), as_utc(t.finished_at)) for t in tasks]
    for (a_start, a_end), (b_start, b_end) in combinations(spans, 2):
        assert a_end <= b_start or b_end <= a_start, "two event tasks of a tenant capped at 1 ran at once"


# -- children and callbacks -----------------------------------------------------------------


def test_a_batch_callback_must_be_a_workflow_the_caller_could_submit(tenants: Stack) -> None:
    acme = key(tenants, "acme", "submit", "read")
    for callback in ("cleanup_old_events", "health_check", "agent_on_new_data", "scrape_url", "no_such_workflow"):
        answer = tenants.client.simulate_post(
            "/tools/batch_url_scraping",
            json={"urls": ["http://127.0.0.1:9/page"], "callback": callback},
            headers=acme,
        )
        assert answer.status_code == 400, (callback, answer.text)
        assert callback in answer.json["description"]
        assert "aggregate" in answer.json["description"]
    assert count(tenants, Task) == 0  # refused before anything was stored


def test_a_tenants_workflow_cannot_start_an_operator_only_child(tenants: Stack) -> None:
    acme = key(tenants, "acme", "submit", "read")
    for child in ("cleanup_old_events", "test_internal"):
        answer = tenants.client.simulate_post(
            "/agent/execute", json={"query": "x", "workflow": "test_spawn", "context": {"child": child}}, headers=acme
        )
        assert answer.status_code == 202, answer.text
        parent = wait_for_state(tenants.runtime.sessions, answer.json["task_id"], {"SUCCESS", "FAILURE"})
        assert parent.state == "FAILURE", parent.result
        assert f"may not start {child!r}" in (parent.error or "")
        assert count(tenants, Task, Task.workflow == child) == 0

    # A submittable child is the parent tenant's.
    answer = tenants.client.simulate_post(
        "/agent/execute", json={"query": "x", "workflow": "test_spawn", "context": {"child": "test_echo"}}, headers=acme
    )
    parent = wait_for_state(tenants.runtime.sessions, answer.json["task_id"], {"SUCCESS", "FAILURE"})
    assert parent.state == "SUCCESS", parent.error
    with tenants.runtime.sessions() as session:
        children = list(session.scalars(select(Task).where(Task.parent_id == parent.id)))
    assert [(c.workflow, c.tenant) for c in children] == [("test_echo", "acme")]


def test_the_systems_tasks_may_start_internal_children(tenants: Stack) -> None:
    operator = key(tenants, "system", "admin")
    answer = tenants.client.simulate_post(
        "/agent/execute",
        json={"query": "x", "workflow": "test_spawn", "context": {"child": "test_internal"}},
        headers=operator,
    )
    assert answer.status_code == 202, answer.text
    parent = wait_for_state(tenants.runtime.sessions, answer.json["task_id"], {"SUCCESS", "FAILURE"})
    assert parent.state == "SUCCESS", parent.error
    assert parent.tenant == "system"
    assert parent.result == {"status": "success", "ran": "test_internal"}


# -- dead letters ---------------------------------------------------------------------------


def test_a_tenant_admin_sees_and_acts_on_its_own_dead_letters_only(tenants: Stack) -> None:
    # Tenants of their own: earlier tests of this module leave dead letters in the same queue.
    north, south = key(tenants, "north", "admin"), key(tenants, "south", "admin")
    operator = key(tenants, "system", "admin")

    def fail(headers: dict[str, str], query: str) -> str:
        answer = tenants.client.simulate_post(
            "/agent/execute", json={"query": query, "workflow": "test_fail"}, headers=headers
        )
        assert answer.status_code == 202, answer.text
        return str(answer.json["task_id"])

    ours = [fail(south, "south 1"), fail(north, "north 1"), fail(south, "south 2"), fail(north, "north 2")]
    for task_id in ours:
        wait_for_state(tenants.runtime.sessions, task_id, "FAILURE")
    south_1, north_1, south_2, north_2 = ours

    def dead(headers: dict[str, str]) -> list[str]:
        answer = tenants.client.simulate_get("/dlq", params={"queue": "default"}, headers=headers)
        assert answer.status_code == 200, answer.text
        return [m["task_id"] for q in answer.json["queues"] for m in q["messages"]]

    def listed() -> bool:
        return sorted(dead(north)) == sorted([north_1, north_2]) and sorted(dead(south)) == sorted([south_1, south_2])

    wait_until(listed, what="each tenant's two dead letters in its GET /dlq")
    south_before = dead(south)

    # One task: another tenant's id answers as if there were no such dead letter.
    assert tenants.client.simulate_delete(f"/dlq/{south_1}", headers=north).status_code == 404
    assert tenants.client.simulate_post(f"/dlq/{south_1}/replay", headers=north).status_code == 404

    # The whole queue: north's letters only; south's stay where they were, in order.
    purged = tenants.client.simulate_delete("/dlq", params={"queue": "default"}, headers=north)
    assert purged.status_code == 200, purged.text
    assert sorted(purged.json["task_ids"]) == sorted([north_1, north_2])
    assert purged.json["purged"] == 2
    assert dead(south) == south_before
    assert dead(north) == []
    replayed = tenants.client.simulate_post("/dlq/replay", params={"queue": "default"}, headers=north)
    assert replayed.status_code == 202, replayed.text
    assert replayed.json["replayed"] == [], replayed.text
    assert get_task(tenants.runtime.sessions, south_1).state == "FAILURE"  # not reopened by north

    # The operator sees and acts on the whole queue.
    assert {south_1, south_2} <= set(dead(operator))
    purged = tenants.client.simulate_delete("/dlq", params={"queue": "default"}, headers=operator)
    assert purged.status_code == 200
    assert {south_1, south_2} <= set(purged.json["task_ids"])
    assert dead(operator) == []
    assert dead(south) == []
