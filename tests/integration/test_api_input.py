"""Bad input is refused with the right status and a JSON body, and leaves nothing behind."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.pool import NullPool

from models.scheduled import ScheduledMessage
from models.tasks import Task
from tests.stack import Stack

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

JSON = {"content-type": "application/json"}

CASES = [
    ("malformed JSON", b'{"query": "x",', JSON, 400),
    ("missing query", b'{"context": {}}', JSON, 400),
    ("empty query", b'{"query": ""}', JSON, 400),
    ("blank query", b'{"query": "   "}', JSON, 400),
    ("query of wrong type", b'{"query": 42}', JSON, 400),
    ("context of wrong type", b'{"query": "x", "context": [1, 2]}', JSON, 400),
    ("unknown field", b'{"query": "x", "colour": "blue"}', JSON, 400),
    ("unknown workflow", b'{"query": "x", "workflow": "nope"}', JSON, 400),
    ("bad priority", b'{"query": "x", "priority": "urgent"}', JSON, 400),
    ("not an object", b'["query"]', JSON, 400),
    ("empty body", b"", JSON, 400),
    ("wrong content type", b"query=x", {"content-type": "application/x-www-form-urlencoded"}, 415),
    ("body over 1 MiB", json.dumps({"query": "x" * (1024 * 1024 + 10)}).encode(), JSON, 413),
]


def _counts(stack: Stack) -> tuple[int, int]:
    with stack.runtime.sessions() as session:
        tasks = session.scalar(select(func.count()).select_from(Task)) or 0
    return tasks, stack.broker.get_queue_message_counts("default")[0]


@pytest.mark.parametrize(("case", "body", "headers", "status"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused(settings, make_stack, case: str, body: bytes, headers: dict, status: int) -> None:
    stack = make_stack(settings, worker=False)
    before = _counts(stack)
    response = stack.client.simulate_post("/agent/execute", body=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json.get("title"), response.json
    assert _counts(stack) == before


def test_unknown_workflow_names_the_known_ones(settings, make_stack) -> None:
    stack = make_stack(settings, worker=False)
    response = stack.client.simulate_post("/agent/execute", json={"query": "x", "workflow": "nope"})
    assert "agent" in response.json["description"]


def test_unknown_task_is_404_not_pending(settings, make_stack) -> None:
    stack = make_stack(settings, worker=False)
    for path in ("/agent/status/", "/agent/result/"):
        response = stack.client.simulate_get(path + "00000000-0000-0000-0000-000000000000")
        assert response.status_code == 404
        assert response.json["title"] == "Unknown task"


def test_unfinished_result_is_202_not_ready(settings, make_stack) -> None:
    stack = make_stack(settings, worker=False)
    task_id = stack.submit(query="queued only")
    response = stack.client.simulate_get(f"/agent/result/{task_id}")
    assert response.status_code == 202
    assert response.json["status"] == "not_ready"
    submitted = stack.client.simulate_get(f"/agent/status/{task_id}").json
    assert submitted["state"] == "PENDING"


def test_location_header_points_at_status(settings, make_stack) -> None:
    stack = make_stack(settings, worker=False)
    response = stack.client.simulate_post("/agent/execute", json={"query": "where?"})
    assert response.status_code == 202
    assert response.headers["location"].endswith(response.json["status_url"])
    assert response.json["status"] == "queued"


def test_unreachable_broker_still_accepts_into_the_outbox(settings, make_stack) -> None:
    """RabbitMQ down refuses no work: the task and its message are committed and wait (``test_outbox``)."""
    stack = make_stack(settings.replace(broker_url="amqp://guest:guest@127.0.0.1:1/"), worker=False)
    response = stack.client.simulate_post("/agent/execute", json={"query": "nobody listens yet"})
    assert response.status_code == 202, response.text
    with stack.runtime.sessions() as session:
        assert session.get(Task, response.json["task_id"]) is not None
        parked = session.scalars(select(ScheduledMessage.task_id)).all()
    assert parked == [response.json["task_id"]]


def test_dropped_database_connections_cost_one_503_then_recover(settings, make_stack) -> None:
    """The pool is not pinged at checkout: a server-side cut fails one request cleanly, not more."""
    stack = make_stack(settings, worker=False)
    first = stack.client.simulate_post("/agent/execute", json={"query": "before the cut"})
    assert first.status_code == 202, first.text
    # Cut every other connection to this database from the server side (a restart or failover).
    outside = create_engine(settings.effective_database_url, poolclass=NullPool)
    with outside.connect() as other:
        cut = other.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    assert cut >= 1
    answers = [stack.client.simulate_post("/agent/execute", json={"query": f"after {i}"}) for i in range(3)]
    codes = [a.status_code for a in answers]
    assert codes.count(503) <= 1, codes
    assert codes[-1] == 202, codes
    for answer in answers:
        if answer.status_code == 503:
            assert answer.json["title"] == "Database connection reset"
            assert answer.headers["retry-after"] == "1"
    with stack.runtime.sessions() as session:
        queries = set(session.scalars(select(Task.input["query"].as_string())))
    assert {"before the cut", *(f"after {i}" for i, c in enumerate(codes) if c == 202)} <= queries
