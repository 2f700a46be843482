"""Batch tools fan out as child tasks and gather durably; a callback gets every result."""

from __future__ import annotations

import pytest

from testkit.fakes.http_server import FakeWebServer
from tests.support import wait_for_state

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


@pytest.fixture
def batch_stack(settings, make_stack):
    return make_stack(settings.replace(rate_limits="", tools_allow_hosts="127.0.0.1"))


def test_batch_api_calls_lists_each_call_as_a_child(batch_stack) -> None:
    with FakeWebServer() as web:
        endpoints = [web.url("/status/200?n=1"), web.url("/status/200?n=2"), web.url("/status/404")]
        response = batch_stack.client.simulate_post("/tools/batch_api_calls", json={"endpoints": endpoints})
        assert response.status_code == 202, response.text
        batch_id = response.json["task_id"]
        task = wait_for_state(batch_stack.runtime.sessions, batch_id, "SUCCESS", timeout=60)
        assert web.count("/status/200") == 2
        assert web.count("/status/404") == 1
    assert task.result["total_tasks"] == 3
    assert task.result["successful"] == 2
    assert [m["status"] for m in task.result["results"]] == ["success", "success", "failed"]
    status = batch_stack.client.simulate_get(f"/agent/status/{batch_id}").json
    assert len(status["children"]) == 3
    assert {c["agent"] for c in status["children"]} == {"call_external_api"}
    assert sorted(c["state"] for c in status["children"]) == ["FAILURE", "SUCCESS", "SUCCESS"]


def test_batch_url_scraping_with_a_callback_is_a_chord(batch_stack) -> None:
    with FakeWebServer() as web:
        urls = [web.url("/page"), web.url("/page?copy=2")]
        response = batch_stack.client.simulate_post(
            "/tools/batch_url_scraping", json={"urls": urls, "callback": "aggregate"}
        )
        assert response.status_code == 202, response.text
        task = wait_for_state(batch_stack.runtime.sessions, response.json["task_id"], "SUCCESS", timeout=60)
    assert task.result["total_agents"] == 2
    assert task.result["successful"] == 2
    assert all(data["title"] for data in task.result["combined_data"])


def test_batch_input_is_validated(batch_stack) -> None:
    for body in ({"endpoints": []}, {"endpoints": "http://x"}, {"urls": ["ftp://x"], "colour": 1}):
        name = "batch_api_calls" if "endpoints" in body else "batch_url_scraping"
        response = batch_stack.client.simulate_post(f"/tools/{name}", json=body)
        assert response.status_code == 400, (body, response.text)
