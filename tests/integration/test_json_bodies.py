"""What is not JSON is refused as such on every route that reads JSON, on PostgreSQL and on SQLite.

Python's parser takes ``NaN``, ``Infinity`` and ``-Infinity`` and turns ``1e999999`` into infinity;
PostgreSQL's ``jsonb`` then refused them (a 500) while SQLite stored them (a 202 and a row no JSON
reader can read back). Multipart bodies reached the schema check as a Python object.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from models.events import Event
from models.tasks import Task
from tests.stack import MakeStack, Stack
from tests.support import DATABASES, settings_for_database
from web.signatures import custom_signature

WEBHOOK_SECRET = "custom-webhook-secret-for-json-tests"
NOT_JSON_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e999999", "-1e999999"]
JSON_CT = {"content-type": "application/json"}


@pytest.fixture(params=DATABASES)
def api(request: pytest.FixtureRequest, tmp_path: Path, make_stack: MakeStack) -> Stack:
    return make_stack(settings_for_database(request, tmp_path).replace(webhook_secret=WEBHOOK_SECRET), worker=False)


def signed(body: bytes) -> dict[str, str]:
    """Headers of a correctly signed custom webhook delivery: the body is refused for what it is."""
    timestamp, delivery = str(int(time.time())), uuid.uuid4().hex
    return {
        **JSON_CT,
        "X-Interlock-Timestamp": timestamp,
        "X-Interlock-Delivery": delivery,
        "X-Interlock-Signature-256": custom_signature(WEBHOOK_SECRET, timestamp, delivery, body),
    }


def stored(stack: Stack) -> tuple[int, int]:
    with stack.runtime.sessions() as session:
        return (
            session.scalar(select(func.count()).select_from(Task)) or 0,
            session.scalar(select(func.count()).select_from(Event)) or 0,
        )


def requests_with(number: str) -> list[tuple[str, str, bytes, dict[str, str]]]:
    execute = f'{{"query": "q", "context": {{"x": {number}}}}}'.encode()
    webhook = f'{{"event_type": "json.test", "data": {{"x": {number}}}}}'.encode()
    return [
        ("execute", "/agent/execute", execute, JSON_CT),
        ("idempotent", "/agent/execute", execute, {**JSON_CT, "Idempotency-Key": f"k-{number}"}),
        ("event", "/events", f'{{"event_type": "json.test", "data": {{"x": [{number}]}}}}'.encode(), JSON_CT),
        (
            "tool",
            "/tools/call_external_api",
            f'{{"endpoint": "https://example.com/", "params": {{"x": {number}}}}}'.encode(),
            JSON_CT,
        ),
        ("webhook", "/webhook/custom", webhook, signed(webhook)),
    ]


@pytest.mark.parametrize("number", NOT_JSON_NUMBERS)
def test_nan_and_infinity_are_400_not_json_on_every_json_route(api: Stack, number: str) -> None:
    before = stored(api)
    for label, path, body, headers in requests_with(number):
        response = api.client.simulate_post(path, body=body, headers=headers)
        assert response.status_code == 400, (label, number, response.status, response.text)
        assert response.headers["content-type"].startswith("application/json"), label
        description = response.json["description"]
        assert "finite" in description, (label, description)
    assert stored(api) == before


def test_finite_numbers_are_still_accepted(api: Stack) -> None:
    body = b'{"query": "q", "context": {"small": 1e-300, "big": 1.5e300, "int": 12345678901234567890}}'
    response = api.client.simulate_post("/agent/execute", body=body, headers=JSON_CT)
    assert response.status_code == 202, response.text


@pytest.mark.parametrize("path", ["/agent/execute", "/events", "/tools/scrape_url", "/keys"])
def test_multipart_on_a_json_route_is_415_without_a_python_repr(api: Stack, path: str) -> None:
    body = b'--b\r\nContent-Disposition: form-data; name="query"\r\n\r\nhello\r\n--b--\r\n'
    response = api.client.simulate_post(path, body=body, headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 415, (path, response.status, response.text)
    assert response.json["title"]
    assert "object at 0x" not in response.text
