"""Domain errors answer with the same status and JSON on every route that meets them (``web.errors``)."""

from __future__ import annotations

import uuid

import pytest

from actors.catalogue import load_catalogue
from models.task_transitions import create_task
from tests.stack import Stack

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


def test_resuming_an_unknown_workflow_is_404(stack: Stack) -> None:
    response = stack.client.simulate_post("/agent/resume/no-such-workflow")
    assert response.status_code == 404
    assert response.json == {"title": "Unknown workflow", "description": "No workflow has the id 'no-such-workflow'."}


def test_resuming_a_workflow_that_has_not_failed_is_409(settings, make_stack) -> None:
    stack = make_stack(settings, worker=False)
    task_id = str(uuid.uuid4())
    with stack.runtime.sessions.begin() as session:
        create_task(session, task_id=task_id, workflow="agent", actor="agent", queue="default", input={})
    response = stack.client.simulate_post(f"/agent/resume/{task_id}")
    assert response.status_code == 409
    assert response.json == {
        "title": "Workflow cannot be resumed",
        "description": f"task {task_id} is PENDING; only FAILURE or CANCELLED tasks can be resumed",
    }


def test_every_dead_letter_route_is_503_while_the_broker_is_unreachable(settings, make_stack) -> None:
    settings = settings.replace(broker_url="amqp://guest:guest@127.0.0.1:1/")
    queue = sorted({spec.queue for spec in load_catalogue(settings).values()})[0]
    stack = make_stack(settings, worker=False)
    for method, path, query in [
        ("GET", "/dlq", None),
        ("DELETE", "/dlq", f"queue={queue}"),
        ("DELETE", "/dlq/some-task", None),
        ("POST", "/dlq/some-task/replay", None),
        ("POST", "/dlq/replay", f"queue={queue}"),
    ]:
        response = stack.client.simulate_request(method, path, query_string=query)
        assert response.status_code == 503, (method, path, response.text)
        assert set(response.json) == {"title", "description"}
        assert response.json["title"] == "Broker unavailable"
        assert response.json["description"].startswith("RabbitMQ is unreachable: ")
        assert response.headers["Retry-After"] == "5"
