"""Webhooks over HTTP (Falcon's test client) on RabbitMQ and PostgreSQL: verified, deduplicated, published."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select

from interlock.settings import Settings, setting_rows
from models.events import Event
from models.tasks import Task
from tests.conftest import Stack, start_stack, stop_stack
from tests.support import wait_for_state
from web.signatures import sha256_signature, slack_signature

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
def api(secured: Settings) -> Iterator[Stack]:
    stack = start_stack(secured, worker=False)
    yield stack
    stop_stack(stack)


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
    assert missing.status_code == 401 and "missing" in missing.json["description"]
    wrong = github_post(api, body, **{"X-Hub-Signature-256": sha256_signature("not the secret", body)})
    assert wrong.status_code == 401 and wrong.headers["content-type"].startswith("application/json")
    assert count(api, Event) == 0


def test_signed_push_delivered_twice_is_one_event(api: Stack) -> None:
    body = json.dumps(
        {"ref": "refs/heads/main", "repository": {"full_name": "acme/app"}, "sender": {"login": "octocat"}}
    ).encode()
    first = github_post(api, body, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    assert first.status_code == 202, first.text
    assert first.json["status"] == "accepted" and len(first.json["task_ids"]) == 1
    again = github_post(api, body, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    assert again.status_code == 200, again.text
    assert again.json == {"status": "duplicate", "event_id": first.json["event_id"], "task_ids": []}

    assert count(api, Event, Event.type == "github.push") == 1
    assert count(api, Task, Task.workflow == "agent_on_new_data") == 1
    event = api.client.simulate_get("/events", params={"type": "github.push"}).json["events"][0]
    assert event["source"] == "github"
    assert event["data"]["repository"] == "acme/app" and event["data"]["sender"] == "octocat"


def test_github_ping_form_bodies_and_other_events(api: Stack) -> None:
    ping = github_post(api, json.dumps({"zen": "Keep it simple.", "hook_id": 42}).encode(), event="ping")
    assert ping.status_code == 200 and ping.json["hook_id"] == 42
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
    assert events_api.json["status"] == "accepted" and len(events_api.json["task_ids"]) == 1

    command_body = urlencode(
        {"token": "legacy", "command": "/agent", "text": "status", "user_id": "U2", "trigger_id": "13345224609.738"}
    ).encode()
    command = slack_post(api, command_body, "application/x-www-form-urlencoded")
    assert command.status_code == 202, command.text

    listed = {e["type"]: e for e in api.client.simulate_get("/events").json["events"]}
    assert listed["slack.message"]["data"]["text"] == "hello" and listed["slack.message"]["data"]["user"] == "U1"
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
    assert first.status_code == 202 and retry.status_code == 200
    assert retry.json["status"] == "duplicate" and retry.json["event_id"] == first.json["event_id"]
    assert count(api, Event, Event.type == "slack.app_mention") == 1


def test_slack_event_reaches_the_user_agent(secured: Settings) -> None:
    running = start_stack(secured)
    try:
        body = json.dumps(
            {"type": "event_callback", "event_id": "Ev0004", "event": {"type": "message", "user": "U9"}}
        ).encode()
        answer = slack_post(running, body, "application/json")
        task = wait_for_state(running.runtime.sessions, answer.json["task_ids"][0], "SUCCESS")
        assert task.workflow == "agent_on_user_update"
        assert task.result["user_id"] == "U9" and task.result["acknowledgment"] == "Processed message update"
    finally:
        stop_stack(running)


# -- custom ---------------------------------------------------------------------------------


def test_custom_webhook_publishes_the_event_it_is_given(api: Stack) -> None:
    body = json.dumps(
        {"event_type": "environment_changed", "data": {"change_type": "api_rate_limit_increased", "impact": "high"}}
    ).encode()
    signature = sha256_signature(CUSTOM_SECRET, body)
    answer = api.client.simulate_post(
        "/webhook/custom",
        body=body,
        headers={"X-Interlock-Signature-256": signature, "Content-Type": "application/json"},
    )
    assert answer.status_code == 202, answer.text
    assert answer.json["status"] == "accepted" and len(answer.json["task_ids"]) == 1
    status = api.client.simulate_get(f"/agent/status/{answer.json['task_ids'][0]}").json
    assert status["workflow"] == "agent_on_environment_change"

    unsigned = api.client.simulate_post("/webhook/custom", body=body)
    assert unsigned.status_code == 401
    invalid = json.dumps({"event_type": "two words"}).encode()
    refused = api.client.simulate_post(
        "/webhook/custom", body=invalid, headers={"X-Interlock-Signature-256": sha256_signature(CUSTOM_SECRET, invalid)}
    )
    assert refused.status_code == 400
    nul = json.dumps({"event_type": "environment_changed", "data": {"note": "a\u0000b"}}).encode()
    refused = api.client.simulate_post(
        "/webhook/custom", body=nul, headers={"X-Interlock-Signature-256": sha256_signature(CUSTOM_SECRET, nul)}
    )
    assert refused.status_code == 400 and "NUL" in refused.json["description"]
    assert count(api, Event) == 1


def test_unconfigured_webhooks_are_closed(settings: Settings) -> None:
    running = start_stack(settings, worker=False)
    try:
        for path in ("/webhook/github", "/webhook/slack", "/webhook/custom"):
            answer = running.client.simulate_post(path, body=b"{}")
            assert answer.status_code == 503, answer.text
            assert "is not set" in answer.json["description"]
    finally:
        stop_stack(running)


def test_a_body_over_the_limit_is_refused_before_it_is_read(secured: Settings) -> None:
    running = start_stack(secured.replace(max_body_bytes=64), worker=False)
    try:
        body = json.dumps({"padding": "x" * 100}).encode()
        answer = github_post(running, body)
        assert answer.status_code == 413
    finally:
        stop_stack(running)


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
