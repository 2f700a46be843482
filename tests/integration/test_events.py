"""The event bus on RabbitMQ's topic exchange and PostgreSQL: publish, subscribe, list."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from sqlalchemy import select

from actors.broker import build_broker
from actors.catalogue import discover
from actors.events.bus import EventBus, event_task_id
from actors.runtime import Runtime
from interlock.cli.worker import start_worker
from interlock.settings import Settings
from models.events import Event
from models.tasks import Task
from tests.stack import MakeStack, Stack
from tests.support import events as task_events
from tests.support import free_port, get_task, wait_for_state, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

NEW_DATA_QUEUE = "events.agent_on_new_data"


def stored(sessions, event_type: str | None = None) -> list[Event]:
    with sessions() as session:
        query = select(Event).order_by(Event.created_at)
        if event_type is not None:
            query = query.where(Event.type == event_type)
        return list(session.scalars(query))


@pytest.fixture
def idle_stack(settings: Settings, make_stack: MakeStack) -> Stack:
    """The API on RabbitMQ with no worker running, its subscription queues empty."""
    stack = make_stack(settings, worker=False)
    for subscription in stack.broker.subscriptions.values():
        stack.broker.declare_queue(subscription.queue, ensure=True)
        stack.broker.flush(subscription.queue)
    return stack


def test_event_published_while_no_worker_runs_is_handled_when_one_starts(idle_stack, settings, fake_llm) -> None:
    answer = idle_stack.client.simulate_post(
        "/events", json={"event_type": "new_data_arrived", "data": {"source": "warehouse", "content": "rows 1-100"}}
    )
    assert answer.status_code == 202, answer.text
    event_id, task_ids = answer.json["event_id"], answer.json["task_ids"]
    assert task_ids == [event_task_id(event_id, "agent_on_new_data")]
    sessions = idle_stack.runtime.sessions
    assert get_task(sessions, task_ids[0]).state == "PENDING"
    status = idle_stack.client.simulate_get(f"/agent/status/{task_ids[0]}").json
    assert status["workflow"] == "agent_on_new_data"
    assert status["state"] == "PENDING"
    # Durable: the message waits in the subscription's own queue until a worker comes.
    assert idle_stack.broker.get_queue_message_counts(NEW_DATA_QUEUE)[0] == 1

    worker, worker_broker, worker_runtime = start_worker(settings, queues=None, threads=2)
    try:
        task = wait_for_state(sessions, task_ids[0], "SUCCESS")
        downstream = wait_until(lambda: stored(sessions, "data_processed"), what="the data_processed event")
    finally:
        worker.stop()
        worker_broker.close()
        worker_runtime.close()

    assert len(downstream) == 1
    assert downstream[0].published_by == task.id
    assert downstream[0].source == "agent_on_new_data"
    assert downstream[0].data["source"] == "warehouse"
    assert downstream[0].data["summary"].startswith("fake-llm answer to:")
    assert task.result["published"]["event_id"] == downstream[0].id
    assert downstream[0].task_ids == []  # nobody subscribes to data_processed: stored, not an error
    assert fake_llm.count() == 1
    assert idle_stack.broker.get_queue_message_counts(NEW_DATA_QUEUE) == (0, 0, 0)


def test_a_failing_handler_is_retried_like_any_task_and_publishes_once(stack, fake_llm) -> None:
    fake_llm.fail_next(1, status=500)
    answer = stack.client.simulate_post("/events", json={"event_type": "new_data_arrived", "data": {"source": "s3"}})
    task_id = answer.json["task_ids"][0]
    task = wait_for_state(stack.runtime.sessions, task_id, "SUCCESS")
    assert task.attempts == 2
    history = stack.client.simulate_get(f"/agent/status/{task_id}").json
    assert history["state"] == "SUCCESS"
    assert history["progress"] == 100
    states = [e.state for e in task_events(stack.runtime.sessions, task_id) if e.kind == "state"]
    assert states == ["PENDING", "PROCESSING", "RETRY", "PROCESSING", "SUCCESS"]
    wait_until(lambda: stored(stack.runtime.sessions, "data_processed"), what="data_processed")
    assert len(stored(stack.runtime.sessions, "data_processed")) == 1


def test_event_without_subscriber_is_stored_and_answered(idle_stack) -> None:
    answer = idle_stack.client.simulate_post("/events", json={"event_type": "nobody.listens", "data": {"n": 1}})
    assert answer.status_code == 202, answer.text
    assert answer.json["task_ids"] == []
    listed = idle_stack.client.simulate_get("/events", params={"type": "nobody.listens"}).json
    assert [e["event_id"] for e in listed["events"]] == [answer.json["event_id"]]
    assert listed["events"][0]["data"] == {"n": 1}
    assert listed["events"][0]["source"] == "api"


def test_each_article_agent_runs_and_the_chain_follows(stack) -> None:
    client, sessions = stack.client, stack.runtime.sessions
    change = client.simulate_post(
        "/events",
        json={
            "event_type": "environment_changed",
            "data": {"change_type": "api_rate_limit_increased", "impact": "high"},
        },
    ).json
    user = client.simulate_post(
        "/events", json={"event_type": "user.profile_changed", "data": {"user_id": "u-7", "update_type": "profile"}}
    ).json
    adapted_task = wait_for_state(sessions, change["task_ids"][0], "SUCCESS")
    user_task = wait_for_state(sessions, user["task_ids"][0], "SUCCESS")

    assert adapted_task.workflow == "agent_on_environment_change"
    assert adapted_task.parent_id is None
    adapted = wait_until(lambda: stored(sessions, "agent_adapted"), what="agent_adapted")
    assert adapted[0].data["adaptation_strategy"] == "Adjusted for api_rate_limit_increased"
    assert user_task.workflow == "agent_on_user_update"
    assert user_task.result["acknowledgment"] == "Processed profile update"


def test_event_ids_never_collide(settings) -> None:
    runtime = Runtime.open(settings)
    broker = build_broker(settings, runtime, discover(settings.agent_modules))
    try:
        bus = EventBus.for_runtime(runtime, broker)
        ids = {bus.publish("burst.happened", {"n": n}, source="test")[0] for n in range(50)}
    finally:
        broker.close()
        runtime.close()
    assert len(ids) == 50  # the article's f"{type}_{seconds}" gives 50 events one id


def test_publishing_an_event_again_runs_its_tasks_once(stack) -> None:
    bus = EventBus.for_runtime(stack.runtime, stack.broker)
    event_id, task_ids = bus.publish("environment_changed", {"change_type": "x"}, source="test")
    wait_for_state(stack.runtime.sessions, task_ids[0], "SUCCESS")
    again = bus.publish("environment_changed", {"change_type": "x"}, source="test", event_id=event_id)
    assert again == (event_id, task_ids)

    queue = "events.agent_on_environment_change"
    wait_until(lambda: stack.broker.get_queue_message_counts(queue)[:2] == (0, 0), what="the redelivery consumed")
    stack.worker.join()
    task = get_task(stack.runtime.sessions, task_ids[0])
    assert task.attempts == 1
    assert task.state == "SUCCESS"
    assert len(stored(stack.runtime.sessions, "environment_changed")) == 1
    assert len(stored(stack.runtime.sessions, "agent_adapted")) == 1


def test_a_subscriber_the_publisher_does_not_know_still_gets_its_task(settings) -> None:
    """A worker deployed with a subscriber before the API: the task is created on delivery."""
    worker, worker_broker, worker_runtime = start_worker(settings, queues=None, threads=2)
    old_catalogue = {k: v for k, v in discover(settings.agent_modules).items() if k != "agent_on_environment_change"}
    runtime = Runtime.open(settings)
    broker = build_broker(settings, runtime, old_catalogue)
    try:
        worker_broker.declare_queue("events.agent_on_environment_change", ensure=True)  # declared and bound
        event_id, task_ids = EventBus.for_runtime(runtime, broker).publish(
            "environment_changed", {"change_type": "deploy"}, source="old-api"
        )
        assert task_ids == []
        task = wait_for_state(runtime.sessions, event_task_id(event_id, "agent_on_environment_change"), "SUCCESS")
        assert task.input["event_id"] == event_id
        assert task.input["data"] == {"change_type": "deploy"}
    finally:
        worker.stop()
        worker_broker.close()
        worker_runtime.close()
        broker.close()
        runtime.close()


def test_in_process_broker_delivers_events_too(settings, make_stack) -> None:
    running = make_stack(settings.replace(broker_url=""))
    answer = running.client.simulate_post("/events", json={"event_type": "user_updated", "data": {"user_id": "u1"}})
    assert answer.status_code == 202, answer.text
    task = wait_for_state(running.runtime.sessions, answer.json["task_ids"][0], "SUCCESS")
    assert task.result["user_id"] == "u1"


def test_unreachable_broker_answers_503_and_keeps_nothing(settings, make_stack) -> None:
    running = make_stack(settings.replace(broker_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/"), worker=False)
    for event_type in ("new_data_arrived", "nobody.listens"):
        answer = running.client.simulate_post("/events", json={"event_type": event_type, "data": {}})
        assert answer.status_code == 503, answer.text
    assert stored(running.runtime.sessions) == []
    with running.runtime.sessions() as session:
        assert session.scalars(select(Task)).all() == []


def test_listing_filters_orders_and_limits(idle_stack) -> None:
    client = idle_stack.client
    for n in range(3):
        client.simulate_post("/events", json={"event_type": "listing.a", "data": {"n": n}})
    client.simulate_post("/events", json={"event_type": "listing.b", "data": {}})

    everything = client.simulate_get("/events").json
    assert everything["count"] == 4
    assert everything["limit"] == 100
    only_a = client.simulate_get("/events", params={"type": "listing.a"}).json["events"]
    assert [e["data"]["n"] for e in only_a] == [2, 1, 0]  # newest first
    assert client.simulate_get("/events", params={"limit": "2"}).json["count"] == 2

    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    future = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert client.simulate_get("/events", query_string=f"since={quote(past)}").json["count"] == 4
    assert client.simulate_get("/events", query_string=f"since={past}").json["count"] == 4  # '+' read as ' '
    assert client.simulate_get("/events", params={"since": future}).json["count"] == 0


@pytest.mark.parametrize(
    "query",
    ["since=yesterday", "since=2026-13-01", "limit=0", "limit=1001", "limit=ten", "type=not%20a%20type"],
)
def test_listing_refuses_bad_parameters(idle_stack, query: str) -> None:
    answer = idle_stack.client.simulate_get("/events", query_string=query)
    assert answer.status_code == 400, answer.text
    assert answer.json["title"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"event_type": ""},
        {"event_type": "two words"},
        {"event_type": "x" * 129},
        {"event_type": "ok", "data": [1, 2]},
        {"event_type": "ok", "data": {}, "extra": 1},
    ],
)
def test_publishing_refuses_bad_input(idle_stack, body: dict) -> None:
    answer = idle_stack.client.simulate_post("/events", json=body)
    assert answer.status_code == 400, answer.text
    assert stored(idle_stack.runtime.sessions) == []
