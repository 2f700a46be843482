"""Webhooks over HTTP (Falcon's test client) on RabbitMQ and PostgreSQL: verified, deduplicated, published."""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select, update

from interlock.settings import Settings, setting_rows
from models.base import utcnow
from models.events import Event, WebhookDelivery, purge_deliveries
from models.tasks import Task
from tests.stack import MakeStack, Stack
from tests.support import wait_for_state
from web.signatures import custom_signature, sha256_signature, slack_signature

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

GITHUB_SECRET = "It's a Secret to Everybody"
SLACK_SECRET = "slack-signing-secret-for-tests"
CUSTOM_SECRET = "custom-webhook-secret-for-tests"


@pytest.fixture
def secured(settings: Settings) -> Settings:
    # The `settings` fixture has emptied every table already.
    return settings.replace(
        github_webhook_secret=GITHUB_SECRET, slack_signing_secret=SLACK_SECRET, webhook_secret=CUSTOM_SECRET
    )


@pytest.fixture
def api(secured: Settings, make_stack: MakeStack) -> Stack:
    return make_stack(secured, worker=False)


def count(stack: Stack, model: Any, *conditions: Any) -> int:
    with stack.runtime.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*conditions)) or 0)


def github_post(stack: Stack, body: bytes, *, event: str = "push", delivery: str | None = None, **headers: str):
    sent = {"X-GitHub-Event": event, "Content-Type": "application/json", **headers}
    if delivery:
        sent["X-GitHub-Delivery"] = delivery
    sent.setdefault("X-Hub-Signature-256", sha256_signature(GITHUB_SECRET, body))
    return stack.client.simulate_post("/webhook/github", body=body, headers=sent)


def slack_post(stack: Stack, body: bytes, content_type: str, *, age: float = 0, **headers: str):
    timestamp = str(int(time.time() - age))
    sent = {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": slack_signature(SLACK_SECRET, timestamp, body),
        **headers,
    }
    return stack.client.simulate_post("/webhook/slack", body=body, headers=sent)


def custom_headers(body: bytes, *, delivery: str | None = None, age: float = 0) -> dict[str, str]:
    """What a sender of the custom webhook sends: timestamp, delivery id and their v1 signature."""
    timestamp, delivery = str(int(time.time() - age)), delivery or str(uuid.uuid4())
    return {
        "Content-Type": "application/json",
        "X-Interlock-Timestamp": timestamp,
        "X-Interlock-Delivery": delivery,
        "X-Interlock-Signature-256": custom_signature(CUSTOM_SECRET, timestamp, delivery, body),
    }


def custom_post(stack: Stack, body: bytes, headers: dict[str, str]):
    return stack.client.simulate_post("/webhook/custom", body=body, headers=headers)


# -- GitHub ---------------------------------------------------------------------------------


def test_githubs_documented_example_passes_the_check_and_is_then_refused_as_not_json(api: Stack) -> None:
    signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    answer = github_post(api, b"Hello, World!", **{"X-Hub-Signature-256": signature})
    assert answer.status_code == 400, answer.text
    assert "not JSON" in answer.json["description"]

    changed = github_post(api, b"Hello, World?", **{"X-Hub-Signature-256": signature})
    assert changed.status_code == 401, changed.text
    assert changed.json["title"] == "Invalid signature"


def test_missing_or_wrong_github_signature_is_401_json(api: Stack) -> None:
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    missing = api.client.simulate_post("/webhook/github", body=body, headers={"X-GitHub-Event": "push"})
    assert missing.status_code == 401
    assert "missing" in missing.json["description"]
    wrong = github_post(api, body, **{"X-Hub-Signature-256": sha256_signature("not the secret", body)})
    assert wrong.status_code == 401
    assert wrong.headers["content-type"].startswith("application/json")
    assert count(api, Event) == 0


def test_signed_push_delivered_twice_is_one_event(api: Stack) -> None:
    body = json.dumps(
        {"ref": "refs/heads/main", "repository": {"full_name": "acme/app"}, "sender": {"login": "octocat"}}
    ).encode()
    first = github_post(api, body, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    assert first.status_code == 202, first.text
    assert first.json["status"] == "accepted"
    assert len(first.json["task_ids"]) == 1
    again = github_post(api, body, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    assert again.status_code == 200, again.text
    assert again.json == {"status": "duplicate", "event_id": first.json["event_id"], "task_ids": []}

    assert count(api, Event, Event.type == "github.push") == 1
    assert count(api, Task, Task.workflow == "agent_on_new_data") == 1
    event = api.client.simulate_get("/events", params={"type": "github.push"}).json["events"][0]
    assert event["source"] == "github"
    assert event["data"]["repository"] == "acme/app"
    assert event["data"]["sender"] == "octocat"


def test_a_github_body_replayed_under_a_new_delivery_id_is_a_duplicate_for_a_day(api: Stack) -> None:
    body = json.dumps({"ref": "refs/heads/main", "after": "6113728f27ae82c7b1a177c8d03f9e96e0adf246"}).encode()
    first = github_post(api, body, delivery="d6b1f4a0-0001-11f0-8000-000000000001")
    assert first.status_code == 202, first.text
    # The signature covers the body only: a captured delivery resent with a new id (and another
    # X-GitHub-Event, which is not signed either) still carries a valid signature.
    for event in ("push", "release"):
        replay = github_post(api, body, event=event, delivery=f"d6b1f4a0-0002-11f0-8000-00000000000{len(event)}")
        assert replay.status_code == 200, replay.text
        assert replay.json == {"status": "duplicate", "event_id": first.json["event_id"], "task_ids": []}
    assert count(api, Event) == 1
    assert count(api, Task) == 1

    # A day later the body is new again (GitHub itself never resends one after so long) and the
    # retention cleanup deletes the hash.
    with api.runtime.sessions.begin() as session:
        session.execute(update(WebhookDelivery).values(expires_at=utcnow() - timedelta(seconds=1)))
    later = github_post(api, body, delivery="d6b1f4a0-0003-11f0-8000-000000000003")
    assert later.status_code == 202, later.text
    digest = hashlib.sha256(body).hexdigest()
    with api.runtime.sessions.begin() as session:
        session.execute(update(WebhookDelivery).values(expires_at=utcnow() - timedelta(seconds=1)))
        assert purge_deliveries(session, received_before=utcnow() - timedelta(days=7)) >= 1
    assert count(api, WebhookDelivery, WebhookDelivery.delivery_id == digest) == 0


def test_github_ping_form_bodies_and_other_events(api: Stack) -> None:
    ping = github_post(api, json.dumps({"zen": "Keep it simple.", "hook_id": 42}).encode(), event="ping")
    assert ping.status_code == 200
    assert ping.json["hook_id"] == 42
    form = urlencode({"payload": json.dumps({"action": "opened", "issue": {"number": 1}})}).encode()
    issues = github_post(api, form, event="issues", **{"Content-Type": "application/x-www-form-urlencoded"})
    assert issues.status_code == 202, issues.text
    assert issues.json["task_ids"] == []  # nobody subscribes to github.issues; stored all the same
    assert count(api, Event, Event.type == "github.issues") == 1
    no_event = api.client.simulate_post(
        "/webhook/github", body=b"{}", headers={"X-Hub-Signature-256": sha256_signature(GITHUB_SECRET, b"{}")}
    )
    assert no_event.status_code == 400


# -- Slack ----------------------------------------------------------------------------------


def test_slack_json_and_form_bodies_are_verified_and_accepted(api: Stack) -> None:
    event_body = json.dumps(
        {
            "token": "legacy-verification-token",
            "type": "event_callback",
            "team_id": "T1",
            "event_id": "Ev0001",
            "event": {"type": "message", "user": "U1", "text": "hello", "channel": "C1"},
        }
    ).encode()
    events_api = slack_post(api, event_body, "application/json")
    assert events_api.status_code == 202, events_api.text
    assert events_api.json["status"] == "accepted"
    assert len(events_api.json["task_ids"]) == 1

    command_body = urlencode(
        {"token": "legacy", "command": "/agent", "text": "status", "user_id": "U2", "trigger_id": "13345224609.738"}
    ).encode()
    command = slack_post(api, command_body, "application/x-www-form-urlencoded")
    assert command.status_code == 202, command.text

    listed = {e["type"]: e for e in api.client.simulate_get("/events").json["events"]}
    assert listed["slack.message"]["data"]["text"] == "hello"
    assert listed["slack.message"]["data"]["user"] == "U1"
    assert listed["slack.command"]["data"]["command"] == "/agent"
    assert listed["slack.command"]["data"]["user"] == "U2"
    assert "token" not in json.dumps(listed)  # Slack's legacy token is a credential: not stored


def test_slack_url_verification_answers_the_challenge(api: Stack) -> None:
    body = json.dumps({"type": "url_verification", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    answer = slack_post(api, body.encode(), "application/json")
    assert answer.status_code == 200
    assert answer.json == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}


def test_slack_request_ten_minutes_old_is_refused(api: Stack) -> None:
    body = json.dumps({"type": "event_callback", "event_id": "Ev0002", "event": {"type": "message"}}).encode()
    answer = slack_post(api, body, "application/json", age=600)
    assert answer.status_code == 401, answer.text
    assert "300 seconds" in answer.json["description"]
    assert count(api, Event) == 0


def test_slack_retries_are_not_processed_twice(api: Stack) -> None:
    body = json.dumps(
        {"type": "event_callback", "event_id": "Ev0003", "event": {"type": "app_mention", "user": "U3"}}
    ).encode()
    first = slack_post(api, body, "application/json")
    retry = slack_post(api, body, "application/json", **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "timeout"})
    assert first.status_code == 202
    assert retry.status_code == 200
    assert retry.json["status"] == "duplicate"
    assert retry.json["event_id"] == first.json["event_id"]
    assert count(api, Event, Event.type == "slack.app_mention") == 1


def test_slack_event_reaches_the_user_agent(secured: Settings, make_stack) -> None:
    running = make_stack(secured)
    body = json.dumps(
        {"type": "event_callback", "event_id": "Ev0004", "event": {"type": "message", "user": "U9"}}
    ).encode()
    answer = slack_post(running, body, "application/json")
    task = wait_for_state(running.runtime.sessions, answer.json["task_ids"][0], "SUCCESS")
    assert task.workflow == "agent_on_user_update"
    assert task.result["user_id"] == "U9"
    assert task.result["acknowledgment"] == "Processed message update"


# -- custom ---------------------------------------------------------------------------------


def test_custom_webhook_publishes_the_event_it_is_given(api: Stack) -> None:
    body = json.dumps(
        {"event_type": "environment_changed", "data": {"change_type": "api_rate_limit_increased", "impact": "high"}}
    ).encode()
    answer = custom_post(api, body, custom_headers(body))
    assert answer.status_code == 202, answer.text
    assert answer.json["status"] == "accepted"
    assert len(answer.json["task_ids"]) == 1
    status = api.client.simulate_get(f"/agent/status/{answer.json['task_ids'][0]}").json
    assert status["workflow"] == "agent_on_environment_change"

    unsigned = api.client.simulate_post("/webhook/custom", body=body)
    assert unsigned.status_code == 401
    assert "missing" in unsigned.json["description"]
    invalid = json.dumps({"event_type": "two words"}).encode()
    refused = custom_post(api, invalid, custom_headers(invalid))
    assert refused.status_code == 400
    nul = json.dumps({"event_type": "environment_changed", "data": {"note": "a\u0000b"}}).encode()
    refused = custom_post(api, nul, custom_headers(nul))
    assert refused.status_code == 400
    assert "NUL" in refused.json["description"]
    long_id = custom_post(api, body, custom_headers(body, delivery="x" * 256))
    assert long_id.status_code == 400
    assert "X-Interlock-Delivery" in long_id.json["description"]
    assert count(api, Event) == 1


def test_a_captured_custom_delivery_cannot_be_replayed(api: Stack) -> None:
    body = json.dumps({"event_type": "environment_changed", "data": {"change_type": "deploy"}}).encode()
    captured = custom_headers(body)
    first = custom_post(api, body, captured)
    assert first.status_code == 202, first.text

    # Sent again as it was: acknowledged, not run again.
    again = custom_post(api, body, captured)
    assert again.status_code == 200, again.text
    assert again.json == {"status": "duplicate", "event_id": first.json["event_id"], "task_ids": []}
    # Under a new delivery id, or with a fresher timestamp: the signature no longer matches.
    new_id = {**captured, "X-Interlock-Delivery": str(uuid.uuid4())}
    new_time = {**captured, "X-Interlock-Timestamp": str(int(captured["X-Interlock-Timestamp"]) + 1)}
    for headers in (new_id, new_time):
        replay = custom_post(api, body, headers)
        assert replay.status_code == 401, replay.text
        assert "does not match" in replay.json["description"]
    # Properly signed, but six minutes old: refused, whatever its delivery id.
    stale = custom_post(api, body, custom_headers(body, age=360))
    assert stale.status_code == 401
    assert "300 seconds" in stale.json["description"]
    # The body-only signature of the old scheme is refused with a message that says so.
    old = {**captured, "X-Interlock-Signature-256": sha256_signature(CUSTOM_SECRET, body)}
    old["X-Interlock-Delivery"] = str(uuid.uuid4())
    legacy = custom_post(api, body, old)
    assert legacy.status_code == 401
    assert "no longer accepted" in legacy.json["description"]
    assert count(api, Event) == 1
    assert count(api, Task) == 1


def test_unconfigured_webhooks_are_closed(settings: Settings, make_stack) -> None:
    running = make_stack(settings, worker=False)
    for path in ("/webhook/github", "/webhook/slack", "/webhook/custom"):
        answer = running.client.simulate_post(path, body=b"{}")
        assert answer.status_code == 503, answer.text
        assert "is not set" in answer.json["description"]


def test_a_body_over_the_limit_is_refused_before_it_is_read(secured: Settings, make_stack) -> None:
    running = make_stack(secured.replace(max_body_bytes=64), worker=False)
    body = json.dumps({"padding": "x" * 100}).encode()
    answer = github_post(running, body)
    assert answer.status_code == 413


def test_secrets_are_never_logged_or_returned(api: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body = json.dumps({"ref": "x"}).encode()
    answers = [
        github_post(api, body, delivery="d-1"),
        github_post(api, body, **{"X-Hub-Signature-256": "sha256=00"}),
        slack_post(api, b'{"type": "event_callback", "event_id": "E9", "event": {"type": "x"}}', "application/json"),
    ]
    shown = {name: value for name, value, _ in setting_rows(api.settings)}  # what `interlock config` prints
    for secret in (GITHUB_SECRET, SLACK_SECRET, CUSTOM_SECRET):
        assert secret not in caplog.text
        assert all(secret not in answer.text for answer in answers)
        assert secret not in shown.values()
    assert shown["INTERLOCK_GITHUB_WEBHOOK_SECRET"] == shown["INTERLOCK_WEBHOOK_SECRET"] == "***"
